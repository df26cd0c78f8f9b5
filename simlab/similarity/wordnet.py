"""WordNet class distances (beyond the papers): ``D[k, j] = 1 - WuPalmer(synset_k, synset_j)``.

Wu & Palmer (1994): ``sim(a, b) = 2 d(c) / (len(a, c) + len(b, c) + 2 d(c))`` with ``c`` the lowest
common subsumer (hypernym) of ``a`` and ``b``, ``d(c)`` its depth counted in nodes from the root
(root = 1) and ``len(x, c)`` the number of edges between ``x`` and ``c``. Conventions follow NLTK's
``Synset.wup_similarity`` (which the tests compare against): ``c`` is the common hypernym of greatest
*minimum* depth (ties broken by synset name), ``d(c)`` is its *maximum* depth + 1, ``len(x, c)`` is
the shortest path through any shared ancestor (NLTK's ``shortest_path_distance``), and instance
hypernyms count as hypernyms. Computed here from one upward breadth-first search per class,
so a 100-class matrix costs 100 searches instead of 4,950 pairwise NLTK calls.

The WordNet 3.0 database is read with NLTK's ``WordNetCorpusReader`` from (first found) the ``root``
argument, ``$SIMLAB_WORDNET_DIR``, Debian's ``wordnet-base`` (``/usr/share/wordnet``; installed by
``scripts/system_deps.sh``) or NLTK's own data (``nltk.download('wordnet')``, done by the user); nothing is
downloaded at run time. Debian's package omits the ``lexnames`` file NLTK's reader opens first; its
fixed WordNet 3.0 contents (lexnames(5WN)) are supplied here.

Class synsets: `CIFAR10_WNIDS` and `CIFAR100_WNIDS` (noun synset ids ``n########`` in label order) are
from the public repository alvinwan/neural-backed-decision-trees (MIT licence, Copyright (c) 2020 Alvin
Wan), files ``nbdt/wnids/CIFAR10.txt`` and ``CIFAR100.txt`` (two wrong CIFAR-100 senses corrected:
``dolphin`` and ``skunk``, see `_CIFAR100_WNID_FIXES`); class names that are all WordNet ids (Tiny-ImageNet's
wnids) are used as the ids; other datasets pass ``wnids``.
"""

from __future__ import annotations

import functools
import io
import logging
import os
import re
import warnings
from collections import deque
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from simlab.class_names import CIFAR10_CLASSES, CIFAR100_CLASSES

logger = logging.getLogger(__name__)

__all__ = [
    "CIFAR100_WNIDS",
    "CIFAR10_WNIDS",
    "find_wordnet",
    "load_wordnet",
    "wordnet_distances",
    "wup_similarity_matrix",
]

# fmt: off
# alvinwan/neural-backed-decision-trees (MIT licence), nbdt/wnids/CIFAR10.txt, in label order.
CIFAR10_WNIDS: tuple[str, ...] = (
    "n02691156", "n02958343", "n01503061", "n02121620", "n02430045", "n02084071", "n01639765", "n02374451",
    "n04194289", "n04490091",
)
# alvinwan/neural-backed-decision-trees (MIT licence), nbdt/wnids/CIFAR100.txt, in label order, with the
# two wrong senses of `_CIFAR100_WNID_FIXES` corrected below.
_NBDT_CIFAR100_WNIDS: tuple[str, ...] = (
    "n07739125", "n02512752", "n09827683", "n02131653", "n02363005", "n02818832", "n02206856", "n02164464",
    "n02834778", "n02876657", "n02881193", "n10285313", "n02898711", "n02924116", "n02274259", "n02437136",
    "n02946921", "n02980441", "n02309337", "n02402425", "n03001627", "n02481823", "n03046257", "n11439690",
    "n02233338", "n04256520", "n01976957", "n01697178", "n03147509", "n01699831", "n02581957", "n02503517",
    "n02657368", "n08438533", "n02118333", "n10129825", "n02342885", "n03544360", "n01877134", "n03614007",
    "n03636248", "n03649909", "n02128385", "n02129165", "n01674464", "n01982650", "n10287213", "n12752205",
    "n03790512", "n09359803", "n02330245", "n13001041", "n12268246", "n07747607", "n12041446", "n02444819",
    "n12582231", "n07767847", "n03930630", "n11608250", "n09393605", "n03959485", "n11900569", "n02346627",
    "n01874928", "n02324045", "n02508021", "n01495701", "n04096066", "n04099429", "n12620196", "n09426788",
    "n02076196", "n01482330", "n01891633", "n07476495", "n04233124", "n01944390", "n01726692", "n01772222",
    "n02355227", "n04335435", "n11978233", "n12901264", "n04379243", "n04389033", "n04401088", "n06277280",
    "n02129604", "n04465501", "n04468005", "n07794452", "n12454159", "n01662784", "n04550184", "n02062744",
    "n12724942", "n02114100", "n10787470", "n01922303",
)

