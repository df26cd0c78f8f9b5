"""Word-embedding distances (paper A eq. 16) on the real shared vector files, against a hand parser."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from simlab.similarity.word_vectors import (
    MissingWordsError,
    detect_format,
    load_vectors,
    word_vector_distances,
)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "vectors"
CIFAR10_FILE = DATA / "cifar10-words-300d.txt"
CIFAR100_FILE = DATA / "cifar100-glove-100d.txt"
CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

pytestmark = pytest.mark.skipif(
    not CIFAR10_FILE.exists(), reason=f"shared word-vector files not found under {DATA}"
)


def _parse_text(path: Path) -> dict[str, np.ndarray]:
    """Independent reader of the word2vec text format (header line, then `word f1 ... fd`)."""
    lines = path.read_text().splitlines()
    count, dim = map(int, lines[0].split())
    out = {}
    for line in lines[1:]:
        parts = line.rstrip().split(" ")
        out[parts[0]] = np.array([float(v) for v in parts[1:]], dtype=np.float64)
        assert out[parts[0]].shape == (dim,)
    assert len(out) == count
    return out


def _brute(emb: list[np.ndarray]) -> np.ndarray:
    k = len(emb)
    return np.array([[np.linalg.norm(emb[i] - emb[j]) for j in range(k)] for i in range(k)])


def test_cifar10_default_mapping_matches_hand_computed_distances():
    vec = _parse_text(CIFAR10_FILE)
    # automobile is not in this file's vocabulary; the default mapping sends it to 'car'.
    expected = _brute([vec["car" if n == "automobile" else n] for n in CIFAR10])
    got = word_vector_distances(CIFAR10, CIFAR10_FILE)
    assert got.dtype == torch.float64 and got.shape == (10, 10)
    # The file holds float32-rounded vectors through gensim; the hand parser keeps the decimals.
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6, atol=1e-6)
    assert torch.equal(got, got.T) and torch.all(got.diagonal() == 0)


def test_user_mapping_overrides_and_multiword_classes_average():
    vec = _parse_text(CIFAR10_FILE)
    names = ["pet", "vehicle", "horse"]
    mapping = {"pet": ["cat", "dog"], "vehicle": "car truck"}  # a list, and a phrase split at spaces
    emb = [(vec["cat"] + vec["dog"]) / 2, (vec["car"] + vec["truck"]) / 2, vec["horse"]]
    got = word_vector_distances(names, str(CIFAR10_FILE), mapping=mapping)
    np.testing.assert_allclose(got.numpy(), _brute(emb), rtol=1e-6, atol=1e-6)


def test_underscore_names_split_into_words_when_the_vocabulary_lacks_them():
    vec = _parse_text(CIFAR10_FILE)
    got = word_vector_distances(["cat_dog", "horse-ship"], CIFAR10_FILE)
    emb = [(vec["cat"] + vec["dog"]) / 2, (vec["horse"] + vec["ship"]) / 2]
    np.testing.assert_allclose(got.numpy(), _brute(emb), rtol=1e-6, atol=1e-6)


def test_missing_words_are_all_listed_in_one_keyerror():
    names = ["cat", "zebra", "sea_otter", "automobile"]
    with pytest.raises(KeyError) as err:
        word_vector_distances(names, CIFAR10_FILE, mapping={"automobile": "motorcar"})
    assert isinstance(err.value, MissingWordsError)
    msg = str(err.value)
    for word in ("zebra", "sea", "otter", "motorcar"):
        assert repr(word) in msg
    assert set(err.value.missing) == {"zebra", "sea", "otter", "motorcar"}
    assert err.value.missing["otter"] == ["sea_otter"]


def test_cifar100_glove_names_resolve_directly():
    vec = _parse_text(CIFAR100_FILE)
    names = list(vec)  # the file lists the CIFAR-100 label names (aquarium_fish, maple_tree, ...)
    got = word_vector_distances(names, CIFAR100_FILE)
    np.testing.assert_allclose(got.numpy(), _brute([vec[n] for n in names]), rtol=1e-6, atol=1e-6)


def test_glove_file_without_header_is_detected(tmp_path: Path):
    lines = CIFAR10_FILE.read_text().splitlines()
    glove = tmp_path / "vectors.glove.txt"
    glove.write_text("\n".join(lines[1:]) + "\n")  # GloVe: no `count dim` line
    assert detect_format(glove) == "glove"
    assert detect_format(CIFAR10_FILE) == "word2vec_text"
    np.testing.assert_array_equal(
        word_vector_distances(CIFAR10, glove).numpy(), word_vector_distances(CIFAR10, CIFAR10_FILE).numpy()
    )


def test_word2vec_binary_written_by_gensim_is_detected(tmp_path: Path):
    kv = load_vectors(CIFAR10_FILE)
    binary = tmp_path / "vectors.bin"
    kv.save_word2vec_format(str(binary), binary=True)
    assert detect_format(binary) == "word2vec_binary"
    np.testing.assert_array_equal(
        word_vector_distances(CIFAR10, binary).numpy(), word_vector_distances(CIFAR10, kv).numpy()
    )


def test_gzip_text_file(tmp_path: Path):
    import gzip

    gz = tmp_path / "vectors.txt.gz"
    gz.write_bytes(gzip.compress(CIFAR10_FILE.read_bytes()))
    assert detect_format(gz) == "word2vec_text"
    np.testing.assert_array_equal(
        word_vector_distances(CIFAR10, gz).numpy(), word_vector_distances(CIFAR10, CIFAR10_FILE).numpy()
    )


@pytest.mark.parametrize(
    ("kwargs", "error", "needle"),
    [
        ({"class_names": "cat", "vectors": CIFAR10_FILE}, TypeError, "class_names"),
        ({"class_names": ["cat", ""], "vectors": CIFAR10_FILE}, ValueError, "class_names"),
        ({"class_names": ["cat"], "vectors": 3}, TypeError, "vectors"),
        ({"class_names": ["cat"], "vectors": "/nonexistent/vectors.txt"}, ValueError, "vectors"),
        ({"class_names": ["cat"], "vectors": CIFAR10_FILE, "mapping": ["car"]}, TypeError, "mapping"),
        ({"class_names": ["cat"], "vectors": CIFAR10_FILE, "mapping": {"cat": 3}}, ValueError, "mapping"),
    ],
)
def test_bad_input_names_the_argument(kwargs, error, needle):
    with pytest.raises(error, match=needle):
        word_vector_distances(**kwargs)


def test_unrecognised_file_is_a_valueerror(tmp_path: Path):
    bad = tmp_path / "notes.txt"
    bad.write_text("hello world\nthis is not a vector file\n")
    with pytest.raises(ValueError, match="vectors"):
        word_vector_distances(["cat"], bad)


@pytest.mark.parametrize("fmt", ["word2vec_text", "glove", "word2vec_binary"])
def test_check_vocabulary_agrees_with_the_full_load(tmp_path: Path, fmt: str):
    from simlab.similarity.word_vectors import check_vocabulary, load_vocabulary

    path = CIFAR10_FILE
    if fmt == "glove":
        path = tmp_path / "glove.txt"
        path.write_text("\n".join(CIFAR10_FILE.read_text().splitlines()[1:]) + "\n")
    elif fmt == "word2vec_binary":
        path = tmp_path / "vectors.bin"
        load_vectors(CIFAR10_FILE).save_word2vec_format(str(path), binary=True)
    assert set(load_vocabulary(path)) == set(_parse_text(CIFAR10_FILE))
    words = check_vocabulary(CIFAR10 + ["cat_dog"], path, mapping={"airplane": ["ship", "bird"]})
    assert words["automobile"] == ["car"] and words["airplane"] == ["ship", "bird"]
    assert words["cat_dog"] == ["cat", "dog"]
    names = ["cat", "zebra", "sea_otter"]
    with pytest.raises(MissingWordsError) as fast:
        check_vocabulary(names, path)
    with pytest.raises(MissingWordsError) as full:
        word_vector_distances(names, path)
    assert (
        fast.value.missing
        == full.value.missing
        == {"zebra": ["zebra"], "sea": ["sea_otter"], "otter": ["sea_otter"]}
    )
