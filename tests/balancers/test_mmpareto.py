"""MMPareto (pipeline/balancers/mmpareto.py): the per-encoder Pareto integration, the ordinary
gradient elsewhere, training, the epoch window, and the contract with the model's unimodal heads."""
import copy

import pytest
import torch
from torch import nn

from pipeline.models.base import MultimodalModel, task_loss
from pipeline.balancers.mmpareto import MMPareto, pareto_combine

DIMS = {"text": 6, "audio": 4, "vision": 3}
H = 5


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


class Tiny(MultimodalModel):
    """Three linear encoders, a linear fusion head on their concatenation, linear unimodal heads
    reading the encoders' outputs (not detached), one loss term per unimodal head."""

    def __init__(self, out_dim=1, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.modalities = tuple(DIMS)
        self.encoders = nn.ModuleDict({m: nn.Linear(d, H) for m, d in DIMS.items()})
        self.head = nn.Linear(H * len(DIMS), out_dim)
        self.uni = nn.ModuleDict({m: nn.Linear(H, out_dim) for m in DIMS})

    def forward(self, batch):
        feats = {m: torch.tanh(self.encoders[m](batch[m])) for m in self.modalities}
        pred = self.head(torch.cat([feats[m] for m in self.modalities], -1))
        return {"pred": pred, "features": feats,
                "unimodal": {m: self.uni[m](feats[m]) for m in self.modalities}}

    def extra_losses(self, out, batch, task, epoch):
        return {f"aux_{m}": task_loss(out["unimodal"][m], batch["label"], task)
                for m in self.modalities}


def make_batch(n=48, seed=0, task="regression"):
    g = torch.Generator().manual_seed(seed)
    b = {m: torch.randn(n, d, generator=g) for m, d in DIMS.items()}
    score = b["text"][:, 0] + 0.5 * b["audio"][:, 1] - 0.3 * b["vision"][:, 2]
    if task == "regression":
        b["label"] = score
    else:  # IEMOCAP-shaped: 4 emotions x 2 classes
        b["label"] = torch.stack([(score > t).long() for t in (-0.5, 0.0, 0.3, 0.8)], 1)
    return b


def step_losses(model, batch, task="regression"):
    out = model(batch)
    losses = {"task": task_loss(out["pred"], batch["label"], task)}
    losses.update(model.extra_losses(out, batch, task, 0))
    return out, losses


def flat_grad(loss, params):
    gs = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1)
                      for g, p in zip(gs, params)]).double()


def flat_param_grad(params):
    return torch.cat([p.grad.reshape(-1) for p in params]).double()


def reference(g_mm, g_u):
    """The documented rule, written independently (float64)."""
    s = g_mm + g_u
    dot = torch.dot(g_mm, g_u)
    if dot >= 0:
        return s
    w = (g_u @ g_u - dot) / ((g_mm - g_u) @ (g_mm - g_u))
    p = 2 * (w * g_mm + (1 - w) * g_u)
    return p * s.norm() / p.norm()


def assert_vec_close(a, b, rel=1e-4):
    """Close as vectors: the Pareto point of nearly opposite gradients is a cancellation, so
    float32 (the model's) and float64 (the reference's) agree to ~1e-5 of the norm, not per entry."""
    assert float((a - b).norm()) <= rel * float(b.norm()) + 1e-9


def cos(a, b):
    return float(torch.dot(a, b) / (a.norm() * b.norm()))


def set_unimodal_heads(model, sign):
    """Labels far below every prediction make each L1 residual positive, so the gradients are
    linear in the head weights: g_mm on encoder m ∝ the fusion head's block for m, g_u ∝ the
    unimodal head's weights. sign=+1: unimodal head = 2 x fusion block (cos = 1, no conflict);
    sign=-1: minus twice the block plus a perturbation (a constructed conflict, cos < 0, where
    the unimodal gradient is the larger, as the paper observes)."""
    with torch.no_grad():
        for i, m in enumerate(model.modalities):
            block = model.head.weight[:, i * H:(i + 1) * H]
            if sign > 0:
                model.uni[m].weight.copy_(2 * block)
            else:
                pert = torch.linspace(-0.3, 0.3, H)[None] * block.abs().mean()
                model.uni[m].weight.copy_(-2 * block + pert)


# ----------------------------------------------------------------------- the combination rule

