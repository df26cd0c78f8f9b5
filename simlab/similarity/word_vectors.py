"""Word-embedding class distances (paper A §5.3, eq. 16): ``D[k, j] = ||V(w_k) - V(w_j)||_2``.

``V`` is a word-vector model: a gensim ``KeyedVectors`` or a file in word2vec text format (first line
``count dim``), word2vec binary format, or GloVe text format (no header line); the format is detected
from the file's first bytes, and ``.gz`` files are read through gzip.

Class names are turned into words as follows (first rule that applies):

1. ``mapping[name]`` when the caller's ``mapping`` has the name (a word, a phrase, or a list of words);
2. the name itself when the vocabulary has it (e.g. ``aquarium_fish`` in the CIFAR-100 GloVe file);
3. `DEFAULT_MAPPING` (e.g. ``automobile`` → ``car``, which common CIFAR-10 vector files key it as);
4. the name split at ``_``, ``-`` and spaces (``maple tree`` → ``maple``, ``tree``).

A class of several words uses the mean of its words' vectors (paper A: "a class defined by a set of
words"). Each word is looked up as written, then lower-cased. Every word the vocabulary lacks is
reported at once in one `MissingWordsError` (a `KeyError`).
"""

from __future__ import annotations

import gzip
import logging
import os
import re
from collections.abc import Container, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # torch is imported where a tensor is made, so a vocabulary check stays light
    import torch

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_MAPPING",
    "MissingWordsError",
    "check_vocabulary",
    "detect_format",
    "load_vectors",
    "load_vocabulary",
    "word_vector_distances",
]

# Class names whose usual word is not the name itself; used only when the vocabulary lacks the name.
DEFAULT_MAPPING: dict[str, str | list[str]] = {
    "automobile": "car",
}

_SPLIT = re.compile(r"[_\s\-]+")


class MissingWordsError(KeyError):
    """Words absent from the vocabulary; ``missing`` maps each word to the classes that needed it."""

    def __init__(self, missing: Mapping[str, Sequence[str]], source: str) -> None:
        self.missing = {w: list(c) for w, c in missing.items()}
        listed = ", ".join(
            f"{w!r} (class {', '.join(repr(c) for c in cs)})" for w, cs in self.missing.items()
        )
        self.message = (
            f"{len(self.missing)} word(s) missing from the vocabulary of {source}: {listed}. Pass "
            "mapping={class_name: word or [words]} for names the vocabulary spells differently."
        )
        super().__init__(self.message)

    def __str__(self) -> str:  # KeyError would repr() the message
        return self.message


def detect_format(path: str | os.PathLike[str]) -> str:
    """``"word2vec_text"``, ``"word2vec_binary"`` or ``"glove"`` (text, no header), from the first bytes."""
    path = os.fspath(path)
    opener = gzip.open if _is_gzip(path) else open
    with opener(path, "rb") as fh:
        head = fh.read(1 << 16)
    if not head.strip():
        raise ValueError(f"vectors: {path!r} is empty")
    first, _, rest = head.partition(b"\n")
    tokens = first.split()
    if len(tokens) == 2 and all(t.isdigit() for t in tokens):
        dim = int(tokens[1])
        # Text format: the next line is `word f1 ... f_dim`; binary: `word ` then 4*dim raw bytes.
        line = rest.split(b"\n", 1)[0].split()
        if len(line) >= 2 and all(_is_float(t) for t in line[1:]):
            if len(line) != dim + 1:  # a text record, but not the header's length
                raise ValueError(
                    f"vectors: {path!r}: the header says {dim} dimensions, but word "
                    f"{line[0].decode('utf8', 'replace')!r} (line 2) has {len(line) - 1} values"
                )
            return "word2vec_text"
        return "word2vec_binary"
    if len(tokens) >= 2 and all(_is_float(t) for t in tokens[1:]):
        return "glove"
    raise ValueError(
        f"vectors: cannot recognise {path!r} as word2vec (header 'count dim') or GloVe ('word f1 f2 ...'); "
        f"its first line starts {first[:60]!r}"
    )