# The NBDT list took the first WordNet sense of two names, which is not the CIFAR-100 class; left in,
# 'skunk' is nearest to 'forest' and 'sea' (a sports shutout) and 'dolphin' is a fish, not an aquatic mammal.
_CIFAR100_WNID_FIXES: dict[str, tuple[str, str]] = {
    "dolphin": ("n02581957", "n02068974"),  # dolphinfish.n.02 -> dolphin.n.02 (small toothed whale)
    "skunk": ("n07476495", "n02445715"),  # shutout.n.01 -> skunk.n.04 (the mammal)
}
# fmt: on
CIFAR100_WNIDS: tuple[str, ...] = tuple(
    _CIFAR100_WNID_FIXES[name][1] if name in _CIFAR100_WNID_FIXES else wnid
    for name, wnid in zip(CIFAR100_CLASSES, _NBDT_CIFAR100_WNIDS, strict=True)
)

_KNOWN_WNIDS: dict[tuple[str, ...], tuple[str, ...]] = {
    CIFAR10_CLASSES: CIFAR10_WNIDS,
    CIFAR100_CLASSES: CIFAR100_WNIDS,
}

_WNID = re.compile(r"^([nvasr])(\d{8})$")

# WordNet 3.0 lexicographer files (lexnames(5WN)); Debian's wordnet-base does not ship this file.
_LEXNAMES = """\
00 adj.all 3
01 adj.pert 3
02 adv.all 4
03 noun.Tops 1
04 noun.act 1
05 noun.animal 1
06 noun.artifact 1
07 noun.attribute 1
08 noun.body 1
09 noun.cognition 1
10 noun.communication 1
11 noun.event 1
12 noun.feeling 1
13 noun.food 1
14 noun.group 1
15 noun.location 1
16 noun.motive 1
17 noun.object 1
18 noun.person 1
19 noun.phenomenon 1
20 noun.plant 1
21 noun.possession 1
22 noun.process 1
23 noun.quantity 1
24 noun.relation 1
25 noun.shape 1
26 noun.state 1
27 noun.substance 1
28 noun.time 1
29 verb.body 2
30 verb.change 2
31 verb.cognition 2
32 verb.communication 2
33 verb.competition 2
34 verb.consumption 2
35 verb.contact 2
36 verb.creation 2
37 verb.emotion 2
38 verb.motion 2
39 verb.perception 2
40 verb.possession 2
41 verb.social 2
42 verb.stative 2
43 verb.weather 2
44 adj.ppl 3
"""


def find_wordnet(root: str | os.PathLike[str] | None = None) -> Any | None:
    """The WordNet database location (a directory path or an NLTK path pointer), or None if absent.

    ``root`` given: it must hold ``index.noun`` and ``data.noun`` (else None). Otherwise the first of
    ``$SIMLAB_WORDNET_DIR``, ``/usr/share/wordnet`` and NLTK's ``corpora/wordnet`` that exists.
    """
    candidates = (
        [os.fspath(root)]
        if root is not None
        else [
            os.environ.get("SIMLAB_WORDNET_DIR", ""),
            "/usr/share/wordnet",
        ]
    )
    for path in candidates:
        if path and all(os.path.isfile(os.path.join(path, f)) for f in ("index.noun", "data.noun")):
            return path
    if root is not None:
        return None
    try:
        import nltk.data  # NLTK loads only when WordNet is used

        return nltk.data.find("corpora/wordnet")
    except LookupError:
        return None


