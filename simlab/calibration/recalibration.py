"""Post-hoc recalibrators of SPEC §5, fitted on held-out validation logits (long: three recalibrators
behind one contract and one registry, the Dirichlet fit with its cross-validation the largest).

Each recalibrator is ``fit(logits [N, K], labels [N]) -> self`` then ``__call__(logits [N, K]) ->
probs [N, K]``:

- ``TemperatureScaling`` (Guo et al. 2017): ``softmax(z / T)`` with the NLL-optimal ``T``.
- ``EnsembleTemperatureScaling`` (Zhang et al. 2020, "Mix-n-Match"):
  ``w1 softmax(z / T) + w2 softmax(z) + w3 / K`` with ``T`` from temperature scaling and ``w`` on
  the simplex minimising the mean squared error to the one-hot labels, as their reference code does.
- ``DirichletCalibration`` with ODIR (Kull et al. 2019): ``softmax(W log softmax(z) + b)`` with
  off-diagonal and intercept L2 regularisation, its two strengths chosen by k-fold cross-validation.

``RECALIBRATORS`` maps the metric prefix (``ts_``, ``ets_``, ``dir_``) to the class. Fitting runs in
float64 on the logits' device; outputs are float64/float32 as the input (float32 for half inputs).
"""

from __future__ import annotations

import abc
import logging
import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from simlab import _validate
from simlab.calibration.metrics import _as_tensor, check_labels

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------------
def check_logits(logits: object, name: str = "logits", num_classes: int | None = None) -> torch.Tensor:
    """Validate ``logits [N, K]``: 2-D, floating point, finite, ``K >= 2`` (or ``K == num_classes``)."""
    logits = _as_tensor(logits, name)
    if not torch.is_floating_point(logits):
        raise TypeError(f"{name} must be a floating-point tensor of logits, got dtype {logits.dtype}")
    if logits.ndim != 2:
        raise ValueError(f"{name} must be 2-D [N, K], got shape {tuple(logits.shape)}")
    if logits.shape[0] == 0:
        raise ValueError(f"{name} must have at least one row, got shape {tuple(logits.shape)}")
    if num_classes is not None and logits.shape[1] != num_classes:
        raise ValueError(
            f"{name} must have K={num_classes} columns (the classes seen in fit), "
            f"got shape {tuple(logits.shape)}"
        )
    if logits.shape[1] < 2:
        raise ValueError(f"{name} must have at least 2 classes (columns), got shape {tuple(logits.shape)}")
    if not bool(torch.isfinite(logits).all()):
        raise ValueError(f"{name} must be finite, got NaN or inf entries")
    return logits


def _prepare_fit(logits: object, labels: object) -> tuple[torch.Tensor, torch.Tensor]:
    logits = check_logits(logits)
    labels = check_labels(labels, logits.shape[0], logits.shape[1]).to(logits.device)
    return logits.double(), labels


def _out_dtype(dtype: torch.dtype) -> torch.dtype:
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


class _Recalibrator(abc.ABC):
    """Shared plumbing: input checks for ``__call__`` and the not-fitted guard."""

    num_classes: int | None = None

    def _check_call(self, logits: object) -> torch.Tensor:
        if self.num_classes is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit(logits, labels) first")
        return check_logits(logits, num_classes=self.num_classes)

    @abc.abstractmethod
    def fit(self, logits: torch.Tensor, labels: torch.Tensor):
        """Fit on held-out validation logits ``[N, K]`` and labels ``[N]``; returns self."""

    @abc.abstractmethod
    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        """Calibrated probabilities ``[N, K]`` for logits ``[N, K]``."""


