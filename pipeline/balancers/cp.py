"""CP, the Conflict-aware Penalty of CP+SL (Dai, Liang, Mai 2026; papers/cp-sl-abstract.txt).

The abstract is all that is public. What it fixes, quoted: text "tends to dominate optimization
... inducing gradient norm conflicts"; CP "detects and penalizes gradient norm conflicts at each
training step"; "CP prevents dominant modality gradients from interfering with the SL objective".
Each choice below, and why:

- Which gradients. The conflict the abstract names is between the dominant modality's gradients
  and the SL objective. So, on the dominant modality's encoder θ_d (`modality_parameters()[d]`),
  CP computes two parameter gradients separately (`backward`, two autograd passes instead of
  one): g_task = ∇_θd L_task (the fused task loss, term "task") and g_SL = ∇_θd L_SL (the terms
  "sl" and "sl_unimodal" of pipeline/models/baselines/cpsl.py). Every other loss term (the
  unimodal auxiliary heads, reconstruction) is summed as usual, g_o.
- Which modality is dominant. `dominant="text"` (default): the abstract names text. `"auto"`:
  the modality whose encoder receives the largest task gradient per parameter (RMS, so that
  encoders of different sizes compare), measured each step.
- What a conflict is. A gradient-NORM conflict (the abstract's words; not a directional one as in
  PCGrad): the task gradient overrides SL on θ_d when r = ||g_task|| / ||g_SL|| > 1. r ≤ 1, or
  g_SL = 0 (no SL signal on θ_d, e.g. SL switched off), is no conflict.
- The penalty. Multiplicative (the secondary summary's word, unverified), OGM-GE's shape
  (Peng et al. 2022): k = 1 - tanh(α·(r - 1)) for r > 1, else 1, so k = 1 at parity and falls
  as the task gradient outgrows SL's. It multiplies the task gradient only:
      ∇θd ← k·g_task + g_SL + g_o,     every other parameter: the ordinary sum.
  So SL's gradient is never scaled; the dominant modality's task gradient is, on the steps where
  it would drown SL. Measured on the tests' small synthetic set (SL weight 0.1): r runs from ~2
  to ~150 (median ~9), so with α = 0.5 the task part on text is damped strongly and on many steps
  to ~0 (text then learns from SL and its unimodal head on those steps). α is the knob; no floor
  is added, since the abstract gives none.
- Under Adam. Adam is invariant to a common scale of the whole gradient, which is why scaling a
  whole encoder's gradient (the previous CP) did almost nothing. Scaling one component is not a
  common scale: Adam's update on k·g_task + g_SL + g_o equals its update on
  g_task + (g_SL + g_o)/k, i.e. the penalty multiplies the relative weight of SL (and the other
  terms) against the task loss on θ_d by exactly 1/k, under Adam as under SGD. That relative
  weight is what "SL is not overridden" asks for; no learning-rate trick is needed.
- When. Inside an epoch window given as fractions of the run, [start·E, end·E) with E =
  train.epochs (epochs 0-based): the same schedule at 8 CPU epochs and at 200 paper epochs.
  Default [0, 0.5): OGM-GE's published window (epochs 0-50 of 100). Outside it the trainer does
  the ordinary `sum(losses).backward()`.
- No GE noise: the abstract names a penalty only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal


from pipeline.errors import ConfigError
from pipeline.fields import bounded

from .base import Balancer, BalancerSpec

SL_TERMS = ("sl", "sl_unimodal")


def penalty(ratio: float, alpha: float) -> float:
    """k = 1 - tanh(α·(r - 1)) for r > 1, else 1."""
    return 1.0 if not ratio > 1.0 else 1.0 - math.tanh(alpha * (ratio - 1.0))


def window(start: float, end: float, epochs: int) -> tuple[int, int]:
    """Fractions of the run -> the 0-based epoch window [first, stop)."""
    if not 0.0 <= start < end <= 1.0:
        raise ValueError(f"CP: need 0 <= start < end <= 1 (fractions of the run), got {start}, {end}")
    return int(math.floor(start * epochs)), max(int(math.ceil(end * epochs)), 1)


def _norm(grads) -> float:
    return math.sqrt(sum(float(g.float().pow(2).sum()) for g in grads if g is not None))


class ConflictAwarePenalty(Balancer):
    """CP (module doc). alpha: penalty slope. start, end: the window as fractions of `epochs`.
    dominant: a modality name or "auto"."""

    name = "cp"

    def __init__(self, alpha: float = 0.5, start: float = 0.0, end: float = 0.5, epochs: int = 1,
                 dominant: str = "text"):
        if alpha <= 0:
            raise ValueError(f"CP: alpha must be positive, got {alpha}")
        self.alpha, self.dominant = float(alpha), dominant
        self.first, self.stop = window(start, end, epochs)
        self._info: dict[str, float] = {}

    def active(self, epoch: int) -> bool:
        return self.first <= epoch < self.stop

    def scales(self, modality: str | None) -> bool:
        return modality is not None and self.dominant in ("auto", modality)

    def _dominant(self, encoders: dict, g_task: dict) -> str:
        if self.dominant != "auto":
            if self.dominant not in encoders:
                raise ValueError(f"CP: dominant modality {self.dominant!r} is not among the model's "
                                 f"{sorted(encoders)}; use one of them or 'auto'")
            return self.dominant

        def rms(ps):
            n = sum(p.numel() for p in ps)
            return _norm(g_task[id(p)] for p in ps) / math.sqrt(max(n, 1))
        return max(encoders, key=lambda m: rms(encoders[m]))

    def backward(self, model, losses: dict, epoch: int) -> None:
        import torch
        encoders = {m: [p for p in ps if p.requires_grad]
                    for m, ps in model.modality_parameters().items()}
        encoders = {m: ps for m, ps in encoders.items() if ps}
        params = [p for p in model.parameters() if p.requires_grad]
        sl = [k for k in SL_TERMS if k in losses]
        other = [k for k in losses if k != "task" and k not in sl]

        def grads(names, retain):
            if not names:
                return {}
            g = torch.autograd.grad(sum(losses[k] for k in names), params,
                                    retain_graph=retain, allow_unused=True)
            return dict(zip(map(id, params), g))

        g_task = grads(["task"], True)
        g_sl = grads(sl, bool(other))
        g_o = grads(other, False)
        d = self._dominant(encoders, g_task)
        dom = {id(p) for p in encoders[d]}
        n_task = _norm(g_task.get(id(p)) for p in encoders[d])
        n_sl = _norm(g_sl.get(id(p)) for p in encoders[d])
        ratio = n_task / n_sl if n_sl > 0 else 0.0  # no SL signal on θ_d: nothing to override
        k = penalty(ratio, self.alpha)
        for p in params:
            parts = []
            for g, scale in ((g_task, k if id(p) in dom else 1.0), (g_sl, 1.0), (g_o, 1.0)):
                if g.get(id(p)) is not None:
                    parts.append(g[id(p)] * scale if scale != 1.0 else g[id(p)])
            if parts:
                total = sum(parts).detach()
                p.grad = total.clone() if p.grad is None else p.grad.add_(total)
        self._info = {f"cp_dominant_{m}": float(m == d) for m in encoders}
        self._info.update({"cp_ratio": ratio, "cp_conflict": float(ratio > 1.0), "cp_coef": k,
                           "cp_task_norm": n_task, "cp_sl_norm": n_sl})

    def before_step(self, model, optimizer, out, batch, losses, epoch) -> dict[str, float]:
        if not self.active(epoch):
            return {}
        info, self._info = self._info, {}
        return info


@dataclass
class CpParams:
    """params.yaml `cp:`: the Conflict-aware Penalty of CP+SL (variant `cpsl`; module doc)."""

    alpha: float = bounded(1e-6, default=0.5)  # penalty slope, 1 - tanh(alpha * (ratio - 1))
    start: float = bounded(0.0, 1.0, default=0.0)  # window [start, end) as fractions of train.epochs
    end: float = bounded(0.0, 1.0, default=0.5)  # OGM-GE's published window: epochs 0-50 of 100
    dominant: Literal["text", "audio", "vision", "auto"] = "text"  # the abstract names text


def _check(p: CpParams, epochs: int | None = None, variant: str | None = None) -> None:
    # a window [start, end) with start < end always holds an epoch of the run: only its order
    if epochs is None and p.end <= p.start:
        raise ConfigError(f"cp.end: {p.end} is not after cp.start {p.start}: the window "
                          "[start, end) (fractions of train.epochs) is empty, so CP+SL's penalty "
                          "would never act; allowed: 0 <= cp.start < cp.end <= 1")


def _build(cfg, task: str) -> ConflictAwarePenalty:
    p = cfg.cp
    return ConflictAwarePenalty(alpha=p.alpha, start=p.start, end=p.end, epochs=cfg.train.epochs,
                                dominant=p.dominant)


SPEC = BalancerSpec(name="cp", display="CP", build=_build, order=3, section="cp", params=CpParams,
                    check=_check)
