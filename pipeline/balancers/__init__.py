"""Gradient balancers: interchangeable parts of the one trainer (BalanceBenchmark's shape).

Every balancer is a `Balancer` (base.py): `active(epoch)`, `backward(model, losses, epoch)` (the
ordinary summed backward unless a method needs per-term gradients), `before_step(...)` between
backward and the optimizer step, returning floats to log, and `reset(optimizer)` where it changes
learning rates. One file a method, each declaring itself in `SPEC` (base.BalancerSpec: its
params.yaml section, checks, what it needs from the model, its variant and display name); this
package finds them, so a new balancer is its own file, its params section and its test (each
module's docstring names its paper, its authors' code and every deviation; sgm.py is PaSE's
Shapley-based Gradient Modulation).

Declaring a balancer imports no torch: the config (which every stage loads) is built from them.
"""
from __future__ import annotations

import importlib
import pkgutil

from .base import Balancer, BalancerSpec


def _discover() -> dict[str, BalancerSpec]:
    specs = []
    for info in pkgutil.iter_modules(__path__):
        if info.name != "base":
            spec = getattr(importlib.import_module(f".{info.name}", __name__), "SPEC", None)
            if isinstance(spec, BalancerSpec):
                specs.append(spec)
    return {s.name: s for s in sorted(specs, key=lambda s: s.order)}


SPECS = _discover()
NAMES = (*SPECS, "none")
VARIANTS = tuple(s.variant for s in SPECS.values() if s.variant)  # each on PaSE's backbone


def build(cfg, task: str) -> Balancer:
    """The balancer `cfg.balancer` names, from its params.yaml section (SGM: phase 2 of PaSE)."""
    spec = SPECS.get(cfg.balancer)
    return spec.build(cfg, task) if spec else Balancer()


def unimodal_heads(name: str) -> str | None:
    """What balancer `name` needs PaSE to build: None, or unimodal heads on "detached" or "live"
    encoder outputs."""
    spec = SPECS.get(name)
    return spec.unimodal_heads if spec else None