# --------------------------------------------------------------------------------------------------
# temperature scaling
# --------------------------------------------------------------------------------------------------
def fit_temperature(
    logits: torch.Tensor, labels: torch.Tensor, *, t_min: float = 1e-2, t_max: float = 1e2
) -> float:
    """NLL-optimal temperature of ``softmax(logits / T)``; ``logits [N, K]`` float64, ``labels [N]``.

    The NLL is convex in ``1/T`` (a log-sum-exp of a linear function minus a linear term), hence
    unimodal in ``log T``: a bounded Brent search on ``log T`` in ``[log t_min, log t_max]`` finds the
    global minimum without the step-size tuning a gradient method needs. A minimum on a bound
    (e.g. a perfectly separable validation set, where ``T -> 0``) is logged as a warning.
    """

    # scipy.optimize is heavy (~0.5 s to import) and only fitting needs it: the metrics and the report,
    # which import this package, do not pay for it.
    import scipy.optimize

    def objective(log_t: float) -> float:
        return F.cross_entropy(logits * math.exp(-log_t), labels).item()

    lo, hi = math.log(t_min), math.log(t_max)
    res = scipy.optimize.minimize_scalar(
        objective, bounds=(lo, hi), method="bounded", options={"xatol": 1e-9}
    )
    log_t = float(res.x)
    if min(log_t - lo, hi - log_t) < 1e-4:
        logger.warning(
            "temperature scaling: optimum at the search bound T=%.4g (range [%g, %g])",
            math.exp(log_t),
            t_min,
            t_max,
        )
    return math.exp(log_t)


class TemperatureScaling(_Recalibrator):
    """``softmax(z / T)`` with the temperature minimising the validation NLL (Guo et al. 2017).

    ``fit(logits [N, K], labels [N])`` sets ``temperature``; ``__call__(logits [N, K]) -> probs [N, K]``.
    """

    def __init__(self, *, t_min: float = 1e-2, t_max: float = 1e2) -> None:
        if not (0 < t_min < t_max):
            raise ValueError(f"t_min and t_max must satisfy 0 < t_min < t_max, got {t_min!r}, {t_max!r}")
        self.t_min, self.t_max = float(t_min), float(t_max)
        self.temperature: float | None = None

    def fit(self, logits: torch.Tensor, labels: torch.Tensor) -> TemperatureScaling:
        z, y = _prepare_fit(logits, labels)
        self.temperature = fit_temperature(z, y, t_min=self.t_min, t_max=self.t_max)
        self.num_classes = z.shape[1]
        logger.info("temperature scaling: T=%.4f", self.temperature)
        return self

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        logits = self._check_call(logits)
        return (logits.double() / self.temperature).softmax(dim=1).to(_out_dtype(logits.dtype))


