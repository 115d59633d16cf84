"""Shapley values and SGM (pipeline/balancers/sgm.py)."""
import copy
import math
from itertools import permutations

import pytest
import torch
from torch import nn

from pipeline.balancers.sgm import SGM, modulation, shapley_values, subset_utility, subsets
from pipeline.models.base import MultimodalModel

MODS = ("text", "audio", "vision")
fs = frozenset


def table(values: dict[str, float]) -> dict:
    """A utility table from {"ta": 0.5, ...} (letters: t, a, v)."""
    names = {"t": "text", "a": "audio", "v": "vision"}
    return {fs(names[c] for c in k): v for k, v in values.items()}


def shapley_by_permutations(utility, mods):
    """The textbook definition: average marginal contribution over all orderings."""
    psi = dict.fromkeys(mods, 0.0)
    orders = list(permutations(mods))
    for order in orders:
        S = fs()
        for m in order:
            before = utility.get(S, 0.0) if S else 0.0
            psi[m] += (utility.get(S | {m}, 0.0) - before) / len(orders)
            S = S | {m}
    return psi


# --------------------------------------------------------------------------- Shapley values

def test_subsets_enumerates_power_set():
    S = subsets(MODS)
    assert len(S) == 8 and len(set(S)) == 8 and S[0] == fs() and S[-1] == fs(MODS)
    assert len(subsets(["text", "audio"])) == 4


U = table({"t": 0.6, "a": 0.3, "v": 0.1, "ta": 0.7, "tv": 0.65, "av": 0.35, "tav": 0.8})


def test_shapley_matches_permutation_definition():
    psi = shapley_values(U, MODS)
    ref = shapley_by_permutations(U, MODS)
    for m in MODS:
        assert psi[m] == pytest.approx(ref[m], abs=1e-12)


def test_shapley_efficiency():
    psi = shapley_values(U, MODS)
    assert sum(psi.values()) == pytest.approx(U[fs(MODS)] - 0.0, abs=1e-12)
    # u(∅) is 0 whatever the table says
    assert shapley_values({**U, fs(): 5.0}, MODS) == psi


def test_shapley_symmetry():
    # audio and vision are interchangeable in this game
    u = table({"t": 0.5, "a": 0.2, "v": 0.2, "ta": 0.6, "tv": 0.6, "av": 0.3, "tav": 0.9})
    psi = shapley_values(u, MODS)
    assert psi["audio"] == pytest.approx(psi["vision"], abs=1e-12)


def test_shapley_null_player():
    # vision changes no coalition's utility
    u = table({"t": 0.5, "a": 0.2, "v": 0.0, "ta": 0.6, "tv": 0.5, "av": 0.2, "tav": 0.6})
    psi = shapley_values(u, MODS)
    assert psi["vision"] == pytest.approx(0.0, abs=1e-12)
    assert sum(psi.values()) == pytest.approx(0.6)


def test_shapley_with_tensor_utilities_and_missing_subset():
    u = {k: torch.tensor(v) for k, v in U.items()}
    psi = shapley_values(u, MODS)
    assert psi["text"].item() == pytest.approx(shapley_values(U, MODS)["text"])
    with pytest.raises(KeyError, match="lacks subset"):
        shapley_values({fs(["text"]): 1.0}, MODS)


