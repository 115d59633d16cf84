"""CP, CP+SL's Conflict-aware Penalty (pipeline/balancers/cp.py): hand-computed gradients."""
import math

import pytest
import torch
from torch import nn

from pipeline.balancers.cp import ConflictAwarePenalty, penalty, window
from pipeline.models.base import MultimodalModel


class Linear3(MultimodalModel):
    modalities = ("text", "audio")
    """Encoders are single scalars w_m; the losses below are linear in them, so every gradient is
    known by hand."""

    def __init__(self):
        super().__init__()
        self.encoders = nn.ModuleDict({m: nn.Linear(1, 1, bias=False) for m in ("text", "audio")})
        self.head = nn.Linear(1, 1, bias=False)
        for p in self.parameters():
            nn.init.ones_(p)


def losses_for(model, task_coef, sl_coef, aux_coef):
    wt, wa = model.encoders["text"].weight.sum(), model.encoders["audio"].weight.sum()
    h = model.head.weight.sum()
    return {"task": task_coef * wt + wa + h,   # d/dw_t = task_coef
            "sl": sl_coef * wt + 2 * wa,        # d/dw_t = sl_coef
            "aux_text": aux_coef * wt}          # d/dw_t = aux_coef


def grads(model):
    return {n: float(p.grad) for n, p in model.named_parameters()}


def test_task_part_on_the_dominant_encoder_is_penalised_by_hand():
    model = Linear3()
    cp = ConflictAwarePenalty(alpha=0.5, start=0.0, end=1.0, epochs=10)
    cp.backward(model, losses_for(model, task_coef=3.0, sl_coef=1.0, aux_coef=0.5), epoch=0)
    info = cp.before_step(model, None, {}, {}, {}, 0)
    k = 1 - math.tanh(0.5 * (3.0 - 1.0))  # ratio |g_task| / |g_SL| = 3
    assert info["cp_ratio"] == pytest.approx(3.0) and info["cp_coef"] == pytest.approx(0.2384058440442351)  # 1 - tanh(1)
    g = grads(model)
    assert g["encoders.text.weight"] == pytest.approx(k * 3.0 + 1.0 + 0.5)  # SL and aux unscaled
    assert g["encoders.audio.weight"] == pytest.approx(1.0 + 2.0)  # not dominant: plain sum
    assert g["head.weight"] == pytest.approx(1.0)


def test_no_conflict_is_the_plain_sum():
    for task_coef, sl_coef in ((0.5, 1.0), (1.0, 1.0), (2.0, 0.0)):  # r < 1, r = 1, no SL signal
        model, ref = Linear3(), Linear3()
        cp = ConflictAwarePenalty(alpha=0.5, start=0.0, end=1.0, epochs=10)
        cp.backward(model, losses_for(model, task_coef, sl_coef, 0.5), epoch=0)
        sum(losses_for(ref, task_coef, sl_coef, 0.5).values()).backward()
        assert grads(model) == pytest.approx(grads(ref))
        assert cp.before_step(model, None, {}, {}, {}, 0)["cp_coef"] == 1.0


def test_penalty_reweights_sl_under_adam():
    """Adam cancels a common scale but not a change of the mix: the penalised step equals Adam's
    step on g_task + g_SL / k, not on g_task + g_SL."""
    def adam_step(g):
        w = torch.zeros(1, requires_grad=True)
        opt = torch.optim.Adam([w], lr=0.1)
        for gi in g:  # two steps, so the mix matters through the moments
            w.grad = torch.tensor([gi])
            opt.step()
        return float(w.detach())
    k = penalty(3.0, 0.5)
    mixed = adam_step([k * 3.0 + 1.0, k * -3.0 + 1.0])
    assert mixed == pytest.approx(adam_step([3.0 + 1.0 / k, -3.0 + 1.0 / k]))
    assert mixed != pytest.approx(adam_step([3.0 + 1.0, -3.0 + 1.0]), rel=1e-3)


def test_window_in_fractions_and_dominant_choice():
    assert window(0.0, 0.5, 8) == (0, 4) and window(0.0, 0.5, 200) == (0, 100)
    assert window(0.25, 1.0, 8) == (2, 8)
    cp = ConflictAwarePenalty(start=0.25, end=0.5, epochs=8)
    assert [cp.active(e) for e in range(8)] == [False, False, True, True, False, False, False, False]
    with pytest.raises(ValueError, match="fractions"):
        ConflictAwarePenalty(start=0.5, end=0.5, epochs=8)
    model = Linear3()
    with pytest.raises(ValueError, match="vision"):
        ConflictAwarePenalty(dominant="vision", end=1.0, epochs=2).backward(
            model, losses_for(model, 3.0, 1.0, 0.0), 0)
    # auto: audio's task gradient (1 per parameter) beats text's (0.2) -> audio is penalised
    model = Linear3()
    cp = ConflictAwarePenalty(alpha=0.5, dominant="auto", end=1.0, epochs=2)
    losses = losses_for(model, 0.2, 1.0, 0.0)
    losses["sl"] = losses["sl"] - 2 * model.encoders["audio"].weight.sum() + 0.25 * model.encoders["audio"].weight.sum()
    cp.backward(model, losses, 0)
    info = cp.before_step(model, None, {}, {}, {}, 0)
    assert info["cp_dominant_audio"] == 1.0 and info["cp_ratio"] == pytest.approx(4.0)
    assert grads(model)["encoders.audio.weight"] == pytest.approx(penalty(4.0, 0.5) * 1.0 + 0.25)