# --------------------------------------------------------------------------------------------------
# ensemble temperature scaling
# --------------------------------------------------------------------------------------------------
class EnsembleTemperatureScaling(_Recalibrator):
    """Zhang et al. 2020 ETS: ``w1 softmax(z/T) + w2 softmax(z) + w3 / K`` (their eq. for ETS).

    ``T`` is the NLL-optimal temperature; ``weights = (w1, w2, w3)`` lie on the simplex and minimise
    ``mean_{i,k} (p_ik - 1[y_i = k])^2`` of the row-normalised mixture, solved with SLSQP from
    ``(1, 0, 0)`` as their reference ``ensemble_scaling`` does. The MSE is a quadratic form in ``w``,
    so it is evaluated exactly from the 3x3 Gram matrix of the three components.
    """

    def __init__(self, *, t_min: float = 1e-2, t_max: float = 1e2) -> None:
        self._ts = TemperatureScaling(t_min=t_min, t_max=t_max)
        self.temperature: float | None = None
        self.weights: tuple[float, float, float] | None = None

    def _components(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        k = z.shape[1]
        return (z / self.temperature).softmax(dim=1), z.softmax(dim=1), torch.full_like(z, 1.0 / k)

    def fit(self, logits: torch.Tensor, labels: torch.Tensor) -> EnsembleTemperatureScaling:
        z, y = _prepare_fit(logits, labels)
        self._ts.fit(z, y)
        self.temperature = self._ts.temperature
        comps = self._components(z)
        n_entries = z.numel()
        # Gram matrix A_jl = mean(P_j * P_l), b_j = mean(P_j * Y), c = mean(Y^2) over all N*K entries.
        gram = np.array([[float((a * b).sum()) / n_entries for b in comps] for a in comps])
        lin = np.array([float(c.gather(1, y[:, None]).sum()) / n_entries for c in comps])
        const = z.shape[0] / n_entries

        def mse(w: np.ndarray) -> float:
            s = w.sum()  # every component's rows sum to 1, so the mixture's rows sum to s
            return float(w @ gram @ w / s**2 - 2.0 * lin @ w / s + const)

        import scipy.optimize  # heavy, fitting only (see fit_temperature)

        res = scipy.optimize.minimize(
            mse,
            np.array([1.0, 0.0, 0.0]),
            method="SLSQP",
            bounds=[(0.0, 1.0)] * 3,
            constraints={"type": "eq", "fun": lambda w: w.sum() - 1.0},
            tol=1e-12,
        )
        w = np.clip(res.x, 0.0, None)
        w = w / w.sum()
        self.weights = (float(w[0]), float(w[1]), float(w[2]))
        self.num_classes = z.shape[1]
        logger.info("ensemble temperature scaling: T=%.4f weights=%s", self.temperature, self.weights)
        return self

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        logits = self._check_call(logits)
        comps = self._components(logits.double())
        probs = sum(w * c for w, c in zip(self.weights, comps, strict=True))
        return (probs / probs.sum(dim=1, keepdim=True)).to(_out_dtype(logits.dtype))


# --------------------------------------------------------------------------------------------------
# Dirichlet calibration with ODIR
# --------------------------------------------------------------------------------------------------
def _odir_objective(
    log_p: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, lam: float, mu: float
) -> torch.Tensor:
    """Mean NLL of ``softmax(log_p W^T + b)`` + ``lam sum_{i!=j} W_ij^2 / (K(K-1))`` + ``mu sum b^2 / K``."""
    k = weight.shape[0]
    off = weight - torch.diag(torch.diagonal(weight))
    nll = F.cross_entropy(log_p @ weight.T + bias, labels)
    return nll + lam * (off * off).sum() / (k * (k - 1)) + mu * (bias * bias).sum() / k


def fit_dirichlet_odir(
    log_p: torch.Tensor,
    labels: torch.Tensor,
    lam: float,
    mu: float,
    *,
    init: tuple[torch.Tensor, torch.Tensor] | None = None,
    max_iter: int = 200,
    tolerance_grad: float = 1e-7,
    tolerance_change: float = 1e-10,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimise the (convex) ODIR objective by full-batch L-BFGS; ``log_p [N, K]`` float64.

    Starts from the identity map (``W = I, b = 0``: the uncalibrated model) unless ``init = (W, b)``
    is given. Returns ``(W [K, K], b [K])``.

    Why whitening: log-probabilities of a confident model span tens of nats and are strongly
    correlated across classes, which makes the problem ill-conditioned (plain L-BFGS needs many
    hundreds of iterations). We optimise over ``V = W C^{1/2}``, ``c = W m + b`` with whitened
    features ``(log_p - m) C^{-1/2}`` (``m``, ``C``: feature mean and covariance); this is the same
    objective (the regulariser is evaluated on ``W = V C^{-1/2}``, ``b = c - W m``), only better
    conditioned, and converges in tens of iterations.
    """
    n, k = log_p.shape
    eye = torch.eye(k, dtype=log_p.dtype, device=log_p.device)
    mean = log_p.mean(dim=0)
    centred = log_p - mean
    cov = centred.T @ centred / n
    # A tiny ridge keeps C invertible for rank-deficient log-probabilities (e.g. duplicated rows).
    cov = cov + (1e-10 * cov.diagonal().mean().clamp_min(1e-300)) * eye
    evals, evecs = torch.linalg.eigh(cov)
    evals = evals.clamp_min(evals.max() * 1e-12)
    white = evecs @ torch.diag(evals.rsqrt()) @ evecs.T  # C^{-1/2}
    unwhite = evecs @ torch.diag(evals.sqrt()) @ evecs.T  # C^{1/2}
    features = centred @ white
    w0, b0 = (eye, torch.zeros_like(mean)) if init is None else (init[0].to(log_p), init[1].to(log_p))
    v = (w0 @ unwhite).clone().requires_grad_(True)
    c = (w0 @ mean + b0).clone().requires_grad_(True)
    opt = torch.optim.LBFGS(
        [v, c],
        lr=1.0,
        max_iter=max_iter,
        tolerance_grad=tolerance_grad,
        tolerance_change=tolerance_change,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        weight = v @ white
        bias = c - weight @ mean
        off = weight - torch.diag(torch.diagonal(weight))
        loss = (
            F.cross_entropy(features @ v.T + c, labels)
            + lam * (off * off).sum() / (k * (k - 1))
            + mu * (bias * bias).sum() / k
        )
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        weight = v @ white
        return weight, c - weight @ mean


def _fold_ids(n: int, n_folds: int, seed: int, device: torch.device) -> torch.Tensor:
    """Fold index ``[N]`` per sample: a seeded random permutation cut into ``n_folds`` near-equal parts."""
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=g)
    ids = torch.empty(n, dtype=torch.long)
    ids[perm] = torch.arange(n) % n_folds
    return ids.to(device)


class DirichletCalibration(_Recalibrator):
    """Dirichlet calibration with ODIR regularisation (Kull et al. 2019).

    ``q = softmax(W log softmax(z) + b)``: a linear layer on the log-probabilities, ``W [K, K]``,
    ``b [K]``, fitted by minimising the mean validation NLL plus
    ``lam * sum_{i != j} W_ij^2 / (K(K-1)) + mu * sum_j b_j^2 / K`` (off-diagonal and intercept
    regularisation: the diagonal is free, so ``W = cI`` recovers temperature scaling on log-probs).
    The objective is convex and solved by full-batch L-BFGS in float64 from ``W = I, b = 0``.

    ``(lam, mu)`` is chosen from the grid ``lambdas x mus`` by ``n_folds``-fold cross-validation on
    the calibration set: folds are a ``seed``-ed random split; the pair with the lowest held-out NLL
    summed over the folds wins (ties go to the stronger regularisation), then ``W, b`` are refitted
    on the whole set. The default grid is small on purpose: 8 pairs x 3 folds = 24 warm-started fits
    of ``K^2 + K`` parameters (at most ``cv_max_iter`` L-BFGS iterations each, ``max_iter`` for the
    final refit); pass one-element grids to fix ``lam`` and ``mu`` and skip the cross-validation.
    When the best pair has the grid's largest ``lam``, the grid grows by x10 steps (up to
    ``max_lambda``) until it does not: with many classes and few samples per class (Tiny-ImageNet's
    200 classes, 20 validation images each) the ``K^2`` weights overfit at every default ``lam``.
    Chosen values: ``lam``, ``mu``; mean held-out NLL per pair: ``cv_scores``.
    """

    def __init__(
        self,
        *,
        lambdas: Sequence[float] = (1e-3, 1e-2, 1e-1, 1.0),
        mus: Sequence[float] = (1e-3, 1e-1),
        n_folds: int = 3,
        seed: int = 0,
        max_iter: int = 200,
        cv_max_iter: int = 100,
        max_lambda: float = 1e6,
    ) -> None:
        if not (isinstance(max_lambda, (int, float)) and math.isfinite(max_lambda) and max_lambda > 0):
            raise ValueError(f"max_lambda must be a finite number > 0, got {max_lambda!r}")
        for name, grid in (("lambdas", lambdas), ("mus", mus)):
            if len(grid) == 0 or not all(isinstance(v, (int, float)) and v >= 0 for v in grid):
                raise ValueError(f"{name} must be a non-empty sequence of numbers >= 0, got {grid!r}")
        n_folds = _validate.check_num_classes("n_folds", n_folds, minimum=2)
        max_iter = _validate.check_num_classes("max_iter", max_iter)
        cv_max_iter = _validate.check_num_classes("cv_max_iter", cv_max_iter)
        self.lambdas = tuple(float(v) for v in lambdas)
        self.mus = tuple(float(v) for v in mus)
        self.n_folds, self.seed = n_folds, int(seed)
        self.max_iter, self.cv_max_iter = max_iter, cv_max_iter
        self.max_lambda = float(max_lambda)
        self.lam: float | None = None
        self.mu: float | None = None
        self.weight: torch.Tensor | None = None
        self.bias: torch.Tensor | None = None
        self.cv_scores: dict[tuple[float, float], float] = {}

    def fit(self, logits: torch.Tensor, labels: torch.Tensor) -> DirichletCalibration:
        z, y = _prepare_fit(logits, labels)
        log_p = z.log_softmax(dim=1)
        grid = [(lam, mu) for lam in self.lambdas for mu in self.mus]
        if len(grid) == 1:
            self.lam, self.mu = grid[0]
        else:
            if z.shape[0] < self.n_folds:
                raise ValueError(
                    f"logits must have at least n_folds={self.n_folds} rows for cross-validation, "
                    f"got {z.shape[0]}"
                )
            folds = _fold_ids(z.shape[0], self.n_folds, self.seed, z.device)
            self.cv_scores = self._cv_scores(log_p, y, folds, grid)
            best = min(sorted(grid, reverse=True), key=lambda key: self.cv_scores[key])
            # An optimum at the grid's largest lambda means the grid stopped too early (many classes,
            # few samples each: K^2 weights overfit): extend it x10 at a time while that holds.
            top = max(self.lambdas)
            while len(self.lambdas) > 1 and best[0] == top > 0 and top * 10 <= self.max_lambda:
                top *= 10
                more = [(top, mu) for mu in self.mus]
                self.cv_scores.update(self._cv_scores(log_p, y, folds, more))
                grid += more
                best = min(sorted(grid, reverse=True), key=lambda key: self.cv_scores[key])
            self.lam, self.mu = best
        self.weight, self.bias = fit_dirichlet_odir(log_p, y, self.lam, self.mu, max_iter=self.max_iter)
        self.num_classes = z.shape[1]
        logger.info("Dirichlet ODIR: lambda=%g mu=%g (cv NLL %s)", self.lam, self.mu, self.cv_scores)
        return self

    def _cv_scores(
        self, log_p: torch.Tensor, y: torch.Tensor, folds: torch.Tensor, grid: Sequence[tuple[float, float]]
    ) -> dict[tuple[float, float], float]:
        """Mean held-out NLL of each ``(lam, mu)`` over the folds."""
        scores = dict.fromkeys(grid, 0.0)
        for f in range(self.n_folds):
            train, held = folds != f, folds == f
            init = None
            # Strongest regularisation first; each fit warm-starts the next (same convex problems).
            for lam, mu in sorted(grid, reverse=True):
                # Ranking the pairs needs less precision than the final fit: looser gradient tolerance.
                init = fit_dirichlet_odir(
                    log_p[train], y[train], lam, mu, init=init, max_iter=self.cv_max_iter, tolerance_grad=1e-5
                )
                w, b = init
                scores[(lam, mu)] += F.cross_entropy(log_p[held] @ w.T + b, y[held], reduction="sum").item()
        return {key: total / log_p.shape[0] for key, total in scores.items()}

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        logits = self._check_call(logits)
        log_p = logits.double().log_softmax(dim=1)
        w, b = self.weight.to(logits.device), self.bias.to(logits.device)
        return (log_p @ w.T + b).softmax(dim=1).to(_out_dtype(logits.dtype))


RECALIBRATORS: dict[str, type[_Recalibrator]] = {
    "ts": TemperatureScaling,
    "ets": EnsembleTemperatureScaling,
    "dir": DirichletCalibration,
}