def test_pareto_combine_no_conflict_is_the_sum():
    a, b = torch.tensor([1.0, 2.0, 0.0]), torch.tensor([0.5, 0.0, 3.0])
    d, info = pareto_combine(a, b)
    torch.testing.assert_close(d, a + b)
    assert info["conflict"] == 0.0 and info["w"] == 0.5 and info["scale"] == 1.0
    d, _ = pareto_combine(a, b, gamma=1.5)
    torch.testing.assert_close(d, 1.5 * (a + b))
    d, info = pareto_combine(a, torch.zeros(3))  # a zero gradient has no direction: plain sum
    torch.testing.assert_close(d, a)
    assert info["cos"] == 0.0


def test_pareto_combine_conflict_random_pairs():
    g = torch.Generator().manual_seed(0)
    seen = 0
    for _ in range(200):
        a = torch.randn(20, generator=g, dtype=torch.float64) * torch.rand(1, generator=g, dtype=torch.float64) * 5
        b = torch.randn(20, generator=g, dtype=torch.float64)
        if torch.dot(a, b) >= 0:
            continue
        seen += 1
        d, info = pareto_combine(a, b)
        assert info["conflict"] == 1.0 and 0.0 < info["w"] < 1.0 and info["scale"] >= 1.0 - 1e-12
        # the min-norm point of the segment, by brute force over w
        ws = torch.linspace(0, 1, 20001, dtype=torch.float64)
        norms = (ws[:, None] * a + (1 - ws[:, None]) * b).norm(dim=1)
        assert abs(float(ws[norms.argmin()]) - info["w"]) < 2e-4
        torch.testing.assert_close(d, reference(a, b))
        torch.testing.assert_close(d.norm(), (a + b).norm())  # the summed gradient's magnitude
        # common descent direction: equal, non-negative inner products with both gradients
        assert torch.dot(d, a) >= 0 and torch.dot(d, b) >= 0
        torch.testing.assert_close(torch.dot(d, a), torch.dot(d, b))
    assert seen > 50


def test_pareto_combine_opposite_gradients_give_zero():
    a = torch.tensor([1.0, -2.0, 0.5])
    d, info = pareto_combine(a, -3 * a)
    assert info["conflict"] == 1.0
    torch.testing.assert_close(d, torch.zeros(3), atol=1e-6, rtol=0)


# ----------------------------------------------------------------------- on a model

def run_balancer(model, batch, balancer, epoch=0):
    out, losses = step_losses(model, batch)
    enc = model.modality_parameters()
    g_mm = {m: flat_grad(losses["task"], ps) for m, ps in enc.items()}
    g_u = {m: flat_grad(losses[f"aux_{m}"], ps) for m, ps in enc.items()}
    model.zero_grad(set_to_none=True)
    balancer.backward(model, losses, epoch)
    info = balancer.before_step(model, None, out, batch, losses, epoch)
    return losses, g_mm, g_u, info


def plain_grads(model, batch):
    other = copy.deepcopy(model)
    _, losses = step_losses(other, batch)
    other.zero_grad(set_to_none=True)
    sum(losses.values()).backward()
    return {n: p.grad.clone() for n, p in other.named_parameters()}


def test_no_conflict_encoder_gradient_is_the_sum():  # (a)
    model, batch = Tiny(), make_batch()
    batch["label"] = torch.full_like(batch["label"], -10.0)
    set_unimodal_heads(model, +1)
    plain = plain_grads(model, batch)
    _, g_mm, g_u, info = run_balancer(model, batch, MMPareto())
    for m, ps in model.modality_parameters().items():
        assert cos(g_mm[m], g_u[m]) > 0.99 and info[f"mmpareto_conflict_{m}"] == 0.0
        torch.testing.assert_close(flat_param_grad(ps), g_mm[m] + g_u[m])
    for n, p in model.named_parameters():  # = sum(losses).backward() everywhere
        torch.testing.assert_close(p.grad, plain[n])


def test_conflict_gives_rescaled_min_norm_combination():  # (b)
    model, batch = Tiny(), make_batch()
    batch["label"] = torch.full_like(batch["label"], -10.0)
    set_unimodal_heads(model, -1)
    losses, g_mm, g_u, info = run_balancer(model, batch, MMPareto())
    for m, ps in model.modality_parameters().items():
        assert cos(g_mm[m], g_u[m]) < -0.5 and info[f"mmpareto_conflict_{m}"] == 1.0
        d = flat_param_grad(ps)
        assert_vec_close(d, reference(g_mm[m], g_u[m]))
        torch.testing.assert_close(d.norm(), (g_mm[m] + g_u[m]).norm(), rtol=1e-5, atol=0)
        assert cos(d, g_mm[m]) >= 0 and cos(d, g_u[m]) >= 0  # Pareto: neither loss rises
        assert info[f"mmpareto_scale_{m}"] >= 1.0
    # first order, for real: a small step on the encoders alone lowers both kinds of loss
    enc = [p for ps in model.modality_parameters().values() for p in ps]
    with torch.no_grad():
        for p in enc:
            p -= 1e-2 * p.grad
    _, after = step_losses(model, batch)
    assert after["task"] < losses["task"]
    for m in DIMS:
        assert after[f"aux_{m}"] < losses[f"aux_{m}"]


