"""A table row's method as a value: label method, its source, the loss, a post-hoc recalibration.

Text form (`Method.parse` / `str`) for keys and CSVs: ``label[:source][+loss][/posthoc]``, e.g.
``onehot``, ``similarity:we``, ``confidence:pairs+log_projection``, ``onehot/ts``; `Method.display` is
the paper's name (``WE``, ``LP (conf pairs)``, ``TS``) and `Method.from_display` reads it back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "LABEL_NAMES",
    "LOSS_NAMES",
    "METHOD_ORDER",
    "PAPER_OOD_METHODS",
    "POST_HOC",
    "SIMILARITY_METHODS",
    "SOURCE_NAMES",
    "Method",
]

POST_HOC: dict[str, str] = {"ts": "TS", "ets": "ETS", "dir": "Dir-ODIR"}
# Paper A's row order; anything else follows alphabetically.
METHOD_ORDER: tuple[str, ...] = (
    "One-hot",
    "TS",
    "ETS",
    "Dir-ODIR",
    "Uniform",
    "Mixup",
    "L1",
    "L2",
    "AE",
    "WE",
    "WordNet",
)
LABEL_NAMES: dict[str, str] = {"onehot": "One-hot", "uniform": "Uniform", "mixup": "Mixup"}
SOURCE_NAMES: dict[str, str] = {"l1": "L1", "l2": "L2", "ae": "AE", "we": "WE", "wordnet": "WordNet"}
# Paper B's loss names (Table 1): a trial's `loss` param is part of its method unless it is plain CE.
LOSS_NAMES: dict[str, str] = {"ce": "CE", "projection": "P", "log_projection": "LP", "l1": "L1", "mse": "MSE"}
SIMILARITY_METHODS: tuple[str, ...] = ("L1", "L2", "AE", "WE", "WordNet")
PAPER_OOD_METHODS: tuple[str, ...] = ("One-hot", "Uniform", "Mixup")


@dataclass(frozen=True, order=True)
class Method:
    """A row's method: label method, its similarity/confidence source, the loss, a post-hoc recalibration.

    Text form (`parse` / `str`): ``label[:source][+loss][/posthoc]``, e.g. ``onehot``,
    ``similarity:we``, ``confidence:pairs+log_projection``, ``onehot/ts``. ``loss`` ``ce`` is left out.
    """

    label: str
    source: str | None = None
    loss: str = "ce"
    posthoc: str | None = None

    @classmethod
    def parse(cls, text: str) -> Method:
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"method: expected text like 'similarity:we+ce/ts', got {text!r}")
        rest, _, posthoc = text.strip().partition("/")
        rest, _, loss = rest.partition("+")
        label, _, source = rest.partition(":")
        if not label or (posthoc and posthoc not in POST_HOC):
            raise ValueError(
                f"method: cannot read {text!r}; expected label[:source][+loss][/posthoc] with posthoc one "
                f"of {', '.join(POST_HOC)}"
            )
        return cls(label, source or None, loss or "ce", posthoc or None)

    @classmethod
    def from_run(cls, method_tag: str | None, params: Mapping[str, str]) -> Method:
        """From a trial's ``simlab.method`` tag (`sweeps.space.method_name`) and its ``loss`` param."""
        base = cls.parse(method_tag or params.get("label", "?"))
        return cls(base.label, base.source, params.get("loss", "ce") or "ce")

    def __str__(self) -> str:
        text = self.label + (f":{self.source}" if self.source else "")
        text += f"+{self.loss}" if self.loss != "ce" else ""
        return text + (f"/{self.posthoc}" if self.posthoc else "")

    @property
    def display(self) -> str:
        """``One-hot``, ``TS``, ``WE``, ``LP (conf pairs)``, ``One-hot P`` (paper A / B names)."""
        if self.posthoc:
            return POST_HOC[self.posthoc]
        loss = "" if self.loss == "ce" else LOSS_NAMES.get(self.loss, self.loss)
        if self.label == "confidence":
            return f"{loss or 'CE'} (conf {self.source})"
        if self.label == "similarity":
            name = SOURCE_NAMES.get(self.source or "", self.source or "?")
        else:
            name = LABEL_NAMES.get(self.label, self.label)
        return f"{name} {loss}" if loss else name

    @classmethod
    def from_display(cls, name: str) -> Method:
        """The inverse of `display` for the names it produces (reading a report's CSV)."""
        name = name.strip()
        for key, shown in POST_HOC.items():
            if name == shown:
                return cls("onehot", posthoc=key)
        losses = {v: k for k, v in LOSS_NAMES.items()}
        if name.endswith(")") and " (conf " in name:
            loss, _, source = name[:-1].partition(" (conf ")
            return cls("confidence", source, losses.get(loss, loss))
        base, _, loss = name.partition(" ")
        loss = losses.get(loss, loss) if loss else "ce"
        labels = {v: k for k, v in LABEL_NAMES.items()}
        sources = {v: k for k, v in SOURCE_NAMES.items()}
        if base in labels:
            return cls(labels[base], None, loss)
        if base in sources:
            return cls("similarity", sources[base], loss)
        return cls(base, None, loss)
