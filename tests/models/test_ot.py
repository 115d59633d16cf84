"""CAL's entropic OT (pipeline/models/ot.py): the plan against POT, the loss terms' properties,
gradients and degenerate inputs."""
import warnings

import numpy as np
import ot
import pytest
import torch

from pipeline.models.ot import cal_loss, cal_total, prototype_cost, sinkhorn_log

REGS = [0.01, 0.05, 0.1, 1.0]


def pot_plan(C, reg, a=None, b=None, n_iter=1000, tol=1e-9):
    K, L = C.shape
    a = np.full(K, 1 / K) if a is None else a
    b = np.full(L, 1 / L) if b is None else b
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "did not converge" at small reg is fine: same n_iter
        return ot.sinkhorn(a, b, C, reg, method="sinkhorn_log", numItermax=n_iter, stopThr=tol)


@pytest.mark.parametrize("reg", REGS)
@pytest.mark.parametrize("K", [2, 3, 4, 7])
def test_plan_equals_pot(K, reg):
    rng = np.random.default_rng(K * 100 + int(reg * 1000))
    C = rng.uniform(0, 4, (K, K))
    Q = sinkhorn_log(torch.tensor(C), reg, n_iter=1000, tol=1e-9)
    np.testing.assert_allclose(Q.numpy(), pot_plan(C, reg), atol=1e-5, rtol=0)


@pytest.mark.parametrize("reg", REGS)
def test_plan_equals_pot_nonuniform_marginals(reg):
    rng = np.random.default_rng(7)
    C = rng.uniform(0, 2, (4, 4))
    a, b = rng.dirichlet(np.ones(4)), rng.dirichlet(np.ones(4))
    Q = sinkhorn_log(torch.tensor(C), reg, a=torch.tensor(a), b=torch.tensor(b), n_iter=1000)
    np.testing.assert_allclose(Q.numpy(), pot_plan(C, reg, a, b), atol=1e-5, rtol=0)


@pytest.mark.parametrize("reg", REGS)
@pytest.mark.parametrize("K", [3, 7])
def test_batched_plan_equals_pot(K, reg):
    rng = np.random.default_rng(K + 1)
    C = rng.uniform(0, 4, (5, K, K))
    Q = sinkhorn_log(torch.tensor(C), reg, n_iter=1000)
    assert Q.shape == (5, K, K)
    for i in range(5):
        np.testing.assert_allclose(Q[i].numpy(), pot_plan(C[i], reg), atol=1e-5, rtol=0)