def test_subset_utility_eq19():
    intra = {"text": 0.5, "audio": 1.0, "vision": 2.0}
    inter = {fs(["text", "audio"]): 0.2, fs(["text", "vision"]): 0.4, fs(["audio", "vision"]): 0.6}
    rho = 0.3
    u = subset_utility(intra, inter, rho)
    assert set(u) == set(subsets(MODS)) and u[fs()] == 0.0
    # singletons: no pair, no inter-modal term
    assert u[fs(["audio"])] == pytest.approx((1 - rho) / (1 + 1.0))
    assert u[fs(["text", "vision"])] == pytest.approx(rho / 1.4 + (1 - rho) / (1 + 1.25))
    assert u[fs(MODS)] == pytest.approx(rho / (1 + 1.2) + (1 - rho) / (1 + 3.5 / 3))
    # tensors are read as floats
    ut = subset_utility({m: torch.tensor(v, requires_grad=True) for m, v in intra.items()},
                        {p: torch.tensor(v) for p, v in inter.items()}, rho)
    assert all(isinstance(v, float) for v in ut.values())
    assert ut[fs(MODS)] == pytest.approx(u[fs(MODS)])
    with pytest.raises(KeyError, match="pair"):
        subset_utility(intra, {fs(["text", "audio"]): 0.2}, rho)
    with pytest.raises(ValueError, match="rho"):
        subset_utility(intra, inter, 1.5)


@pytest.mark.parametrize("rho", [0.0, 0.3, 0.5, 1.0])
def test_shapley_orders_modalities_by_their_losses(rho):
    # text has the lowest intra loss and the best-aligned pairs, vision the worst
    intra = {"text": 0.3, "audio": 0.8, "vision": 1.5}
    inter = {fs(["text", "audio"]): 0.2, fs(["text", "vision"]): 0.5, fs(["audio", "vision"]): 0.9}
    psi = shapley_values(subset_utility(intra, inter, rho), MODS)
    assert psi["text"] > psi["audio"] > psi["vision"]
    phi = modulation(psi)
    assert phi["vision"] == 1.0 and phi["text"] < phi["audio"] < 1.0


# --------------------------------------------------------------------------- Eq. 20

def test_modulation_eq20():
    psi = {"text": 0.5, "audio": 0.3, "vision": 0.2}
    phi = modulation(psi)
    total = sum(psi.values())
    lo = min(v / total for v in psi.values())
    for m, v in psi.items():
        assert phi[m] == pytest.approx(math.exp(lo / (v / total) - 1))
    assert phi["vision"] == 1.0 and 0 < phi["text"] < phi["audio"] < 1


@pytest.mark.parametrize("psi", [
    {"text": 0.5, "audio": 0.0, "vision": 0.2},        # a zero contribution
    {"text": 0.5, "audio": -0.3, "vision": 0.2},       # a negative one
    {"text": -0.1, "audio": -0.3, "vision": -0.2},     # all negative
    {"text": 1e-30, "audio": 0.0, "vision": -1e-30},   # all ~0
    {"text": 0.2, "audio": 0.2, "vision": 0.2},        # all equal
    {"text": float("nan"), "audio": 0.1, "vision": 0.2},
    {"text": float("inf"), "audio": 0.1, "vision": 0.2},
    {"text": 1e12, "audio": 1e-12, "vision": 0.3},
    {"text": 0.4},
])
def test_modulation_degenerate_inputs(psi):
    phi = modulation(psi)
    assert set(phi) == set(psi)
    assert all(math.isfinite(v) and 0 < v <= 1 for v in phi.values())
    assert max(phi.values()) == 1.0   # somebody keeps the full rate
    finite = [v for v in psi.values() if math.isfinite(v)]
    if len(finite) == len(psi) and max(abs(v) for v in finite) >= 1e-12:
        weakest = min(psi, key=psi.get)
        assert phi[weakest] == 1.0


def test_modulation_special_cases():
    assert modulation({"text": 0.0, "audio": 0.0}) == {"text": 1.0, "audio": 1.0}
    assert modulation({"text": 0.2, "audio": 0.2}) == {"text": 1.0, "audio": 1.0}
    assert modulation({"text": float("nan"), "audio": 0.2}) == {"text": 1.0, "audio": 1.0}
    # a zero / negative contribution is the weakest: it keeps its rate, the others are damped
    phi = modulation({"text": 0.5, "audio": -0.3, "vision": 0.2})
    assert phi["audio"] == 1.0 and phi["text"] < 1 and phi["vision"] < 1
    assert modulation({}) == {}


# --------------------------------------------------------------------------- SGM