def load_wordnet(root: str | os.PathLike[str] | None = None):
    """An NLTK ``WordNetCorpusReader`` over the database `find_wordnet` locates (cached per location)."""
    location = find_wordnet(root)
    if location is None:
        where = (
            repr(os.fspath(root))
            if root is not None
            else "$SIMLAB_WORDNET_DIR, /usr/share/wordnet or NLTK data"
        )
        raise FileNotFoundError(
            f"root: no WordNet 3.0 database found in {where}; run scripts/system_deps.sh (Debian's "
            "wordnet-base) or nltk.download('wordnet')"
        )
    return _reader(location)


@functools.lru_cache(maxsize=4)
def _reader(location: Any):
    from nltk.corpus.reader.wordnet import WordNetCorpusReader  # NLTK loads only when WordNet is used

    class _Reader(WordNetCorpusReader):
        def open(self, fileid):  # noqa: A003 - NLTK's method name
            if fileid == "lexnames":
                try:
                    return super().open(fileid)
                except OSError:
                    return io.StringIO(_LEXNAMES)
            return super().open(fileid)

        def map_wn(self, version="wordnet"):
            # Only maps Open Multilingual WordNet offsets; it would look for NLTK's downloadable
            # 'wordnet' corpus. We read English WordNet 3.0 only.
            return None

    if isinstance(location, str):
        import nltk.data  # NLTK loads only when WordNet is used

        # NLTK >= 3.9 only opens corpora under nltk.data.path (its path sandbox); the documented way to
        # authorise a system data folder such as /usr/share/wordnet is to add it there.
        real = os.path.realpath(location)
        if real not in nltk.data.path:
            nltk.data.path.append(real)
        location = real
    with warnings.catch_warnings():
        # "The multilingual functions are not available": we use English WordNet only.
        warnings.simplefilter("ignore", UserWarning)
        reader = _Reader(location, None)
    logger.info("WordNet %s loaded from %s", reader.get_version(), location)
    return reader