def load_vectors(vectors: Any):
    """A gensim ``KeyedVectors`` from a ``KeyedVectors`` (returned as is) or a path (format detected)."""
    from gensim.models import KeyedVectors  # lazy: importing gensim alone takes ~1.3 s here

    if isinstance(vectors, KeyedVectors):
        return vectors
    path = _check_path(vectors)
    fmt = detect_format(path)
    logger.info("loading %s word vectors from %s", fmt, path)
    try:
        return KeyedVectors.load_word2vec_format(
            path, binary=fmt == "word2vec_binary", no_header=fmt == "glove", datatype=np.float32
        )
    except (EOFError, ValueError, UnicodeDecodeError, IndexError) as err:  # gensim names neither
        raise ValueError(
            f"vectors: cannot read {fmt} file {path!r} (wrong header or damaged): {err}"
        ) from err


def word_vector_distances(
    class_names: Sequence[str],
    vectors: Any,
    *,
    mapping: Mapping[str, str | Sequence[str]] | None = None,
    info: dict[str, Any] | None = None,
) -> torch.Tensor:
    """Paper A eq. 16: float64 ``[K, K]`` Euclidean distances between the classes' word vectors.

    Args:
        class_names: K class names in label order.
        vectors: a gensim ``KeyedVectors`` or a path to a word2vec text/binary or GloVe text file.
        mapping: class name → word, phrase or list of words, for names the vocabulary spells differently
            (overrides every other rule; see the module docstring).
        info: if a dict, receives ``words`` (the words used per class).

    Raises:
        MissingWordsError: listing every word the vocabulary lacks (a KeyError).
    """
    _check_names_and_mapping(class_names, mapping)
    kv = load_vectors(vectors)
    source = os.fspath(vectors) if isinstance(vectors, (str, os.PathLike)) else "the given KeyedVectors"
    words_per_class = _resolve_words(class_names, kv.key_to_index, mapping or {}, source)

    bad = sorted({w for ws in words_per_class for w in ws if not np.isfinite(kv[w]).all()})
    if bad:
        raise ValueError(
            f"vectors: non-finite values in the vector of word(s) {', '.join(map(repr, bad))} in {source}"
        )
    # A class of several words is the mean of its words' vectors (paper A §5.3, last sentence).
    emb = np.stack([np.mean([kv[w].astype(np.float64) for w in ws], axis=0) for ws in words_per_class])
    k = emb.shape[0]
    dist = np.empty((k, k), dtype=np.float64)
    for i in range(k):  # row by row: O(K * dim) memory even for ImageNet's K = 1000
        dist[i] = np.sqrt(((emb - emb[i]) ** 2).sum(axis=1))
    if info is not None:
        info["words"] = dict(zip(class_names, words_per_class, strict=True))
        info["dim"] = int(emb.shape[1])
    import torch  # here, not at the top: the vocabulary check stays torch-free

    return torch.from_numpy(dist)


def load_vocabulary(vectors: Any) -> Container[str]:
    """The words of a vector file without loading the vectors (text formats: first token per line).

    ``vectors`` as in `word_vector_distances`. Binary files are loaded with gensim (their records
    have no line structure to skim).
    """
    if not isinstance(vectors, (str, os.PathLike)):
        from gensim.models import KeyedVectors  # lazy: importing gensim alone takes ~1.3 s here

        if isinstance(vectors, KeyedVectors):
            return vectors.key_to_index
    path = _check_path(vectors)
    fmt = detect_format(path)
    if fmt == "word2vec_binary":
        return load_vectors(path).key_to_index
    opener = gzip.open if _is_gzip(path) else open
    words: set[str] = set()
    with opener(path, "rb") as fh:
        if fmt == "word2vec_text":
            fh.readline()  # the `count dim` header
        for line in fh:
            # gensim splits text records on single spaces, so the word is the first such field
            word = line.split(b" ", 1)[0].strip()
            if word:
                words.add(word.decode("utf8"))
    return words