class Tiny(MultimodalModel):
    """Three per-modality linear encoders and a shared head."""

    def __init__(self, d_in=4, h=3, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.encoders = nn.ModuleDict({m: nn.Linear(d_in, h) for m in MODS})
        self.head = nn.Linear(3 * h, 1)

    def forward(self, batch):
        feats = {m: torch.tanh(self.encoders[m](batch[m])) for m in MODS}
        return {"pred": self.head(torch.cat([feats[m] for m in MODS], -1)), "features": feats}


def make_optimizer(model, lr=1e-2):
    """Adam with one group per modality plus "shared", as the trainer builds it."""
    groups = [{"params": model.modality_parameters()[m], "name": m, "lr": lr, "base_lr": lr}
              for m in MODS]
    enc = {id(p) for ps in model.modality_parameters().values() for p in ps}
    groups.append({"params": [p for p in model.parameters() if id(p) not in enc],
                   "name": "shared", "lr": lr, "base_lr": lr})
    return torch.optim.Adam(groups)


def sgm_out():
    """Loss terms that give clearly different Shapley values (text strongest)."""
    intra = {"text": torch.tensor(0.3), "audio": torch.tensor(0.9), "vision": torch.tensor(1.6)}
    inter = {fs(["text", "audio"]): torch.tensor(0.2), fs(["text", "vision"]): torch.tensor(0.4),
             fs(["audio", "vision"]): torch.tensor(0.8)}
    return {"intra": intra, "inter": inter}


def batch_for(seed=0, n=8):
    g = torch.Generator().manual_seed(seed)
    b = {m: torch.randn(n, 4, generator=g, dtype=torch.float64) for m in MODS}
    b["label"] = torch.randn(n, 1, generator=g, dtype=torch.float64)
    return b


def test_sgm_step_scales_each_encoder_update_by_phi_under_adam():
    torch.set_default_dtype(torch.float64)
    try:
        model = Tiny()
    finally:
        torch.set_default_dtype(torch.float32)
    opt = make_optimizer(model)
    # a few ordinary steps first, so Adam's moments are not trivial
    for s in range(3):
        opt.zero_grad()
        out = model(batch_for(s))
        ((out["pred"] - batch_for(s)["label"]) ** 2).mean().backward()
        opt.step()
    model_b = copy.deepcopy(model)
    opt_b = make_optimizer(model_b)
    # (deepcopy: load_state_dict would share the moment tensors, and the first step would
    # update them for both)
    opt_b.load_state_dict(copy.deepcopy(opt.state_dict()))

    def grads(m):
        m.zero_grad()
        b = batch_for(99)
        ((m(b)["pred"] - b["label"]) ** 2).mean().backward()

    grads(model)
    grads(model_b)
    for p, q in zip(model.parameters(), model_b.parameters()):
        assert torch.equal(p.grad, q.grad)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}

    sgm = SGM(rho=0.5, start=0)
    info = sgm.before_step(model, opt, sgm_out(), batch_for(99), {}, epoch=0)
    phi = {m: info[f"phi_{m}"] for m in MODS}
    assert phi["vision"] == 1.0 and phi["text"] < phi["audio"] < 1.0
    opt.step()                                                 # with SGM
    SGM(rho=0.5, start=5).before_step(model_b, opt_b, sgm_out(), None, {}, epoch=0)  # inactive
    opt_b.step()                                               # without

    params_b = dict(model_b.named_parameters())
    for name, p in model.named_parameters():
        delta_sgm = p.detach() - before[name]
        delta_ref = params_b[name].detach() - before[name]
        assert delta_ref.abs().max() > 1e-6
        m = name.split(".")[1] if name.startswith("encoders.") else None
        factor = phi[m] if m else 1.0
        torch.testing.assert_close(delta_sgm, factor * delta_ref, atol=1e-6, rtol=0)
        if m:
            # the update itself is scaled, by exactly φ_m, not merely the gradient
            assert (delta_sgm - delta_ref).abs().max() > 1e-6 or phi[m] == 1.0
    # the shared group kept its rate, the modality groups have base_lr · φ_m
    for g in opt.param_groups:
        assert g["lr"] == pytest.approx(g["base_lr"] * phi.get(g["name"], 1.0))


