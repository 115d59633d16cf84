"""Numerical safety on degenerate input: a modality of zeros, a class absent from a batch,
identical prototypes, degenerate Shapley values. Everything stays finite."""
import math

import pytest
import torch

from pipeline.balancers.sgm import modulation, shapley_values, subset_utility
from pipeline.models.ot import cal_loss
from pipeline.models.pase import PaSE

DIMS = {"text": 12, "audio": 5, "vision": 4}


def make_batch(n=16, L=5, zero=(), labels=None):
    g = torch.Generator().manual_seed(0)
    b = {m: (torch.zeros(n, L, d) if m in zero else torch.randn(n, L, d, generator=g)) for m, d in DIMS.items()}
    for m in DIMS:
        b[f"{m}_len"] = torch.zeros(n, dtype=torch.long) if m in zero else torch.full((n,), L)
    b["label"] = torch.linspace(-3, 3, n) if labels is None else labels
    return b


def finite_step(model, batch):
    out = model({k: v for k, v in batch.items() if k != "label"})
    terms = model.extra_losses(out, batch, "regression", 0)
    loss = torch.nn.functional.l1_loss(out["pred"].view(-1), batch["label"]) + sum(terms.values())
    loss.backward()
    assert torch.isfinite(loss), terms
    for name, p in model.named_parameters():
        assert p.grad is None or torch.isfinite(p.grad).all(), name
    return out, terms


@pytest.mark.parametrize("zero", [("vision",), ("audio", "vision")])
def test_modality_of_zeros_stays_finite(zero):
    torch.manual_seed(0)
    model = PaSE(DIMS, 1, "regression", n_classes=3, hidden=8)
    for _ in range(3):
        out, _ = finite_step(model, make_batch(zero=zero))
    assert torch.isfinite(model.prototypes).all()


def test_class_absent_from_batch_stays_finite():
    torch.manual_seed(0)
    model = PaSE(DIMS, 1, "regression", n_classes=3, hidden=8)
    only_positive = torch.full((16,), 2.0)
    out, terms = finite_step(model, make_batch(labels=only_positive))  # one class: nothing to align
    assert model.seen.tolist() == [False, False, True]
    finite_step(model, make_batch())  # then all three


def test_identical_prototypes_and_zero_prototypes():
    P = torch.ones(3, 8, requires_grad=True)
    for a, b in ((P, P), (torch.zeros(3, 8), torch.zeros(3, 8))):
        res = cal_loss(a, b)
        assert all(torch.isfinite(v) for v in res.values())


@pytest.mark.parametrize("intra", [
    {"text": 0.0, "audio": 0.0, "vision": 0.0},          # all equal and zero
    {"text": 1e9, "audio": 1e-9, "vision": 0.5},          # extreme
    {"text": 0.3, "audio": 0.3, "vision": 0.3},           # symmetric
])
def test_shapley_normalisation_finite(intra):
    inter = {frozenset(p): 0.0 for p in (("text", "audio"), ("text", "vision"), ("audio", "vision"))}
    psi = shapley_values(subset_utility(intra, inter, 0.5), list(intra))
    phi = modulation(psi)
    assert all(math.isfinite(v) and 0 < v <= 1 for v in phi.values())
    assert modulation({"text": 0.0, "audio": 0.0, "vision": 0.0}) == {"text": 1.0, "audio": 1.0, "vision": 1.0}
    assert all(0 < v <= 1 for v in modulation({"text": -0.2, "audio": 0.5, "vision": 0.1}).values())