def check_vocabulary(
    class_names: Sequence[str],
    vectors: Any,
    *,
    mapping: Mapping[str, str | Sequence[str]] | None = None,
) -> dict[str, list[str]]:
    """The words each class resolves to (rules of the module docstring), without loading vectors.

    For checking a configuration before expensive work (a sweep validates its ``we`` source this way).

    Raises:
        MissingWordsError: listing every word the vocabulary lacks, exactly as `word_vector_distances`.
    """
    _check_names_and_mapping(class_names, mapping)
    source = os.fspath(vectors) if isinstance(vectors, (str, os.PathLike)) else "the given KeyedVectors"
    words = _resolve_words(class_names, load_vocabulary(vectors), mapping or {}, source)
    return dict(zip(class_names, words, strict=True))


# ---------------------------------------------------------------------------------------------


def _check_names_and_mapping(class_names: Any, mapping: Any) -> None:
    if isinstance(class_names, str) or not isinstance(class_names, Sequence):
        raise TypeError(f"class_names: expected a sequence of str, got {type(class_names).__name__}")
    if len(class_names) < 1 or not all(isinstance(n, str) and n for n in class_names):
        raise ValueError(f"class_names: expected non-empty class name strings, got {list(class_names)!r}")
    if mapping is not None:
        if not isinstance(mapping, Mapping):
            raise TypeError(
                f"mapping: expected a dict of class name -> word(s), got {type(mapping).__name__}"
            )
        bad = [k for k, v in mapping.items() if not _is_words(v)]
        if bad:
            raise ValueError(f"mapping: values must be a word or a list of words; bad entries for {bad}")


def _check_path(vectors: Any) -> str:
    if not isinstance(vectors, (str, os.PathLike)):
        raise TypeError(
            "vectors: expected a gensim KeyedVectors or a path to a word2vec/GloVe file, "
            f"got {type(vectors).__name__}"
        )
    path = os.fspath(vectors)
    if not os.path.isfile(path):
        raise ValueError(f"vectors: expected an existing word-vector file, got {path!r}")
    return path


def _resolve_words(
    class_names: Sequence[str], vocab: Container[str], mapping: Mapping[str, Any], source: str
) -> list[list[str]]:
    """Per class, the vocabulary words it uses; every missing word at once in a MissingWordsError."""
    words_per_class: list[list[str]] = []
    missing: dict[str, list[str]] = {}
    for name in class_names:
        words = []
        for word in _class_words(name, vocab, mapping):
            found = _lookup(word, vocab)
            if found is None:
                missing.setdefault(word, []).append(name)
            words.append(found or word)
        words_per_class.append(words)
    if missing:
        raise MissingWordsError(missing, source)
    return words_per_class


def _class_words(name: str, vocab: Container[str], mapping: Mapping[str, str | Sequence[str]]) -> list[str]:
    if name in mapping:
        spec = mapping[name]
    elif _lookup(name, vocab) is not None:
        return [name]
    else:
        spec = DEFAULT_MAPPING.get(name, name)
    if isinstance(spec, str):
        if _lookup(spec, vocab) is not None:
            return [spec]
        return [w for w in _SPLIT.split(spec) if w]
    return list(spec)


def _lookup(word: str, vocab: Container[str]) -> str | None:
    for candidate in (word, word.lower()):
        if candidate in vocab:
            return candidate
    return None


def _is_words(value: Any) -> bool:
    if isinstance(value, str):
        return bool(value.strip())
    return (
        isinstance(value, Sequence)
        and len(value) > 0
        and all(isinstance(w, str) and w.strip() for w in value)
    )


def _is_float(token: bytes) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _is_gzip(path: str) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == b"\x1f\x8b"