def test_scaling_the_gradient_would_be_cancelled_by_adam():
    # why SGM scales the lr: a gradient scaled by φ gives (almost) the same Adam step
    w1, w2 = nn.Parameter(torch.ones(3)), nn.Parameter(torch.ones(3))
    o1, o2 = torch.optim.Adam([w1], lr=0.1), torch.optim.Adam([w2], lr=0.1)
    g = torch.tensor([0.3, -0.2, 0.1])
    w1.grad, w2.grad = g.clone(), 0.5 * g
    o1.step(), o2.step()
    torch.testing.assert_close(w1 - 1, w2 - 1, atol=1e-6, rtol=0)


def test_sgm_phases_and_reset(caplog):
    model = Tiny()
    opt = make_optimizer(model, lr=1e-3)
    sgm = SGM(rho=0.5)                      # phase 2 decided by the trainer
    assert not sgm.active(0) and not sgm.active(100)
    assert sgm.before_step(model, opt, sgm_out(), None, {}, epoch=10) == {}
    assert "enabled_from" in caplog.text    # called before phase 2 was set: not silent
    assert all(g["lr"] == 1e-3 for g in opt.param_groups)
    sgm.enabled_from(4)
    assert sgm.start_epoch == 4 and not sgm.active(3) and sgm.active(4) and sgm.active(9)
    assert sgm.before_step(model, opt, sgm_out(), None, {}, epoch=3) == {}
    info = sgm.before_step(model, opt, sgm_out(), None, {}, epoch=4)
    assert set(info) == {f"{k}_{m}" for k in ("shapley", "phi") for m in MODS}
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    assert lrs["shared"] == 1e-3 and lrs["vision"] == 1e-3 and lrs["text"] < lrs["audio"] < 1e-3
    sgm.reset(opt)
    assert all(g["lr"] == 1e-3 for g in opt.param_groups)
    # a single modality (Table 4's T, A, V rows): nothing to rebalance
    one = {"intra": {"text": torch.tensor(0.5)}, "inter": {}}
    info = SGM(start=0).before_step(model, opt, one, None, {}, 0)
    assert info == {"shapley_text": pytest.approx(0.5 / 1.5), "phi_text": 1.0}
    assert all(g["lr"] == 1e-3 for g in opt.param_groups)
    assert SGM(start=2).active(2) and not SGM(start=2).active(1)


def test_sgm_ema_smooths_shapley_values():
    model = Tiny()
    opt = make_optimizer(model)
    sgm = SGM(rho=0.5, start=0, ema=0.9)
    first = sgm.before_step(model, opt, sgm_out(), None, {}, 0)
    assert first["shapley_ema_text"] == first["shapley_text"]   # nothing to smooth yet
    flat = {"intra": {m: torch.tensor(1.0) for m in MODS},
            "inter": {fs(p): torch.tensor(0.5) for p in [("text", "audio"), ("text", "vision"),
                                                         ("audio", "vision")]}}
    second = sgm.before_step(model, opt, flat, None, {}, 0)
    for m in MODS:
        assert second[f"shapley_ema_{m}"] == pytest.approx(
            0.9 * first[f"shapley_{m}"] + 0.1 * second[f"shapley_{m}"])
    assert second["phi_text"] < 1.0   # the smoothed values still rank text first


def test_sgm_needs_loss_terms_and_validates():
    with pytest.raises(KeyError, match="intra"):
        SGM(start=0).before_step(Tiny(), make_optimizer(Tiny()), {"pred": None}, None, {}, 0)
    with pytest.raises(ValueError):
        SGM(rho=2.0)
    with pytest.raises(ValueError):
        SGM(ema=1.0)