def synset_of(wnid: str, reader: Any):
    """The synset of a WordNet id such as ``n02121620`` (pos letter + 8-digit offset)."""
    m = _WNID.match(wnid) if isinstance(wnid, str) else None
    if m is None:
        raise ValueError(f"wnids: expected ids like 'n02121620' (pos letter + 8 digits), got {wnid!r}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # NLTK warns, then returns None, for unknown offsets
        try:
            synset = reader.synset_from_pos_and_offset(m.group(1), int(m.group(2)))
        except Exception as err:  # older NLTK raises WordNetError / ValueError instead
            raise ValueError(f"wnids: {wnid!r} is not a synset of this WordNet database ({err})") from err
    if synset is None:
        raise ValueError(f"wnids: {wnid!r} is not a synset of this WordNet database")
    return synset


def wup_similarity_matrix(synsets: Sequence[Any]) -> np.ndarray:
    """float64 ``[K, K]`` Wu-Palmer similarities of K synsets (module docstring for the conventions).

    Symmetric, diagonal 1 (a synset is its own subsumer). Equals NLTK's ``a.wup_similarity(b)`` or
    ``b.wup_similarity(a)``: NLTK is asymmetric when one synset is a tied subsumer of the other (it
    prefers ``self``; we prefer that synset in both orders), and its ``wup_similarity(s, s)`` can be below
    1 for synsets with several hypernym paths (its minimum-depth subsumer rule).
    """
    ups = [_up_distances(s) for s in synsets]
    k = len(synsets)
    sim = np.ones((k, k), dtype=np.float64)
    for a in range(k):
        for b in range(a + 1, k):
            common = ups[a].keys() & ups[b].keys()
            if not common:
                sim[a, b] = sim[b, a] = 0.0  # different roots (never for WordNet 3.0 nouns)
                continue
            best = max(_min_depth(c) for c in common)
            tied = [c for c in common if _min_depth(c) == best]
            # NLTK prefers `self` when it is a tied subsumer, which makes its wup asymmetric when one
            # synset is a hypernym of the other (girl/woman); we prefer either synset, symmetrically.
            own = [s for s in (synsets[a], synsets[b]) if s in tied]
            lcs = own[0] if own else min(tied, key=lambda c: c.name())
            depth = _max_depth(lcs) + 1  # nodes from the root, root = 1
            len_a, len_b = _path_length(ups[a], lcs), _path_length(ups[b], lcs)
            sim[a, b] = sim[b, a] = 2.0 * depth / (len_a + len_b + 2.0 * depth)
    return sim


def wordnet_distances(
    class_names: Sequence[str],
    *,
    wnids: str | os.PathLike[str] | Sequence[str] | None = None,
    root: str | os.PathLike[str] | None = None,
    info: dict[str, Any] | None = None,
) -> torch.Tensor:
    """float64 ``[K, K]``: ``1 - WuPalmer`` between the classes' WordNet synsets (0 on the diagonal).

    Args:
        class_names: K class names in label order (CIFAR-10/100 names get their synsets built in;
            names that are all WordNet ids, as Tiny-ImageNet's wnids, are their own synset ids).
        wnids: K synset ids (``n02121620``) in label order, or a path to a file of one id per line.
        root: the WordNet database folder (default: see `find_wordnet`).
        info: if a dict, receives ``synsets`` (the synset name per class) and ``wordnet_version``.
    """
    if isinstance(class_names, str) or not isinstance(class_names, Sequence):
        raise TypeError(f"class_names: expected a sequence of str, got {type(class_names).__name__}")
    names = tuple(class_names)
    ids = _resolve_wnids(names, wnids)
    reader = load_wordnet(root)
    synsets = [synset_of(w, reader) for w in ids]
    dist = 1.0 - wup_similarity_matrix(synsets)
    np.fill_diagonal(dist, 0.0)
    if info is not None:
        info["synsets"] = dict(zip(names, (s.name() for s in synsets), strict=True))
        info["wordnet_version"] = reader.get_version()
    return torch.from_numpy(dist)


# ---------------------------------------------------------------------------------------------


def _resolve_wnids(names: tuple[str, ...], wnids: Any) -> list[str]:
    if wnids is None:
        if names in _KNOWN_WNIDS:
            return list(_KNOWN_WNIDS[names])
        if names and all(isinstance(n, str) and _WNID.match(n) for n in names):
            return list(names)  # the class names are WordNet ids already (Tiny-ImageNet's wnids)
        raise ValueError(
            "wnids: needed for classes other than CIFAR-10/100 or WordNet ids (a list of K ids like "
            f"'n02121620' or a file of one per line); got None for classes {list(names)[:5]}..."
        )
    if isinstance(wnids, (str, os.PathLike)):
        path = os.fspath(wnids)
        if not os.path.isfile(path):
            raise ValueError(f"wnids: expected a list of ids or an existing file of ids, got {path!r}")
        with open(path) as fh:
            wnids = [line.strip() for line in fh if line.strip()]
    if not isinstance(wnids, Sequence) or not all(isinstance(w, str) for w in wnids):
        raise TypeError(f"wnids: expected a list of str ids, got {type(wnids).__name__}")
    if len(wnids) != len(names):
        raise ValueError(f"wnids: expected {len(names)} ids (one per class), got {len(wnids)}")
    return list(wnids)


def _up_distances(synset: Any) -> dict[Any, int]:
    """Fewest hypernym edges from ``synset`` up to each of its ancestors (itself at 0)."""
    dist = {synset: 0}
    queue = deque([synset])
    while queue:
        s = queue.popleft()
        for h in _parents(s):
            if h not in dist:
                dist[h] = dist[s] + 1
                queue.append(h)
    return dist


def _path_length(up: dict[Any, int], lcs: Any) -> int:
    """Edges on the shortest path from a synset (its `_up_distances` ``up``) to its ancestor ``lcs``.

    As NLTK's ``shortest_path_distance``: the path may climb above ``lcs`` to a shared ancestor and come
    back down, which is shorter than climbing straight to ``lcs`` when there are several hypernym paths.
    """
    up_lcs = _up_distances(lcs)
    return min(up[x] + d for x, d in up_lcs.items() if x in up)


def _parents(s: Any) -> list[Any]:
    return s.hypernyms() + s.instance_hypernyms()


@functools.cache
def _min_depth(s: Any) -> int:
    parents = _parents(s)
    return 0 if not parents else 1 + min(_min_depth(p) for p in parents)


@functools.cache
def _max_depth(s: Any) -> int:
    parents = _parents(s)
    return 0 if not parents else 1 + max(_max_depth(p) for p in parents)
