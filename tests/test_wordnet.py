"""WordNet Wu-Palmer distances against NLTK's own ``wup_similarity``, and the class/synset constants."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from simlab.class_names import CIFAR10_CLASSES, CIFAR100_CLASSES, CIFAR100_SUPERCLASSES
from simlab.similarity import wordnet as wn

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"

needs_db = pytest.mark.skipif(
    wn.find_wordnet() is None,
    reason="WordNet 3.0 database not found (run scripts/system_deps.sh, or nltk.download('wordnet'))",
)


@needs_db
def test_cifar10_matches_nltk_wup_similarity():
    reader = wn.load_wordnet()
    synsets = [reader.synset_from_pos_and_offset("n", int(w[1:])) for w in wn.CIFAR10_WNIDS]
    got = wn.wordnet_distances(list(CIFAR10_CLASSES)).numpy()
    assert got.shape == (10, 10) and np.array_equal(got, got.T) and np.all(np.diag(got) == 0)
    for a in range(10):
        for b in range(10):
            if a != b:
                assert got[a, b] == pytest.approx(1.0 - synsets[a].wup_similarity(synsets[b]), abs=1e-12)


@needs_db
@pytest.mark.parametrize(
    ("x", "y"),
    [
        ("maple_tree", "oak_tree"),
        ("bus", "streetcar"),
        ("lion", "tiger"),
        ("bee", "cloud"),
        ("girl", "woman"),
    ],
)
def test_cifar100_pairs_match_nltk(x: str, y: str):
    reader = wn.load_wordnet()
    names = list(CIFAR100_CLASSES)
    got = wn.wordnet_distances(names).numpy()
    i, j = names.index(x), names.index(y)
    sx = reader.synset_from_pos_and_offset("n", int(wn.CIFAR100_WNIDS[i][1:]))
    sy = reader.synset_from_pos_and_offset("n", int(wn.CIFAR100_WNIDS[j][1:]))
    # NLTK's wup is asymmetric when one synset subsumes the other (girl/woman): either order is right.
    options = {1.0 - sx.wup_similarity(sy), 1.0 - sy.wup_similarity(sx)}
    assert any(abs(got[i, j] - o) < 1e-12 for o in options)
    assert got[i, j] == got[j, i]


@needs_db
def test_semantics_are_sensible_on_cifar10():
    d = wn.wordnet_distances(list(CIFAR10_CLASSES)).numpy()
    names = list(CIFAR10_CLASSES)
    cat, dog, ship, truck, car = (names.index(n) for n in ("cat", "dog", "ship", "truck", "automobile"))
    assert d[cat, dog] < d[cat, ship]
    assert d[car, truck] < d[car, dog]


@needs_db
def test_custom_wnids_list_and_file(tmp_path: Path):
    ids = ["n02121620", "n02084071", "n02374451"]  # cat, dog, horse
    info: dict = {}
    from_list = wn.wordnet_distances(["a", "b", "c"], wnids=ids, info=info).numpy()
    f = tmp_path / "ids.txt"
    f.write_text("\n".join(ids) + "\n")
    from_file = wn.wordnet_distances(["a", "b", "c"], wnids=str(f)).numpy()
    np.testing.assert_array_equal(from_list, from_file)
    assert info["synsets"] == {"a": "cat.n.01", "b": "dog.n.01", "c": "horse.n.01"}
    assert info["wordnet_version"] == "3.0"


@needs_db
@pytest.mark.parametrize(
    ("kwargs", "error", "needle"),
    [
        ({"class_names": ["a", "b"]}, ValueError, "wnids"),
        ({"class_names": ["a", "b"], "wnids": ["n02121620"]}, ValueError, "wnids"),
        ({"class_names": ["a", "b"], "wnids": ["n02121620", "dog"]}, ValueError, "wnids"),
        ({"class_names": ["a", "b"], "wnids": ["n02121620", "n99999999"]}, ValueError, "wnids"),
        ({"class_names": ["a", "b"], "wnids": "/nonexistent/ids.txt"}, ValueError, "wnids"),
        ({"class_names": "ab", "wnids": ["n02121620", "n02084071"]}, TypeError, "class_names"),
    ],
)
def test_bad_input(kwargs, error, needle):
    with pytest.raises(error, match=needle):
        wn.wordnet_distances(**kwargs)


def test_missing_database_is_reported(tmp_path: Path):
    assert wn.find_wordnet(tmp_path) is None
    with pytest.raises(FileNotFoundError, match="root"):
        wn.load_wordnet(tmp_path)


@pytest.mark.skipif(not (SHARED / "wordnet").exists(), reason="shared WordNet id lists not found")
def test_embedded_ids_equal_the_shared_lists_except_the_documented_fixes():
    c10 = (SHARED / "wordnet" / "cifar10-wnids.txt").read_text().split()
    c100 = (SHARED / "wordnet" / "cifar100-wnids.txt").read_text().split()
    assert tuple(c10) == wn.CIFAR10_WNIDS
    assert len(c100) == 100
    for name, ours, theirs in zip(CIFAR100_CLASSES, wn.CIFAR100_WNIDS, c100, strict=True):
        if name in ("dolphin", "skunk"):
            assert ours != theirs
        else:
            assert ours == theirs, name


@pytest.mark.skipif(not (SHARED / "vectors").exists(), reason="shared vector files not found")
def test_cifar100_names_and_superclasses():
    # The CIFAR-100 GloVe file lists the classes in label order: an independent copy of the names.
    lines = (SHARED / "vectors" / "cifar100-glove-100d.txt").read_text().splitlines()[1:]
    assert tuple(line.split(" ", 1)[0] for line in lines) == CIFAR100_CLASSES
    assert len(CIFAR100_SUPERCLASSES) == 20
    members = [c for group in CIFAR100_SUPERCLASSES.values() for c in group]
    assert all(len(g) == 5 for g in CIFAR100_SUPERCLASSES.values())
    assert sorted(members) == sorted(CIFAR100_CLASSES)


# --- class names that are WordNet ids (Tiny-ImageNet's wnids) are their own synsets (issue 16) ---------
TINY_ZIP = SHARED / "tiny-imagenet-200-train200.zip"
needs_tiny = pytest.mark.skipif(not TINY_ZIP.exists(), reason="tiny-imagenet-200-train200.zip not found")


def _tiny_wnids() -> list[str]:
    import zipfile

    with zipfile.ZipFile(TINY_ZIP) as zf:
        name = next(n for n in zf.namelist() if n.endswith("/wnids.txt"))
        return [w.strip() for w in zf.read(name).decode().splitlines() if w.strip()]


def _nltk_wup_options(reader, a: str, b: str) -> set[float]:
    sa = reader.synset_from_pos_and_offset(a[0], int(a[1:]))
    sb = reader.synset_from_pos_and_offset(b[0], int(b[1:]))
    # NLTK's wup is asymmetric when one synset subsumes the other: either order is right.
    return {1.0 - sa.wup_similarity(sb), 1.0 - sb.wup_similarity(sa)}


@needs_db
@needs_tiny
def test_wnid_class_names_are_their_own_synsets():
    names = _tiny_wnids()[:6]
    reader = wn.load_wordnet()
    info: dict = {}
    got = wn.wordnet_distances(names, info=info).numpy()  # no wnids argument
    assert got.shape == (6, 6) and np.array_equal(got, got.T) and np.all(np.diag(got) == 0)
    for a in range(6):
        for b in range(a + 1, 6):
            assert any(abs(got[a, b] - o) < 1e-12 for o in _nltk_wup_options(reader, names[a], names[b]))
    first = reader.synset_from_pos_and_offset("n", int(names[0][1:]))
    assert info["synsets"][names[0]] == first.name()
    # a mix of ids and plain names still needs wnids
    with pytest.raises(ValueError, match="wnids"):
        wn.wordnet_distances([names[0], "cat"])


@pytest.mark.slow
@needs_db
@needs_tiny
def test_full_tinyimagenet_matrix_from_the_real_zips_class_names():
    from simlab.data import load_dataset

    data = load_dataset("tinyimagenet", data_dir=TINY_ZIP, val_fraction=0.0)
    names = list(data.class_names)
    assert len(names) == 200 and sorted(names) == sorted(_tiny_wnids())
    got = wn.wordnet_distances(names).numpy()
    assert got.shape == (200, 200) and np.array_equal(got, got.T) and np.all(np.diag(got) == 0)
    assert np.all((got >= 0) & (got <= 1))
    reader = wn.load_wordnet()
    rng = np.random.default_rng(0)
    for a, b in rng.integers(0, 200, size=(40, 2)):
        if a != b:
            assert any(abs(got[a, b] - o) < 1e-12 for o in _nltk_wup_options(reader, names[a], names[b]))