def test_conflict_plain_sum_would_raise_a_loss():
    """Why it matters: in the constructed conflict the plain sum increases the multimodal loss."""
    model, batch = Tiny(), make_batch()
    batch["label"] = torch.full_like(batch["label"], -10.0)
    set_unimodal_heads(model, -1)
    _, losses = step_losses(model, batch)
    sum(losses.values()).backward()
    with torch.no_grad():
        for ps in model.modality_parameters().values():
            for p in ps:
                p -= 1e-2 * p.grad
    _, after = step_losses(model, batch)
    assert after["task"] > losses["task"]


@pytest.mark.parametrize("sign", [+1, -1])
def test_fusion_and_heads_get_the_ordinary_gradient(sign):  # (c)
    model, batch = Tiny(), make_batch()
    batch["label"] = torch.full_like(batch["label"], -10.0)
    set_unimodal_heads(model, sign)
    plain = plain_grads(model, batch)
    run_balancer(model, batch, MMPareto())
    enc = {id(p) for ps in model.modality_parameters().values() for p in ps}
    names = [n for n, p in model.named_parameters() if id(p) not in enc]
    assert any(n.startswith("head") for n in names) and any(n.startswith("uni") for n in names)
    for n, p in model.named_parameters():
        if id(p) not in enc:
            torch.testing.assert_close(p.grad, plain[n])


def test_other_terms_stay_outside_the_pareto_step():
    """multimodal=("task",): a further term's gradient is added to the encoders unchanged."""
    model, batch = Tiny(), make_batch()
    batch["label"] = torch.full_like(batch["label"], -10.0)
    set_unimodal_heads(model, -1)
    out, losses = step_losses(model, batch)
    losses["reg"] = 0.1 * sum(f.pow(2).mean() for f in out["features"].values())
    enc = model.modality_parameters()
    expect = {m: reference(flat_grad(losses["task"], ps), flat_grad(losses[f"aux_{m}"], ps))
              + flat_grad(losses["reg"], ps) for m, ps in enc.items()}
    model.zero_grad(set_to_none=True)
    MMPareto(multimodal=("task",)).backward(model, losses, 0)
    for m, ps in enc.items():
        assert_vec_close(flat_param_grad(ps), expect[m])
    # the default puts "reg" into the multimodal objective instead
    out, losses = step_losses(model, batch)
    losses["reg"] = 0.1 * sum(f.pow(2).mean() for f in out["features"].values())
    expect = {m: reference(flat_grad(losses["task"] + losses["reg"], ps),
                           flat_grad(losses[f"aux_{m}"], ps)) for m, ps in enc.items()}
    model.zero_grad(set_to_none=True)
    MMPareto().backward(model, losses, 0)
    for m, ps in enc.items():
        assert_vec_close(flat_param_grad(ps), expect[m])


@pytest.mark.parametrize("task", ["regression", "classification"])
def test_training_lowers_the_loss(task):  # (d)
    model = Tiny(out_dim=1 if task == "regression" else 8)
    batch = make_batch(n=96, task=task)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    bal = MMPareto()
    with torch.no_grad():
        _, start = step_losses(model, batch, task)
    conflicts = 0.0
    for _ in range(40):
        out, losses = step_losses(model, batch, task)
        opt.zero_grad(set_to_none=True)
        bal.backward(model, losses, 0)
        info = bal.before_step(model, opt, out, batch, losses, 0)
        conflicts += sum(v for k, v in info.items() if k.startswith("mmpareto_conflict_"))
        opt.step()
    with torch.no_grad():
        _, end = step_losses(model, batch, task)
    assert conflicts > 0  # both branches are exercised on real losses
    assert end["task"] < 0.8 * start["task"]
    assert sum(end.values()) < sum(start.values())
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_activity_window():  # (e)
    bal = MMPareto(start=2, end=4)
    assert [bal.active(e) for e in range(6)] == [False, False, True, True, False, False]
    assert MMPareto(start=1).active(100) and not MMPareto(start=1).active(0)
    # the trainer's rule: balancer.backward inside the window, plain backward outside it
    model, batch = Tiny(), make_batch()
    batch["label"] = torch.full_like(batch["label"], -10.0)
    set_unimodal_heads(model, -1)
    plain = plain_grads(model, batch)
    text_w = "encoders.text.weight"
    for epoch in range(6):
        out, losses = step_losses(model, batch)
        model.zero_grad(set_to_none=True)
        if bal.active(epoch):
            bal.backward(model, losses, epoch)
        else:
            sum(losses.values()).backward()
        info = bal.before_step(model, None, out, batch, losses, epoch)
        grad = dict(model.named_parameters())[text_w].grad
        if bal.active(epoch):
            assert info["mmpareto_conflict_text"] == 1.0
            assert not torch.allclose(grad, plain[text_w])
        else:
            assert info == {}
            torch.testing.assert_close(grad, plain[text_w])


