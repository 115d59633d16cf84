"""MMPareto (Wei & Hu, "MMPareto: Boosting Multimodal Learning with Innocent Unimodal Assistance",
ICML 2024) as a `Balancer` on the PaSE backbone with SGM off (baseline `pase-mmpareto`).

Reference read: the paper's abstract and the authors' code (GeWu-Lab/MMPareto_ICML2024,
code/MMPareto.py and code/min_norm_solvers.py); nothing is copied from it.

The setting: every modality encoder θ_m is trained by two objectives, the multimodal one (through
the fusion) and its own unimodal one (a unimodal head on the encoder's output). Their gradients
w.r.t. θ_m can point in conflicting directions; MMPareto combines them per encoder.

Algorithm, one training step (`MMPareto.backward`, called by the trainer instead of
`sum(losses).backward()` while the balancer is active)
------------------------------------------------------------------------------------------------
1. Split the step's loss terms (the dict the trainer builds: "task" + the model's `extra_losses`):
   - unimodal terms U: the term named `unimodal` ("aux") and every `f"{unimodal}_<...>"`
     ("aux_text", ...); at least one is required.
   - multimodal objective L_mm: the terms named in `multimodal`; None (the default) means every
     term that is not unimodal, i.e. for PaSE "task" + "pcl" + "cal". Choice: PCL and CAL shape
     the encoders of the PaSE backbone as much as the task loss does (that is what `pase-no_sgm`
     trains), so the "multimodal objective" MMPareto protects is the backbone's whole own loss, and
     the unimodal assistance must not conflict with any of it. `multimodal=("task",)` takes the
     task loss alone; the remaining terms ("other", L_o) then reach every parameter unchanged,
     outside the Pareto step.
2. Gradients, by `torch.autograd.grad` over all trainable parameters (graph retained between calls):
   G_mm = ∇L_mm, G_u = ∇(Σ U) (and G_o = ∇L_o when there are other terms). Each unimodal head reads
   only its own modality's features, so the part of G_u on encoder m is exactly g_u^m = ∇_θm L_u^m:
   one backward pass gives every modality's unimodal gradient. (The encoders' parameter sets are
   disjoint — `modality_parameters()` — and the unimodal objective must reach them: if it reaches
   no encoder at all, e.g. PaSE's OGM-GE heads that read detached features, `backward` raises
   instead of silently training the uniform baseline.)
3. Per modality m, with g_mm, g_u the flattened (concatenated over θ_m's tensors) gradients,
   s = g_mm + g_u and cos = <g_mm, g_u> / (||g_mm|| ||g_u||):
   - cos ≥ 0 (no conflict), or either gradient is exactly 0 (no direction to conflict with):
         d = s                                   (the official code's equal weights 1/2, times 2)
   - cos < 0 (conflict): the two-task min-norm (MGDA) element of the segment [g_mm, g_u],
         w = <g_u - g_mm, g_u> / ||g_mm - g_u||² = (||g_u||² - <g_mm, g_u>) / ||g_mm - g_u||²,
     strictly inside (0, 1) under a conflict (so no clipping is ever needed), and
         u* = w g_mm + (1 - w) g_u,     d = ||s|| / ||2u*|| · 2u*
     i.e. the direction of u* with the magnitude of the summed gradient s. Direction: u* is the
     min-norm point of the convex hull, so <u*, g_mm> = <u*, g_u> = ||u*||² ≥ 0 — a common descent
     direction: to first order the step raises neither loss. Magnitude:
     the official code builds 2u* (the equal-weight case's scale) and, when the summed gradient
     is longer, rescales 2u* to the summed gradient's norm; since (g_mm + g_u)/2 lies on the same
     segment, ||2u*|| ≤ ||s|| always, so "rescale to ||s||" is exactly that rule and the Pareto
     step is never shorter than the uniform baseline's (the paper's "enhanced magnitude": MGDA's
     short steps lose SGD's generalising noise). One difference, chosen: the official code
     compares norms per parameter tensor, which rescales tensors by different factors and can
     break the common-descent property; here the norms are those of the whole encoder's flattened
     gradient (the same vectors the cosine and w use), so d keeps u*'s direction exactly.
     If g_mm and g_u are exactly opposite, u* = 0: no common descent direction exists (a Pareto-
     stationary point for this encoder) and d = 0 (the official code would divide 0 by 0).
   - finally d ← γ d. The official code multiplies every encoder gradient, conflicting or not, by
     γ = 1.5 (their SGD setup). Default here γ = 1: the trainer uses Adam, whose normaliser cancels
     a constant factor (it only changes the balance against Adam's weight decay and eps), so 1.5
     would change little but make "no conflict → the plain sum" untrue; `gamma` is configurable.
4. Gradients written, accumulated into `.grad` as `.backward()` would:
   encoder parameters of m: d (+ G_o on them, if there are other terms);
   every other parameter (fusion, gates, heads, unimodal heads): G_mm + G_u (+ G_o), i.e. the
   ordinary gradient of the full loss sum.
5. `before_step` changes nothing more and returns the step's log: per modality the cosine
   `mmpareto_cos_<m>`, `mmpareto_conflict_<m>` (1/0; its epoch mean is the conflict rate),
   `mmpareto_w_<m>` (the weight of the multimodal gradient: 0.5 without conflict, as the official
   k), and `mmpareto_scale_<m>` (||s|| / ||2u*||, 1 without conflict).

Window: active for epochs in [start, end) (0-based; end None: to the last epoch). Outside it the
trainer calls `sum(losses).backward()`: the uniform baseline (unimodal losses simply added).

Unimodal heads: they are the model's, not the balancer's (so they are saved in checkpoints, moved
to the device, counted and optimised with the model, and a resumed run equals an uninterrupted
one). For PaSE this needs its unimodal heads on NON-detached features (`PaSE(aux_heads=True,
aux_detach=False)`), with one term per modality "aux_<m>" at weight 1 (the official objective is
L_mm + Σ_m L_u^m); a single averaged "aux" term also works (its gradient on encoder m is then
L_u^m / M's).
Cost: two backward passes (G_mm through the whole model, G_u through heads and encoders; a third
for "other" terms) instead of one, plus a few dot products per encoder.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:  # torch is imported where it runs: declaring a balancer needs none
    import torch

from pipeline.fields import bounded

from .base import Balancer, BalancerSpec, epoch_window_check


def pareto_combine(g_mm: torch.Tensor, g_u: torch.Tensor, gamma: float = 1.0
                   ) -> tuple[torch.Tensor, dict[str, float]]:
    """Step 3 of the module doc for one encoder: flat gradients in, flat update direction out.

    Returns (d, info) with info = {"cos", "conflict", "w", "scale"}.
    """
    import torch
    s = g_mm + g_u
    n_mm, n_u = float(g_mm.norm()), float(g_u.norm())
    dot = float(torch.dot(g_mm.flatten(), g_u.flatten()))
    cos = dot / (n_mm * n_u) if n_mm > 0 and n_u > 0 else 0.0
    if cos >= 0.0:
        return gamma * s, {"cos": cos, "conflict": 0.0, "w": 0.5, "scale": 1.0}
    # conflict: dot < 0, so ||g_mm - g_u||² = n_mm² + n_u² - 2 dot > 0 and 0 < w < 1
    w = (n_u ** 2 - dot) / (n_mm ** 2 + n_u ** 2 - 2.0 * dot)
    pareto = 2.0 * (w * g_mm + (1.0 - w) * g_u)
    n_p = float(pareto.norm())
    if n_p == 0.0:  # exactly opposite gradients: Pareto-stationary, no common descent direction
        return torch.zeros_like(s), {"cos": cos, "conflict": 1.0, "w": w, "scale": 0.0}
    scale = float(s.norm()) / n_p  # >= 1: the sum's midpoint is on the segment
    return (gamma * scale) * pareto, {"cos": cos, "conflict": 1.0, "w": w, "scale": scale}


def _flat(grads: Iterable[torch.Tensor | None], params: list[torch.Tensor]) -> torch.Tensor:
    import torch
    return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1)
                      for g, p in zip(grads, params)])


def _accumulate(p: torch.nn.Parameter, g: torch.Tensor) -> None:
    if p.grad is None:
        p.grad = g.detach().clone()
    else:
        p.grad.add_(g.detach())


class MMPareto(Balancer):
    """MMPareto gradient integration per modality encoder (module doc).

    start, end: the epoch window [start, end), 0-based (end None: no end). gamma: the extra
    magnitude factor on the encoders' gradients (official code: 1.5; default 1). unimodal: the
    name (and "<name>_" prefix) of the unimodal loss terms. multimodal: the names of the terms
    forming the multimodal objective (None: every non-unimodal term).
    """

    name = "mmpareto"

    def __init__(self, start: int = 0, end: int | None = None, gamma: float = 1.0,
                 unimodal: str = "aux", multimodal: Iterable[str] | None = None):
        if gamma <= 0:
            raise ValueError(f"MMPareto: gamma must be > 0, got {gamma}")
        self.start, self.end, self.gamma = start, end, gamma
        self.unimodal = unimodal
        self.multimodal = None if multimodal is None else tuple(multimodal)
        self._info: dict[str, float] = {}

    def active(self, epoch: int) -> bool:
        return epoch >= self.start and (self.end is None or epoch < self.end)

    def split_terms(self, losses: dict) -> tuple[list[str], list[str], list[str]]:
        """(multimodal, unimodal, other) term names, step 1 of the module doc."""
        uni = [k for k in losses if k == self.unimodal or k.startswith(self.unimodal + "_")]
        if not uni:
            raise KeyError(f"MMPareto needs unimodal loss terms ({self.unimodal!r} or "
                           f"'{self.unimodal}_<modality>'); the step has {sorted(losses)}")
        if self.multimodal is None:
            mm = [k for k in losses if k not in uni]
        else:
            missing = [k for k in self.multimodal if k not in losses]
            if missing:
                raise KeyError(f"MMPareto: multimodal term(s) {missing} not among {sorted(losses)}")
            mm = [k for k in self.multimodal if k not in uni]
        other = [k for k in losses if k not in uni and k not in mm]
        if not mm:
            raise KeyError(f"MMPareto: no multimodal loss term among {sorted(losses)}")
        return mm, uni, other

    def backward(self, model, losses: dict, epoch: int) -> None:
        import torch
        mm, uni, other = self.split_terms(losses)
        encoders = {m: [p for p in ps if p.requires_grad]
                    for m, ps in model.modality_parameters().items()}
        encoders = {m: ps for m, ps in encoders.items() if ps}
        if not encoders:
            raise ValueError("MMPareto needs model.modality_parameters() (per-modality encoders)")
        enc_ids = {id(p) for ps in encoders.values() for p in ps}
        shared = [p for p in model.parameters() if p.requires_grad and id(p) not in enc_ids]
        enc_list = [p for ps in encoders.values() for p in ps]
        params = enc_list + shared

        def grads(loss, retain):
            return dict(zip(map(id, params), torch.autograd.grad(
                loss, params, retain_graph=retain, allow_unused=True)))

        g_mm = grads(sum(losses[k] for k in mm), True)
        g_u = grads(sum(losses[k] for k in uni), bool(other))
        g_o = grads(sum(losses[k] for k in other), False) if other else {}
        if all(g_u[id(p)] is None for p in enc_list):
            raise RuntimeError(
                f"MMPareto: the unimodal loss term(s) {uni} reach no encoder parameter; the "
                "unimodal heads must read non-detached encoder features (PaSE: aux_detach=False)")

        info = {}
        for m, ps in encoders.items():
            d, stats = pareto_combine(_flat((g_mm[id(p)] for p in ps), ps),
                                      _flat((g_u[id(p)] for p in ps), ps), self.gamma)
            offset = 0
            for p in ps:
                n = p.numel()
                g = d[offset:offset + n].view_as(p)
                offset += n
                if g_o.get(id(p)) is not None:
                    g = g + g_o[id(p)]
                _accumulate(p, g)
            info.update({f"mmpareto_{k}_{m}": v for k, v in stats.items()})
        for p in shared:
            parts = [g[id(p)] for g in (g_mm, g_u, g_o) if g and g[id(p)] is not None]
            if parts:
                _accumulate(p, sum(parts))
        self._info = info

    def before_step(self, model, optimizer, out, batch, losses, epoch) -> dict[str, float]:
        if not self.active(epoch):
            return {}
        info, self._info = self._info, {}
        return info


@dataclass
class MmparetoParams:
    """params.yaml `mmpareto:`: MMPareto on the PaSE backbone with SGM off (`pase-mmpareto`)."""

    gamma: float = bounded(1e-6, default=1.0)  # extra factor on encoder gradients (official code: 1.5)
    start_epoch: int = bounded(1, default=1)  # window [start_epoch, end_epoch], 1-based
    end_epoch: int | None = None  # None: to the last epoch


def _build(cfg, task: str) -> MMPareto:
    p = cfg.mmpareto
    return MMPareto(start=p.start_epoch - 1, end=p.end_epoch, gamma=p.gamma)


# "live" heads: each unimodal loss also trains its encoder (the unimodal assistance it integrates)
SPEC = BalancerSpec(name="mmpareto", display="MMPareto", build=_build, order=2, section="mmpareto",
                    params=MmparetoParams, check=epoch_window_check("mmpareto", "mmpareto"),
                    unimodal_heads="live", variant="pase-mmpareto",
                    summary="MMPareto's Pareto integration of multimodal and unimodal gradients")
