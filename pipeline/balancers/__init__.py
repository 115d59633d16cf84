"""Gradient balancers: interchangeable parts of the one trainer (BalanceBenchmark's shape).

Every balancer is a `Balancer` (base.py): `active(epoch)`, `backward(model, losses, epoch)` (the
ordinary summed backward unless a method needs per-term gradients), `before_step(...)` between
backward and the optimizer step, returning floats to log, and `reset(optimizer)` where it changes
learning rates. One file a method:

  sgm.py       PaSE's Shapley-based Gradient Modulation (update scaled per modality group)
  ogm_ge.py    OGM-GE (Peng et al. 2022), update-side coefficient + GE noise on conv kernels
  mmpareto.py  MMPareto (Wei & Hu 2024), Pareto integration of multimodal and unimodal gradients
  cp.py        CP+SL's Conflict-aware Penalty (task vs Statistical Loss on the dominant encoder)
"""
from __future__ import annotations

from .base import Balancer

NAMES = ("sgm", "ogm_ge", "mmpareto", "cp", "none")


def build(cfg, task: str) -> Balancer:
    """The balancer `cfg.balancer` names, from its params.yaml section (SGM: phase 2 of PaSE)."""
    name = cfg.balancer
    if name == "sgm" and cfg.sgm.enabled:
        from .sgm import SGM
        return SGM(rho=cfg.sgm.rho)
    if name == "ogm_ge":
        from .ogm_ge import OGMGE
        return OGMGE(alpha=cfg.ogm.alpha, start=cfg.ogm.start_epoch - 1, end=cfg.ogm.end_epoch,
                     task=task)
    if name == "mmpareto":
        from .mmpareto import MMPareto
        return MMPareto(start=cfg.mmpareto.start_epoch - 1, end=cfg.mmpareto.end_epoch,
                        gamma=cfg.mmpareto.gamma)
    if name == "cp":
        from .cp import ConflictAwarePenalty
        return ConflictAwarePenalty(alpha=cfg.cp.alpha, start=cfg.cp.start, end=cfg.cp.end,
                                    epochs=cfg.train.epochs, dominant=cfg.cp.dominant)
    return Balancer()