@pytest.mark.parametrize("reg", REGS)
def test_plan_marginals(reg):
    C = torch.rand(6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    a = torch.tensor([0.1, 0.2, 0.3, 0.1, 0.2, 0.1], dtype=torch.float64)
    for u, v in [(None, None), (a, a.flip(0))]:
        # at reg 0.01 plain Sinkhorn is still ~1e-5 off after 5000 iterations: the Newton finish
        Q = sinkhorn_log(C, reg, a=u, b=v, n_iter=200, newton=30)
        u = torch.full((6,), 1 / 6, dtype=torch.float64) if u is None else u
        v = torch.full((6,), 1 / 6, dtype=torch.float64) if v is None else v
        torch.testing.assert_close(Q.sum(1), u, atol=1e-7, rtol=0)
        torch.testing.assert_close(Q.sum(0), v, atol=1e-7, rtol=0)


def test_float32_small_reg_does_not_underflow():
    # exp(-C/0.01) underflows in float32 for C > ~1: the log domain must not
    C = torch.rand(5, 5, generator=torch.Generator().manual_seed(1)) * 4
    Q = sinkhorn_log(C, 0.01, n_iter=500)
    assert torch.isfinite(Q).all()
    torch.testing.assert_close(Q.sum(1), torch.full((5,), 0.2), atol=1e-4, rtol=0)


def protos(K, d=8, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(K, d, generator=g, dtype=dtype)


def test_prototype_cost_normalised_and_raw():
    P, R = protos(4, seed=0), protos(5, seed=1)
    C = prototype_cost(P, R)
    assert C.shape == (4, 5) and (C >= 0).all() and (C <= 4 + 1e-12).all()
    cos = torch.nn.functional.normalize(P, dim=1) @ torch.nn.functional.normalize(R, dim=1).T
    torch.testing.assert_close(C, 2 - 2 * cos)
    torch.testing.assert_close(prototype_cost(P, R, normalize=False), torch.cdist(P, R) ** 2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("K", [2, 3, 4, 7])
def test_consistency_term_is_zero_with_uniform_marginals(K, dtype):
    # the n -> m plan on C^T is the m -> n plan transposed: Eq. 7 vanishes by construction
    for seed in range(5):
        for d in (8, 64):
            out = cal_loss(protos(K, d, seed=seed, dtype=dtype),
                           protos(K, d, seed=seed + 10, dtype=dtype))
            assert out["reg"].item() < 1e-6


def test_newton_finish_solves_what_sinkhorn_converges_to():
    # where plain Sinkhorn converges (reg 0.1), the Newton finish changes nothing; at reg 0.01
    # it meets the marginals that 100 Sinkhorn iterations miss
    C = prototype_cost(protos(5, seed=11), protos(5, seed=12))
    torch.testing.assert_close(sinkhorn_log(C, 0.1, n_iter=2000, newton=30),
                               sinkhorn_log(C, 0.1, n_iter=2000), atol=1e-9, rtol=0)
    for seed in range(3):
        C = prototype_cost(protos(5, seed=seed), protos(5, seed=seed + 20))
        Q = sinkhorn_log(C, 0.01, n_iter=100, newton=30)
        assert (Q.sum(0) - 0.2).abs().max() < 1e-8 and (Q.sum(1) - 0.2).abs().max() < 1e-8
        # Q has the Gibbs form exp((f + g - C)/reg) by construction, so with its marginals met it
        # is Eq. 5's unique solution; plain Sinkhorn creeps towards that same plan
        gaps = [(sinkhorn_log(C, 0.01, n_iter=n) - Q).abs().max() for n in (100, 1000, 5000)]
        assert gaps[0] > gaps[1] > gaps[2]


def test_identity_prior_zero_for_matched_far_apart_prototypes():
    P = torch.eye(4, 8, dtype=torch.float64) * 3.0   # orthogonal: C = 0 on the diagonal, 2 off it
    out = cal_loss(P, P.clone(), reg=0.01)
    assert out["omega"].item() < 1e-10
    assert out["match"].item() < 1e-10
    # a permuted matching is penalised by the prior (its plan is a permutation, K·Q != I)
    out_perm = cal_loss(P, P[[1, 0, 2, 3]], reg=0.01)
    assert out_perm["omega"].item() == pytest.approx(4.0, abs=1e-6)


def test_total_combines_terms():
    out = cal_loss(protos(3, seed=0), protos(3, seed=1), alpha=0.1, beta=0.05)
    expected = out["match"] + 0.1 * out["reg"] + 0.05 * out["omega"]
    torch.testing.assert_close(out["total"], expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gradients_reach_prototypes(dtype):
    P_m = protos(4, seed=2, dtype=dtype).requires_grad_()
    P_n = protos(4, seed=3, dtype=dtype).requires_grad_()
    cal_loss(P_m, P_n)["total"].backward()
    for P in (P_m, P_n):
        assert torch.isfinite(P.grad).all() and P.grad.abs().sum() > 0


def degenerate_cases():
    same = protos(1, seed=4).repeat(4, 1)
    yield "identical prototypes", same, same.clone()
    yield "zeros", torch.zeros(4, 8, dtype=torch.float64), torch.zeros(4, 8, dtype=torch.float64)
    yield "huge", protos(4, seed=5) * 1e6, protos(4, seed=6) * 1e6


@pytest.mark.parametrize("reg", [0.01, 1.0])
def test_degenerate_prototypes_stay_finite(reg):
    for name, P_m, P_n in degenerate_cases():
        P_m, P_n = P_m.clone().requires_grad_(), P_n.clone().requires_grad_()
        out = cal_loss(P_m, P_n, reg=reg)
        for k, v in out.items():
            assert torch.isfinite(v), (name, k)
        out["total"].backward()
        assert torch.isfinite(P_m.grad).all() and torch.isfinite(P_n.grad).all(), name


@pytest.mark.parametrize("newton", [0, 30])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_degenerate_costs_stay_finite(dtype, newton):
    g = torch.Generator().manual_seed(0)
    for C in (torch.zeros(4, 4), torch.full((4, 4), 3.0), torch.rand(4, 4, generator=g) * 1e6,
              torch.rand(3, 4, 4, generator=g) * 1e4):
        C = C.to(dtype).requires_grad_()
        Q = sinkhorn_log(C, 0.01, newton=newton)
        assert torch.isfinite(Q).all()
        if dtype == torch.float64 or C.max() < 10:
            # (in float32, C/reg ~ 1e8 leaves no digits for the potentials: finite, not exact)
            torch.testing.assert_close(Q.sum(-1), torch.full(Q.shape[:-1], 0.25, dtype=dtype),
                                       atol=1e-4, rtol=0)
        (Q * C).sum().backward()
        assert torch.isfinite(C.grad).all()
    Q = sinkhorn_log(torch.zeros(4, 4), 0.01)   # all-equal costs: the uniform plan
    torch.testing.assert_close(Q, torch.full((4, 4), 1 / 16))


def test_present_mask_restricts_to_present_classes():
    P_m, P_n = protos(4, seed=7), protos(4, seed=8)
    present = torch.tensor([True, False, True, True])
    sub = cal_loss(P_m[[0, 2, 3]], P_n[[0, 2, 3]])
    # an absent class's prototype may be anything (here NaN): it must not leak in
    P_m[1] = float("nan")
    P_m.requires_grad_()
    out = cal_loss(P_m, P_n, present=present)
    for k in sub:
        torch.testing.assert_close(out[k], sub[k])
    out["total"].backward()
    assert torch.isfinite(P_m.grad).all() and (P_m.grad[1] == 0).all()


@pytest.mark.parametrize("n_present", [0, 1])
def test_fewer_than_two_present_classes_give_zero(n_present):
    P_m = protos(3, seed=9, dtype=torch.float32).requires_grad_()
    P_n = protos(3, seed=10, dtype=torch.float32)
    present = torch.tensor([True, False, False][:n_present] + [False] * (3 - n_present))
    out = cal_loss(P_m, P_n, present=present)
    for v in out.values():
        assert v.item() == 0 and v.dtype == torch.float32 and v.device == P_m.device
    out["total"].backward()   # usable as a loss term
    assert (P_m.grad == 0).all()


def test_cal_total_sums_pairs():
    prot = {m: protos(3, seed=i).requires_grad_()
            for i, m in enumerate(("text", "audio", "vision"))}
    total, per_pair = cal_total(prot)
    assert set(per_pair) == {frozenset(p) for p in
                             [("text", "audio"), ("text", "vision"), ("audio", "vision")]}
    torch.testing.assert_close(total, sum(d["total"] for d in per_pair.values()))
    pair = cal_loss(prot["text"], prot["vision"])
    torch.testing.assert_close(per_pair[frozenset(("vision", "text"))]["total"], pair["total"])
    total.backward()
    assert all(torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0 for p in prot.values())

    only, pp = cal_total(prot, pairs=[("text", "audio")])
    assert list(pp) == [frozenset(("text", "audio"))]
    zero, none = cal_total({"text": prot["text"]})
    assert zero.item() == 0 and none == {}

    # per-modality masks: a pair uses the classes present in both
    masks = {"text": torch.tensor([1, 1, 1]).bool(), "audio": torch.tensor([1, 0, 1]).bool(),
             "vision": torch.tensor([1, 1, 1]).bool()}
    _, pp = cal_total(prot, present=masks)
    sub = cal_loss(prot["text"][[0, 2]], prot["audio"][[0, 2]])
    torch.testing.assert_close(pp[frozenset(("text", "audio"))]["total"], sub["total"])


@pytest.mark.parametrize("reg", [0.01, 0.1])
def test_gradient_matches_finite_differences(reg):
    # the unrolled Sinkhorn + Newton graph gives the derivative of the solved plan's loss
    P, R = protos(3, 5, seed=1).requires_grad_(), protos(3, 5, seed=2)
    cal_loss(P, R, reg=reg)["total"].backward()
    fd, h = torch.zeros_like(P), 1e-5
    with torch.no_grad():
        for i in range(P.shape[0]):
            for j in range(P.shape[1]):
                E = torch.zeros_like(P)
                E[i, j] = h
                up, down = cal_loss(P + E, R, reg=reg), cal_loss(P - E, R, reg=reg)
                fd[i, j] = (up["total"] - down["total"]) / (2 * h)
    # (1e-3: the derivative of an early-stopped unrolled solve lags the iterate a little)
    assert (P.grad - fd).abs().max() < 1e-3 * fd.abs().max()