# ----------------------------------------------------------------------- the contract

def test_missing_or_detached_unimodal_terms_fail_loudly():
    model, batch = Tiny(), make_batch()
    out, losses = step_losses(model, batch)
    with pytest.raises(KeyError, match="unimodal"):
        MMPareto().backward(model, {"task": losses["task"]}, 0)
    # heads on detached features: the unimodal objective reaches no encoder
    detached = {f"aux_{m}": task_loss(model.uni[m](out["features"][m].detach()), batch["label"],
                                      "regression") for m in DIMS}
    with pytest.raises(RuntimeError, match="aux_detach=False"):
        MMPareto().backward(model, {"task": losses["task"], **detached}, 0)


def pase_batch(n=24, L=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    dims = {"text": 6, "audio": 4, "vision": 3}
    b = {m: torch.randn(n, L, d, generator=g) for m, d in dims.items()}
    for m in dims:
        b[f"{m}_len"] = torch.randint(1, L + 1, (n,), generator=g)
    b["label"] = torch.linspace(-3, 3, n)
    return dims, b


def test_pase_detached_aux_heads_are_refused():
    """PaSE's OGM-GE heads read detached features: MMPareto says what to change."""
    from pipeline.models.pase import PaSE

    dims, b = pase_batch()
    torch.manual_seed(0)
    model = PaSE(dims, 1, "regression", n_classes=3, hidden=8, dropout=0.0, aux_heads=True,
                 cal_iter=10)
    out = model({k: v for k, v in b.items() if k != "label"})
    losses = {"task": task_loss(out["pred"], b["label"], "regression")}
    losses.update(model.extra_losses(out, b, "regression", 0))
    with pytest.raises(RuntimeError, match="aux_detach=False"):
        MMPareto().backward(model, losses, 0)


def test_pase_with_attached_aux_heads():
    """PaSE with unimodal heads on the live features (what aux_detach=False would give): the
    encoders get the Pareto combination of ∇(task + pcl + cal) and ∇aux, the rest the plain sum."""
    from pipeline.models.pase import PaSE

    class Attached(PaSE):
        def forward(self, batch):
            out = super().forward(batch)
            out["unimodal"] = {m: self.aux[m](out["features"][m]) for m in self.modalities}
            return out

    dims, b = pase_batch()
    torch.manual_seed(0)
    model = Attached(dims, 1, "regression", n_classes=3, hidden=8, dropout=0.0, aux_heads=True,
                     cal_iter=10)
    twin = copy.deepcopy(model)
    x = {k: v for k, v in b.items() if k != "label"}
    out = model(x)
    losses = {"task": task_loss(out["pred"], b["label"], "regression")}
    losses.update(model.extra_losses(out, b, "regression", 0))
    assert {"task", "pcl", "cal", "aux"} <= set(losses)
    enc = model.modality_parameters()
    mm = losses["task"] + losses["pcl"] + losses["cal"]
    expect = {m: reference(flat_grad(mm, ps), flat_grad(losses["aux"], ps)) for m, ps in enc.items()}
    model.zero_grad(set_to_none=True)
    bal = MMPareto()
    bal.backward(model, losses, 0)
    info = bal.before_step(model, None, out, b, losses, 0)
    assert set(info) == {f"mmpareto_{k}_{m}" for k in ("cos", "conflict", "w", "scale") for m in dims}
    for m, ps in enc.items():
        assert_vec_close(flat_param_grad(ps), expect[m])
    out2 = twin(x)
    losses2 = {"task": task_loss(out2["pred"], b["label"], "regression")}
    losses2.update(twin.extra_losses(out2, b, "regression", 0))
    sum(losses2.values()).backward()
    enc_ids = {id(p) for ps in enc.values() for p in ps}
    for (n, p), (_, q) in zip(model.named_parameters(), twin.named_parameters()):
        if id(p) not in enc_ids and q.grad is not None:
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-7)
