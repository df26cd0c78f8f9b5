"""SPEC §3: losses against F.cross_entropy and per-sample references in plain Python, gradcheck in
float64, half-precision finiteness, and a contract suite parametrised over the LOSSES registry."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from simlab.losses import (
    LOSSES,
    get_loss,
    l1_loss,
    log_projection_loss,
    mse_loss,
    projection_loss,
    relax,
    soft_cross_entropy,
)


# --- per-sample references in plain Python (paper B eq. 4, 6, 11) ----------------------------------
def _softmax(row: list[float]) -> list[float]:
    m = max(row)
    e = [math.exp(v - m) for v in row]
    return [v / sum(e) for v in e]


def _ref_ce(z, t):
    p = _softmax(z)
    return -sum(ti * math.log(pi) for ti, pi in zip(t, p, strict=True))


def _ref_projection(z, t):
    p = _softmax(z)
    tt = sum(v * v for v in t)
    return max(0.0, tt - sum(a * b for a, b in zip(t, p, strict=True)))


def _ref_log_projection(z, t, eps=1e-8):
    p = _softmax(z)
    tt = sum(v * v for v in t)
    return max(0.0, math.log((tt + eps) / (sum(a * b for a, b in zip(t, p, strict=True)) + eps)))


def _ref_l1(z, t):
    return sum(abs(a - b) for a, b in zip(_softmax(z), t, strict=True))


def _ref_mse(z, t):
    return sum((a - b) ** 2 for a, b in zip(_softmax(z), t, strict=True))


REFERENCES = {
    "ce": _ref_ce,
    "projection": _ref_projection,
    "log_projection": _ref_log_projection,
    "l1": _ref_l1,
    "mse": _ref_mse,
}


def batch_reference(name: str, logits: torch.Tensor, targets: torch.Tensor) -> float:
    ref = REFERENCES[name]
    vals = [ref(z, t) for z, t in zip(logits.tolist(), targets.tolist(), strict=True)]
    return sum(vals) / len(vals)


def label_rows(gen: torch.Generator, b: int, k: int, dtype=torch.float64) -> torch.Tensor:
    """Soft label rows like those of paper A/B: most mass on one class, the rest spread."""
    y = torch.randint(0, k, (b,), generator=gen)
    t = torch.rand(b, k, generator=gen, dtype=torch.float64) * 0.2
    t[torch.arange(b), y] += 1.0
    return (t / t.sum(1, keepdim=True)).to(dtype)


def test_registry_names():
    assert set(LOSSES) == {"ce", "projection", "log_projection", "l1", "mse"}
    assert set(REFERENCES) == set(LOSSES)  # a new loss needs a reference here


# --- parity -------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_soft_ce_matches_torch_cross_entropy_with_probability_targets(generator, dtype):
    logits = (torch.randn(32, 10, generator=generator, dtype=torch.float64) * 3).to(dtype)
    targets = label_rows(generator, 32, 10, dtype)
    ours = soft_cross_entropy(logits, targets)
    ref = F.cross_entropy(logits, targets)
    tol = 1e-12 if dtype == torch.float64 else 1e-6
    torch.testing.assert_close(ours, ref, rtol=tol, atol=tol)


def test_soft_ce_with_one_hot_matches_index_targets(generator):
    logits = torch.randn(16, 5, generator=generator, dtype=torch.float64)
    y = torch.randint(0, 5, (16,), generator=generator)
    torch.testing.assert_close(
        soft_cross_entropy(logits, F.one_hot(y, 5).double()), F.cross_entropy(logits, y), rtol=1e-12, atol=0
    )


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("relaxed", [False, True])
def test_loss_matches_reference(generator, name, relaxed):
    logits = torch.randn(12, 6, generator=generator, dtype=torch.float64) * 2
    targets = label_rows(generator, 12, 6)
    if relaxed:
        targets = relax(targets, "l2")
    got = LOSSES[name](logits, targets)
    assert got.dim() == 0
    assert got.item() == pytest.approx(batch_reference(name, logits, targets), rel=1e-10, abs=1e-12)


def test_projection_losses_zero_inside_relaxation_region():
    # paper B Fig. 3: with T = (0.6, 0.4) relaxed by eq. 9, a confident prediction on either class
    # of the pair projects beyond <Tr, Tr>, so both projective losses vanish.
    t = relax(torch.tensor([[0.6, 0.4, 0.0]], dtype=torch.float64), "l2")
    for logits in ([[20.0, 0.0, 0.0]], [[0.0, 20.0, 0.0]]):
        z = torch.tensor(logits, dtype=torch.float64)
        assert projection_loss(z, t).item() == 0.0
        assert log_projection_loss(z, t).item() == 0.0
    z = torch.tensor([[0.0, 0.0, 20.0]], dtype=torch.float64)  # the dissimilar class: penalised
    assert projection_loss(z, t).item() > 0.1


def test_log_projection_eps():
    z = torch.tensor([[-100.0, 100.0]], dtype=torch.float64)
    t = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    assert log_projection_loss(z, t).item() == pytest.approx(math.log((1 + 1e-8) / 1e-8), rel=1e-9)
    assert log_projection_loss(z, t, eps=1e-3).item() == pytest.approx(math.log(1.001 / 1e-3), rel=1e-9)
    with pytest.raises(ValueError, match="eps.*positive"):
        log_projection_loss(z, t, eps=0.0)


# --- relax ---------------------------------------------------------------------------------------
def test_relax_l2_and_trusted_rows(generator):
    t = label_rows(generator, 8, 4)
    norms = [math.sqrt(sum(v * v for v in row)) for row in t.tolist()]
    want = torch.tensor(
        [[n * v for v in row] for n, row in zip(norms, t.tolist(), strict=True)], dtype=torch.float64
    )
    torch.testing.assert_close(relax(t, "l2"), want, rtol=1e-14, atol=0)  # eq. 9
    trusted = torch.tensor([True, False] * 4)
    r = relax(t, "l2", trusted)
    assert torch.equal(r[trusted], t[trusted])  # eq. 10
    torch.testing.assert_close(r[~trusted], want[~trusted], rtol=1e-14, atol=0)
    assert torch.equal(relax(t, "none", trusted), t)
    one_hot = torch.eye(4, dtype=torch.float64)
    assert torch.equal(relax(one_hot, "l2"), one_hot)  # ||e_k|| = 1


def test_relax_bad_input():
    t = torch.tensor([[0.6, 0.4], [1.0, 0.0]])
    with pytest.raises(ValueError, match="mode: unknown value 'l1'; valid values are: none, l2"):
        relax(t, "l1")
    with pytest.raises(TypeError, match="trusted.*bool"):
        relax(t, "l2", torch.tensor([1, 0]))
    with pytest.raises(ValueError, match=r"trusted.*\[B\]=\[2\]"):
        relax(t, "l2", torch.tensor([True, False, True]))
    with pytest.raises(ValueError, match="targets.*rows summing to 1"):
        relax(t * 0.5, "l2")  # e.g. relaxing twice
    with pytest.raises(ValueError, match="targets.*finite"):
        relax(torch.tensor([[float("nan"), 1.0]]), "l2")
    with pytest.raises(ValueError, match="targets.*2-d"):
        relax(torch.tensor([0.6, 0.4]), "l2")


# --- gradients -----------------------------------------------------------------------------------
def _gradcheck_cases(gen: torch.Generator):
    k = 5
    soft = label_rows(gen, 4, k)
    yield "soft", torch.randn(4, k, generator=gen, dtype=torch.float64), soft
    yield "relaxed", torch.randn(4, k, generator=gen, dtype=torch.float64), relax(soft, "l2")
    one_hot = F.one_hot(torch.tensor([0, 1, 2, 3]), k).double()
    # near-zero probabilities on the target class (p ~ 1e-9) and elsewhere
    far = torch.tensor([[-10.0, 10.0, 0.0, 1.0, -3.0]] * 4, dtype=torch.float64)
    far = far + 0.01 * torch.randn(4, k, generator=gen, dtype=torch.float64)
    yield "near_zero_probs", far, one_hot
    yield "near_zero_probs_relaxed", far, relax(soft, "l2")


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_gradcheck_float64(generator, name):
    loss = LOSSES[name]
    for case, logits, targets in _gradcheck_cases(generator):
        logits = logits.clone().requires_grad_(True)
        # Gradients in the targets too where the loss is smooth there; with near-zero probabilities a
        # step of eps in a zero target entry crosses |P - T|'s kink (l1), so only logits there.
        targets = targets.clone().requires_grad_(not case.startswith("near_zero"))
        assert torch.autograd.gradcheck(loss, (logits, targets), eps=1e-6, atol=1e-5, rtol=1e-4), case


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_finite(generator, name, dtype):
    k = 10
    logits = torch.randn(16, k, generator=generator) * 4
    logits[:4] = torch.tensor([60.0] + [-60.0] * (k - 1))  # extreme: probabilities underflow in half
    targets = relax(label_rows(generator, 16, k, torch.float32), "l2")
    z = logits.to(dtype).requires_grad_(True)
    out = LOSSES[name](z, targets.to(dtype))
    assert out.dtype == torch.float32
    out.backward()
    assert torch.isfinite(out) and bool(torch.isfinite(z.grad).all())
    ref = LOSSES[name](logits.to(dtype).double(), targets.to(dtype).double())
    assert out.item() == pytest.approx(ref.item(), rel=1e-4, abs=1e-5)


# --- contract over the registry -------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_contract_scalar_nonnegative_batch_mean(generator, name):
    loss = get_loss(name)
    logits = torch.randn(10, 4, generator=generator, dtype=torch.float64)
    targets = label_rows(generator, 10, 4)
    full = loss(logits, targets)
    assert full.shape == () and full.item() >= 0
    parts = torch.stack([loss(logits[i : i + 1], targets[i : i + 1]) for i in range(10)])
    torch.testing.assert_close(full, parts.mean(), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_contract_minimal_at_confident_correct_prediction(name):
    t = torch.eye(3, dtype=torch.float64)
    right = torch.eye(3, dtype=torch.float64) * 40
    wrong = right.roll(1, dims=1)
    loss = LOSSES[name]
    assert loss(right, t).item() < 1e-12
    assert loss(wrong, t).item() > 0.5


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_contract_bad_shapes_and_dtypes(name):
    loss = LOSSES[name]
    z = torch.zeros(4, 3)
    t = torch.full((4, 3), 1 / 3)
    with pytest.raises(ValueError, match=r"targets.*shape of logits \(4, 3\).*\(4, 2\)"):
        loss(z, t[:, :2])
    with pytest.raises(ValueError, match="logits.*2-d"):
        loss(z[0], t[0])
    with pytest.raises(TypeError, match="logits.*floating"):
        loss(torch.zeros(4, 3, dtype=torch.int64), t)
    with pytest.raises(TypeError, match="targets.*floating"):
        loss(z, torch.zeros(4, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="logits.*non-empty"):
        loss(z[:0], t[:0])


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_contract_nan_logits_are_not_silent(name):
    z = torch.zeros(2, 3)
    z[1, 0] = float("nan")
    assert torch.isnan(LOSSES[name](z, torch.eye(3)[:2]))


def test_get_loss_unknown_lists_valid():
    assert get_loss("mse") is mse_loss and get_loss("l1") is l1_loss
    with pytest.raises(ValueError, match=r"'focal'.*ce, projection, log_projection, l1, mse"):
        get_loss("focal")
