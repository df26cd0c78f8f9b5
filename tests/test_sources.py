"""The SIMILARITIES registry: contract for every source, and each source against an independent reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from simlab.similarity.sources import SIMILARITIES, SimilaritySource, compute_similarity, resolve_params
from tests.support import tiny_data

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
CIFAR10_VECTORS = SHARED / "vectors" / "cifar10-words-300d.txt"
CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def brute_force_lp(x_uint8: torch.Tensor, y: torch.Tensor, k: int, p: float) -> np.ndarray:
    """Paper A eq. 13+15 by torch.cdist over every class pair, float64 pixels in [0, 1]."""
    x = x_uint8.reshape(x_uint8.shape[0], -1).to(torch.float64) / 255.0
    out = np.zeros((k, k))
    for a in range(k):
        for b in range(k):
            out[a, b] = torch.cdist(x[y == a], x[y == b], p=p).mean().item()
    return out


# Parameters that let each source run on TinyData in well under a second.
def _params(name: str, tmp_path: Path) -> dict:
    if name == "we":
        return {"vectors": str(CIFAR10_VECTORS)}
    if name == "ae":
        return {"latent_dim": 4, "epochs": 1, "width": 4, "batch_size": 8, "device": "cpu"}
    if name == "pairs":
        return {"pairs": [["cat", "dog"]]}
    if name == "wordnet":
        return {"wnids": ["n02121620", "n02084071", "n02374451"]}  # cat, dog, horse
    if name == "predictions":
        return {"checkpoint": str(_tiny_checkpoint(tmp_path)), "device": "cpu"}
    return {"device": "cpu"}


def _tiny_checkpoint(tmp_path: Path) -> Path:
    from simlab.checkpoint import save_checkpoint
    from simlab.config import TrainConfig
    from simlab.models import build_model

    data = tiny_data()
    cfg = TrainConfig(model="small_cnn", model_args={"width": 4}, dataset="synthetic")
    model = build_model("small_cnn", 3, in_channels=3, width=4)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = (data.train_x.float() / 255 - 0.5) / 0.25
    for _ in range(3):  # "trained" for a few steps: enough for non-uniform predictions
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), data.train_y).backward()
        opt.step()
    state = {
        "version": 1,
        "epoch": 3,
        "model": model.state_dict(),
        "config": cfg.to_dict(),
        "class_names": data.class_names,
    }
    return save_checkpoint(state, tmp_path / "checkpoint.pt")


def _wordnet_available() -> bool:
    from simlab.similarity.wordnet import find_wordnet

    return find_wordnet() is not None


# ---------------------------------------------------------------------------------------------
# contract


@pytest.mark.parametrize("name", sorted(SIMILARITIES))
def test_every_source_returns_finite_float64_kxk(name: str, tmp_path: Path):
    if name == "wordnet" and not _wordnet_available():
        pytest.skip(reason="WordNet 3.0 database not found (run scripts/system_deps.sh)")
    if name == "we" and not CIFAR10_VECTORS.exists():
        pytest.skip(reason=f"shared vectors {CIFAR10_VECTORS} not found")
    src = SIMILARITIES[name]
    assert isinstance(src, SimilaritySource) and src.name == name
    assert src.kind in ("distance", "score") and isinstance(src.version, str)
    data = tiny_data()
    info: dict = {}
    out = src(data, _params(name, tmp_path), info=info)
    assert isinstance(out, np.ndarray) and out.dtype == np.float64 and out.shape == (3, 3)
    assert np.isfinite(out).all()
    if src.symmetric:
        np.testing.assert_allclose(out, out.T, rtol=1e-12, atol=1e-12)
    if src.kind == "distance":
        assert (out >= 0).all()


@pytest.mark.parametrize("name", sorted(SIMILARITIES))
def test_unknown_params_are_rejected_naming_them(name: str):
    src = SIMILARITIES[name]
    with pytest.raises(ValueError, match="'bogus'") as err:
        resolve_params(src, {"bogus": 1})
    for valid in src.defaults:
        assert valid in str(err.value)


def test_required_params_are_enforced():
    with pytest.raises(ValueError, match="vectors"):
        compute_similarity(tiny_data(), "we", {})
    with pytest.raises(ValueError, match="checkpoint"):
        compute_similarity(tiny_data(), "predictions")


def test_unknown_source_lists_valid_ones():
    with pytest.raises(ValueError, match="valid sources are: .*l2"):
        compute_similarity(tiny_data(), "l3")


def test_cuda_requested_without_cuda_is_a_valueerror():
    if torch.cuda.is_available():
        pytest.skip(reason="CUDA is available here; this checks the CPU-only error path")
    with pytest.raises(ValueError, match="device"):
        compute_similarity(tiny_data(), "l2", {"device": "cuda"})


# ---------------------------------------------------------------------------------------------
# image space


@pytest.mark.parametrize(("name", "p"), [("l1", 1.0), ("l2", 2.0)])
def test_lp_matches_brute_force_cdist(name: str, p: float, device: torch.device):
    data = tiny_data(per_class=(6, 9, 5), size=5)
    got = compute_similarity(data, name, {"device": device.type})
    expected = brute_force_lp(data.train_x, data.train_y, 3, p)
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)


def test_lp_max_per_class_is_seeded_and_approximates():
    data = tiny_data(per_class=(40, 50, 45), size=4)
    exact = compute_similarity(data, "l2")
    a = compute_similarity(data, "l2", {"max_per_class": 20, "seed": 1})
    b = compute_similarity(data, "l2", {"max_per_class": 20, "seed": 1})
    c = compute_similarity(data, "l2", {"max_per_class": 20, "seed": 2})
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert np.abs(a - exact).max() / exact.max() < 0.1


def test_lp_rejects_bad_params():
    with pytest.raises(ValueError, match="max_per_class"):
        compute_similarity(tiny_data(), "l1", {"max_per_class": 0})
    with pytest.raises(ValueError, match="seed"):
        compute_similarity(tiny_data(), "l1", {"seed": -1})
    with pytest.raises(ValueError, match="train_x"):
        bad = tiny_data()
        bad.train_x = bad.train_x.float()
        compute_similarity(bad, "l1")


# ---------------------------------------------------------------------------------------------
# semantic space


@pytest.mark.skipif(not CIFAR10_VECTORS.exists(), reason="shared CIFAR-10 word vectors not found")
def test_we_source_on_cifar10_names():
    from gensim.models import KeyedVectors

    kv = KeyedVectors.load_word2vec_format(str(CIFAR10_VECTORS))
    data = tiny_data(class_names=CIFAR10, per_class=(1,) * 10)
    got = compute_similarity(data, "we", {"vectors": str(CIFAR10_VECTORS)})
    words = ["car" if n == "automobile" else n for n in CIFAR10]
    expected = np.array([[np.linalg.norm(kv[a].astype(np.float64) - kv[b]) for b in words] for a in words])
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    mapped = compute_similarity(
        data, "we", {"vectors": str(CIFAR10_VECTORS), "mapping": {"automobile": "truck"}}
    )
    assert mapped[1, 9] == 0.0  # automobile and truck now share a word


# ---------------------------------------------------------------------------------------------
# paper B scores


def test_pairs_marks_the_paper_b_cifar10_pairs():
    data = tiny_data(class_names=CIFAR10, per_class=(1,) * 10)
    got = compute_similarity(data, "pairs")
    # paper B §4.1: truck-automobile, bird-airplane, deer-horse, cat-dog, frog-ship
    expected = np.zeros((10, 10))
    for a, b in [
        ("truck", "automobile"),
        ("bird", "airplane"),
        ("deer", "horse"),
        ("cat", "dog"),
        ("frog", "ship"),
    ]:
        i, j = CIFAR10.index(a), CIFAR10.index(b)
        expected[i, j] = expected[j, i] = 1.0
    np.testing.assert_array_equal(got, expected)


def test_pairs_custom_and_invalid():
    data = tiny_data()
    got = compute_similarity(data, "pairs", {"pairs": [["horse", "cat"]]})
    np.testing.assert_array_equal(got, [[0, 0, 1], [0, 0, 0], [1, 0, 0]])
    with pytest.raises(ValueError, match="pairs"):
        compute_similarity(data, "pairs", {"pairs": [["horse", "zebra"]]})
    with pytest.raises(ValueError, match="pairs"):
        compute_similarity(data, "pairs", {"pairs": [["horse"]]})
    with pytest.raises(TypeError, match="pairs"):
        compute_similarity(data, "pairs", {"pairs": "cat-dog"})


# ---------------------------------------------------------------------------------------------
# representation space


def test_ae_distances_are_brute_force_on_its_own_codes():
    from simlab.similarity.autoencoder import autoencoder_distances, encode, train_autoencoder

    data = tiny_data(per_class=(6, 5, 7), size=8)
    kw = {"latent_dim": 6, "epochs": 2, "lr": 1e-3, "batch_size": 4, "width": 4, "seed": 3, "device": "cpu"}
    info: dict = {}
    got = autoencoder_distances(data.train_x, data.train_y, 3, info=info, **kw)
    model, losses = train_autoencoder(data.train_x, **kw)  # same seed: the same network
    codes = encode(model, data.train_x).to(torch.float64)
    y = data.train_y
    expected = np.array(
        [[torch.cdist(codes[y == a], codes[y == b]).mean().item() for b in range(3)] for a in range(3)]
    )
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-6)
    assert info["train_loss"] == losses and len(losses) == 2
    assert info["n_train_ae"] == 18


def test_ae_is_seeded_and_its_loss_decreases():
    data = tiny_data(per_class=(8, 8, 8), size=8)
    params = {"latent_dim": 8, "epochs": 6, "batch_size": 8, "width": 4, "lr": 3e-3, "device": "cpu"}
    info: dict = {}
    a = compute_similarity(data, "ae", {**params, "seed": 0}, info=info)
    b = compute_similarity(data, "ae", {**params, "seed": 0})
    c = compute_similarity(data, "ae", {**params, "seed": 1})
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert info["train_loss"][-1] < info["train_loss"][0]


def test_ae_train_samples_subset_and_bad_params():
    from simlab.similarity.autoencoder import autoencoder_distances

    data = tiny_data(per_class=(6, 5, 7), size=8)
    info: dict = {}
    out = autoencoder_distances(
        data.train_x,
        data.train_y,
        3,
        latent_dim=4,
        epochs=1,
        width=4,
        train_samples=5,
        device="cpu",
        info=info,
    )
    assert out.shape == (3, 3) and info["n_train_ae"] == 5
    for bad in ({"latent_dim": 0}, {"epochs": 0}, {"lr": -1.0}, {"train_samples": 0}, {"seed": -2}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            autoencoder_distances(data.train_x, data.train_y, 3, device="cpu", **bad)
    with pytest.raises(ValueError, match="images_uint8"):
        autoencoder_distances(data.train_x.float(), data.train_y, 3)


def test_ae_odd_image_size_reconstructs_to_the_same_shape():
    from simlab.similarity.autoencoder import ConvAutoencoder

    model = ConvAutoencoder(1, (7, 5), latent_dim=3, width=2)
    x = torch.rand(2, 1, 7, 5, generator=torch.Generator().manual_seed(0))
    assert model(x).shape == x.shape and model.encode(x).shape == (2, 3)


# ---------------------------------------------------------------------------------------------
# paper B predictions


def test_predictions_are_mean_softmax_per_labelled_class(tmp_path: Path):
    from simlab.models import build_model

    data = tiny_data()
    ckpt = _tiny_checkpoint(tmp_path)
    state = torch.load(ckpt, weights_only=True)
    model = build_model("small_cnn", 3, in_channels=3, width=4)
    model.load_state_dict(state["model"])
    model.eval()
    # direct formula, one sample at a time: S[a] = mean over {i : y_i = a} of softmax(f(x_i))
    expected = np.zeros((3, 3))
    counts = np.zeros(3)
    with torch.no_grad():
        for x, y in zip(data.train_x, data.train_y, strict=True):
            z = (x[None].to(torch.float64) / 255 - 0.5) / 0.25
            p = torch.softmax(model.double()(z), dim=1)[0].numpy()
            expected[int(y)] += p
            counts[int(y)] += 1
    expected /= counts[:, None]
    info: dict = {}
    got = compute_similarity(data, "predictions", {"checkpoint": str(ckpt), "device": "cpu"}, info=info)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.sum(1), 1.0, atol=1e-9)
    assert info["checkpoint_epoch"] == 3


def test_predictions_reject_a_checkpoint_of_other_classes(tmp_path: Path):
    ckpt = _tiny_checkpoint(tmp_path)
    other = tiny_data(class_names=("ant", "bee", "cow"))
    with pytest.raises(ValueError, match="checkpoint"):
        compute_similarity(other, "predictions", {"checkpoint": str(ckpt), "device": "cpu"})


# ---------------------------------------------------------------------------------------------
# known truth on the real ImageData


@pytest.mark.parametrize("name", ["l1", "l2"])
def test_lp_recovers_the_synthetic_superclasses(name: str, tmp_path: Path):
    from simlab.data import load_dataset
    from simlab.similarity.store import SimilarityStore

    data = load_dataset(
        "synthetic", cache_dir=tmp_path, num_classes=6, num_superclasses=2, samples_per_class=12, image_size=8
    )
    superclass = data.info["superclass"]
    d, meta = SimilarityStore(tmp_path / "similarity").get(data, name, {})
    assert meta["computed"] and meta["class_names"] == data.class_names
    # class prototypes share a superclass pattern: each class's nearest other class is a sibling
    for k in range(6):
        nearest = min((j for j in range(6) if j != k), key=lambda j: d[k, j])
        assert superclass[nearest] == superclass[k]


@pytest.mark.parametrize(("name", "p"), [("l1", 1.0), ("l2", 2.0)])
def test_lp_energy_variant_matches_brute_force(name: str, p: float):
    data = tiny_data(per_class=(6, 9, 5), size=5)
    got = compute_similarity(data, name, {"energy": True, "device": "cpu"})
    x = data.train_x.reshape(data.train_x.shape[0], -1).to(torch.float64) / 255.0
    y = data.train_y
    cross = brute_force_lp(data.train_x, y, 3, p)

    def within(a: int) -> float:  # mean distance between distinct images of class a
        d = torch.cdist(x[y == a], x[y == a], p=p)
        n = d.shape[0]
        return (d.sum() / (n * (n - 1))).item()

    w = [within(a) for a in range(3)]
    expected = np.array(
        [[0.0 if a == b else cross[a, b] - (w[a] + w[b]) / 2 for b in range(3)] for a in range(3)]
    )
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="energy"):
        compute_similarity(data, name, {"energy": "yes"})
    single = tiny_data(per_class=(1, 3, 3))
    with pytest.raises(ValueError, match="energy"):
        compute_similarity(single, name, {"energy": True})


def test_predictions_on_a_checkpoint_written_by_fit(tmp_path: Path):
    """The trainer's checkpoint format end to end: fit one epoch, then score its training images."""
    from simlab.config import TrainConfig
    from simlab.data import load_dataset, prepare_images
    from simlab.models import build_model
    from simlab.train import fit

    data = load_dataset(
        "synthetic", cache_dir=tmp_path, num_classes=3, num_superclasses=1, samples_per_class=8, image_size=8
    )
    cfg = TrainConfig(
        dataset="synthetic",
        model="small_cnn",
        model_args={"width": 4},
        epochs=1,
        batch_size=8,
        lr=0.05,
        recalibrate=False,
        device="cpu",
        augment=False,
        cache_dir=str(tmp_path),
    )
    fit(cfg, data=data, checkpoint_dir=tmp_path / "ckpt", recalibrators={})
    ckpt = tmp_path / "ckpt" / "checkpoint.pt"
    got = compute_similarity(data, "predictions", {"checkpoint": str(ckpt), "device": "cpu"})
    # reference: the plain model from the checkpoint, softmax averaged per labelled class with numpy
    state = torch.load(ckpt, weights_only=True)
    model = build_model("small_cnn", 3, in_channels=3, width=4)
    model.load_state_dict(state["model"])
    model.eval()
    with torch.no_grad():
        x = prepare_images(data.train_x, mean=data.mean, std=data.std, augment=False, generator=None)
        probs = torch.softmax(model(x).double(), dim=1).numpy()
    y = data.train_y.numpy()
    expected = np.stack([probs[y == a].mean(0) for a in range(3)])
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-8)
