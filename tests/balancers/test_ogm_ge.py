"""OGM-GE (pipeline/balancers/ogm_ge.py) against hand-computed cases and the original's rules."""
import math

import pytest
import torch
from torch import nn

from pipeline.balancers.ogm_ge import OGMGE, coefficients, unimodal_score
from pipeline.models.base import MultimodalModel
from pipeline.train import param_groups

MODS = ("text", "audio", "vision")
LN2 = 0.6931471805599453
K_RATIO2_ALPHA05 = 0.2384058440442351  # 1 - tanh(1), by hand: tanh(1) = 0.7615941559557649


def test_coefficient_is_the_current_original_for_the_dominant_only():
    # ratios: text 0.9 / mean(0.5, 0.4) = 2 -> 1 - tanh(0.5 * 2); the others keep 1
    k = coefficients({"text": 0.9, "audio": 0.5, "vision": 0.4}, alpha=0.5)
    assert k == pytest.approx({"text": K_RATIO2_ALPHA05, "audio": 1.0, "vision": 1.0})
    # two modalities at balance: the original still damps one of them by 1 - tanh(alpha)
    k = coefficients({"audio": 0.3, "vision": 0.3}, alpha=0.5)
    assert sorted(k.values()) == pytest.approx([1 - 0.46211715726000974, 1.0])
    # the (ratio - 1) form of the first commit would give 1 - tanh(0.5) = 0.538 at ratio 2: not it
    assert coefficients({"a": 2.0, "b": 1.0}, alpha=0.5)["a"] == pytest.approx(K_RATIO2_ALPHA05)


def test_scores():
    y = torch.tensor([1.0, -1.0])
    assert unimodal_score(torch.tensor([[1.0], [-1.0]]), y, "regression") == pytest.approx(1.0)
    # Laplace likelihood: errors 1 and 2 -> (e^-1 + e^-2) / 2
    assert unimodal_score(torch.tensor([[2.0], [1.0]]), y, "regression") == pytest.approx(
        (0.36787944117144233 + 0.1353352832366127) / 2)
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 2.0]])
    p = math.exp(2) / (math.exp(2) + 2)
    assert unimodal_score(logits, torch.tensor([0, 2]), "classification") == pytest.approx(p)
    iemo = torch.zeros(3, 8)  # IEMOCAP: 4 emotions x 2 outputs, (B, 4) labels
    assert unimodal_score(iemo, torch.randint(0, 2, (3, 4)), "classification") == pytest.approx(0.5)


class ConvModel(MultimodalModel):
    """Per-modality encoders with a conv kernel and a linear layer, and a shared head."""

    def __init__(self, c=4):
        super().__init__()
        torch.manual_seed(0)
        self.encoders = nn.ModuleDict({m: nn.Sequential(nn.Conv1d(c, c, 3), nn.Linear(c, c))
                                       for m in MODS})
        self.head = nn.Linear(c, 1)


def _setup(seed=0):
    model = ConvModel()
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=g)
    y = torch.tensor([[1.0], [0.5], [-1.0], [2.0]])
    # text exact (score 1), audio and vision off by ln 2 (score 1/2 each): text's ratio is 2
    out = {"unimodal": {"text": y.clone(), "audio": y + LN2, "vision": y - LN2}}
    return model, out, {"label": y.squeeze(1)}


def _adam_step(model, balancer, out, batch, lr=1e-2):
    opt = torch.optim.Adam(param_groups(model, lr), lr=lr)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    info = balancer.before_step(model, opt, out, batch, {}, 0) if balancer else {}
    opt.step()
    return {n: p.detach() - before[n] for n, p in model.named_parameters()}, info, opt


def test_dominant_encoder_step_shrinks_by_the_coefficient_under_adam():
    model, out, batch = _setup()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    step, info, opt = _adam_step(model, OGMGE(alpha=0.5, noise=False), out, batch)
    assert info["ogm_coeff_text"] == pytest.approx(K_RATIO2_ALPHA05)
    ref_model, _, _ = _setup()
    ref, _, _ = _adam_step(ref_model, None, out, batch)
    for n in step:
        factor = K_RATIO2_ALPHA05 if n.startswith("encoders.text.") else 1.0
        torch.testing.assert_close(step[n], factor * ref[n], rtol=1e-5, atol=1e-9)
        assert torch.equal(dict(model.named_parameters())[n].grad, grads[n])  # the gradient is not
    OGMGE(alpha=0.5).reset(opt)                                               # what is scaled
    assert all(g["lr"] == 1e-2 for g in opt.param_groups)


def test_scaling_the_gradient_instead_would_not_shrink_adams_step():
    """Why the update is modulated: Adam's first step is lr * sign(g), whatever the scale of g."""
    w1, w2 = torch.zeros(3, requires_grad=True), torch.zeros(3, requires_grad=True)
    o1, o2 = torch.optim.Adam([w1], lr=0.1), torch.optim.Adam([w2], lr=0.1)
    w1.grad = torch.tensor([1.0, -2.0, 3.0])
    w2.grad = K_RATIO2_ALPHA05 * w1.grad
    o1.step(), o2.step()
    torch.testing.assert_close(w1, w2)


def test_ge_noise_goes_on_conv_kernels_only_with_the_gradient_std():
    model = ConvModel(c=64)  # 12,288-entry kernels: the sample std is precise
    conv = [f"encoders.{m}.0.weight" for m in MODS]
    g = torch.Generator().manual_seed(1)
    for n, p in model.named_parameters():
        p.grad = torch.randn(p.shape, generator=g) * (3.0 if n in conv else 1.0)
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    _, out, batch = _setup()
    opt = torch.optim.SGD(param_groups(model, 0.1), lr=0.1)
    OGMGE(alpha=0.5, generator=torch.Generator().manual_seed(0)).before_step(model, opt, out, batch, {}, 0)
    for n, p in model.named_parameters():
        noise = p.grad - grads[n]
        if n in conv:  # every encoder, damped or not, gets noise of std(g) = 3
            assert noise.std().item() == pytest.approx(3.0, rel=0.03)
        else:
            assert torch.equal(noise, torch.zeros_like(noise))


def test_window_and_classification():
    model, out, batch = _setup()
    ogm = OGMGE(alpha=0.8, start=2, end=5, noise=False)
    assert [ogm.active(e) for e in range(7)] == [False, False, True, True, True, False, False]
    opt = torch.optim.Adam(param_groups(model, 1e-3), lr=1e-3)
    assert ogm.before_step(model, opt, out, batch, {}, 0) == {}
    assert all(grp["lr"] == 1e-3 for grp in opt.param_groups)
    labels = torch.randint(0, 2, (4, 4))
    onehot = torch.nn.functional.one_hot(labels, 2).float().reshape(4, 8) * 6
    out = {"unimodal": {"text": onehot, "audio": torch.zeros(4, 8), "vision": -onehot}}
    info = OGMGE(alpha=0.5, noise=False).before_step(model, opt, out, {"label": labels}, {}, 0)
    assert info["ogm_score_text"] > 0.99 and info["ogm_score_audio"] == pytest.approx(0.5)
    assert info["ogm_coeff_text"] < 1 and info["ogm_coeff_audio"] == 1.0
    lrs = {grp["name"]: grp["lr"] for grp in opt.param_groups}
    assert lrs["text"] == pytest.approx(1e-3 * info["ogm_coeff_text"]) and lrs["audio"] == 1e-3
