"""SGM, PaSE's balancer: exact Shapley values over modality subsets and the update modulation.

SGM, Shapley-based Gradient Modulation (pase-paper.txt, "Modality Balance Optimization Phase")
----------------------------------------------------------------------------------------------
- Eq. 18, exact Shapley values over all 2^M subsets of the modalities (M = 3: 8 subsets):
      ψ_m = Σ_{S ⊆ M \\ {m}} |S|! (k - |S| - 1)! / k! · [u(S ∪ {m}) - u(S)],   k = M,  u(∅) = 0.
- Eq. 19, the utility of a subset S:
      u(S) = ρ / (1 + L_inter^S) + (1 - ρ) / (1 + L_intra^S)
  L_intra^S: the mean of the modalities' intra-class losses (Eq. 3) over S; L_inter^S: the sum of
  the pairwise CAL losses (Eq. 9 restricted to the pairs inside S). Both are loss values the
  training step has already computed (the model puts them in `out["intra"]`, `out["inter"]`), so
  the 8 utilities cost no forward pass.
  Singletons: a single modality has no pair, so it has no inter-modal term to earn: u({m}) =
  (1 - ρ)/(1 + L_intra^m). Alternatives rejected: L_inter^{m} = 0 (u gains the full ρ/(1 + 0) = ρ
  for free, so every singleton looks perfectly aligned and joining any other modality lowers the
  inter part: cooperation would be scored as harmful); dropping the term and renormalising by
  1/(1 - ρ) (puts singletons on a different scale than pairs, again inflating them). With the
  chosen reading the inter-modal reward is earned from |S| = 2 on, as the alignment it measures.
  Because Eq. 9 is a sum, L_inter^S grows with the number of pairs (3 pairs for the full set),
  which is followed as written.
  ρ is not given in the paper; 0.5 (equal weight) is the default here.
- Ablations: SGM reads only the components the model has. "- PCL" (no intra-class loss): the
  model computes no L_intra and u(S) = ρ / (1 + L_inter^S) (singletons 0); "- CAL": no L_inter
  and u(S) = (1 - ρ) / (1 + L_intra^S). Only the ratios of ψ matter to φ (Eq. 20), so the dropped
  part is not renormalised. With neither, SGM has nothing to read and refuses.
- Eq. 20, normalisation and modulation:  ψ̃_m = ψ_m / Σ_k ψ_k,  φ_m = exp(ψ̃_min / ψ̃_m - 1).
  For positive ψ, φ ∈ (e^-1, 1]: the modality with the smallest contribution keeps its rate and
  stronger ones are damped (never by more than 1/e). The ratio is only meaningful for positive
  values, so: every ψ is first clamped to at least eps · max_k |ψ_k| (eps = 1e-3) — a zero or
  negative contribution counts as the weakest possible one (φ = 1 for it; the others get
  φ ≈ exp(-1 + tiny)) —; if all |ψ| are ~0 (below 1e-12) or any is not finite, there is no
  information and φ = 1 for all. φ is therefore always finite and in (0, 1].
- Eq. 21, θ^m ← θ^m - η φ_m ∂L/∂θ^m. Under Adam, multiplying the gradient by φ_m is cancelled by
  Adam's normaliser (m̂/√v̂ is scale-invariant), so SGM scales the *update* through the learning
  rate of the modality's parameter group: lr_m = base_lr · φ_m; the "shared" group keeps base_lr.
  For plain SGD the two are the same thing.
- Dual phase: SGM does nothing until `start_epoch` (fixed in the constructor, or set by the
  trainer with `enabled_from(epoch)` when phase 2 begins on a validation plateau; a call while it
  is still None logs one warning instead of failing silently); `reset` restores the base rates.
- Optional `ema` smoothing of ψ across steps (default: none, the paper's per-step values).
"""
from __future__ import annotations

import logging
import math
from itertools import combinations
from typing import Iterable


from .base import Balancer, BalancerSpec, reset_group_lr, scale_group_lr

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- Shapley values

def subsets(modalities: Iterable[str]) -> list[frozenset]:
    """All 2^M subsets of the modalities, by size then in the given order (∅ first)."""
    mods = list(modalities)
    return [frozenset(c) for r in range(len(mods) + 1) for c in combinations(mods, r)]


def shapley_values(utility: dict, modalities: Iterable[str]) -> dict:
    """Exact Shapley values (Eq. 18) of a utility table {frozenset: float | Tensor}.

    u(∅) is taken as 0 whatever the table says; every other subset must be in the table.
    """
    mods = list(modalities)
    k = len(mods)

    def u(S):
        if not S:
            return 0.0
        if S not in utility:
            raise KeyError(f"shapley_values: the utility table lacks subset {sorted(S)}")
        return utility[S]

    psi = {}
    for m in mods:
        others = [n for n in mods if n != m]
        total = 0.0
        for S in subsets(others):
            w = math.factorial(len(S)) * math.factorial(k - len(S) - 1) / math.factorial(k)
            total = total + w * (u(S | {m}) - u(S))
        psi[m] = total
    return psi


def _value(x) -> float:
    import torch
    return float(x.detach()) if torch.is_tensor(x) else float(x)


def subset_utility(intra: dict | None, inter: dict | None, rho: float,
                   modalities: Iterable[str] | None = None) -> dict[frozenset, float]:
    """Eq. 19 for every subset of the modalities: {frozenset: u(S)}, u(∅) = 0.

    intra: {m: intra-class loss (Eq. 3)}; inter: {frozenset({m, n}): CAL loss of the pair
    (Eq. 9's summand)}; floats or scalar tensors (read as floats: no graph is kept).
    Singletons earn no inter-modal term: u({m}) = (1 - ρ) / (1 + L_intra^m) (module doc).
    An ablated component is None and its part of u is dropped (module doc, "Ablations").
    modalities: default intra's keys (or the pairs' members when intra is None).
    """
    if not 0.0 <= rho <= 1.0:
        raise ValueError(f"subset_utility: rho must be in [0, 1], got {rho}")
    if intra is None and inter is None:
        raise KeyError("subset_utility: neither intra-class (PCL) nor inter-modal (CAL) losses: "
                       "SGM's utility (Eq. 19) has nothing to read")
    if modalities is not None:
        mods = list(modalities)
    elif intra is not None:
        mods = list(intra)
    else:
        mods = sorted({m for p in inter for m in p})
    intra = None if intra is None else {m: _value(v) for m, v in intra.items()}
    inter = None if inter is None else {frozenset(p): _value(v) for p, v in inter.items()}
    table = {}
    for S in subsets(mods):
        if not S:
            table[S] = 0.0
            continue
        u = 0.0
        if intra is not None:
            u += (1.0 - rho) / (1.0 + sum(intra[m] for m in S) / len(S))
        if inter is not None and len(S) >= 2:
            pairs = [frozenset(p) for p in combinations(sorted(S), 2)]
            missing = [sorted(p) for p in pairs if p not in inter]
            if missing:
                raise KeyError(f"subset_utility: no inter-modal loss for pair(s) {missing}")
            u += rho / (1.0 + sum(inter[p] for p in pairs))
        table[S] = u
    return table


def modulation(psi: dict, eps: float = 1e-3) -> dict[str, float]:
    """Eq. 20: φ_m = exp(ψ̃_min / ψ̃_m - 1) with ψ̃ = ψ / Σψ, in (0, 1], always finite.

    ψ is clamped to ≥ eps · max|ψ| first (zero / negative contributions count as the weakest);
    all ~0 or any non-finite value: φ = 1 for every modality (module doc).
    """
    vals = {m: _value(v) for m, v in psi.items()}
    if not vals:
        return {}
    scale = max(abs(v) for v in vals.values())
    if not all(math.isfinite(v) for v in vals.values()) or scale < 1e-12:
        return {m: 1.0 for m in vals}
    floor = eps * scale
    clamped = {m: max(v, floor) for m, v in vals.items()}
    total = sum(clamped.values())
    norm = {m: v / total for m, v in clamped.items()}
    lo = min(norm.values())
    return {m: math.exp(lo / v - 1.0) for m, v in norm.items()}


# --------------------------------------------------------------------------- SGM

class SGM(Balancer):
    """Shapley-based Gradient Modulation (PaSE phase 2): lr of modality m's group = base_lr · φ_m.

    rho: Eq. 19's balance between inter- and intra-modal utility. start: the epoch (0-based) phase
    2 begins, or None to let the trainer decide (`enabled_from(epoch)` on the validation plateau).
    ema: optional smoothing of ψ across steps, ψ ← ema · ψ_prev + (1 - ema) · ψ (None: none).
    eps: `modulation`'s floor.
    """

    name = "sgm"

    def __init__(self, rho: float = 0.5, start: int | None = None, ema: float | None = None,
                 eps: float = 1e-3):
        if not 0.0 <= rho <= 1.0:
            raise ValueError(f"SGM: rho must be in [0, 1], got {rho}")
        if ema is not None and not 0.0 <= ema < 1.0:
            raise ValueError(f"SGM: ema must be in [0, 1) or None, got {ema}")
        self.rho, self.ema, self.eps = rho, ema, eps
        self.start_epoch = start
        self._psi_ema: dict[str, float] | None = None
        self._warned = False

    def enabled_from(self, epoch: int) -> "SGM":
        """Phase 2 begins at `epoch` (the trainer calls this on the plateau)."""
        self.start_epoch = epoch
        return self

    def active(self, epoch: int) -> bool:
        return self.start_epoch is not None and epoch >= self.start_epoch

    def reset(self, optimizer) -> None:
        """Every group back to its base learning rate (the ψ smoothing is kept: the trainer
        resets after every epoch so that validation and checkpoints see the base rates)."""
        reset_group_lr(optimizer)

    def shapley(self, out: dict) -> dict[str, float]:
        """ψ from the loss terms the model put in `out` (no forward pass)."""
        if "intra" not in out and "inter" not in out:
            raise KeyError("SGM needs the model's out['intra'] = {modality: loss} and/or "
                           "out['inter'] = {frozenset({m, n}): loss} (PaSE provides them)")
        mods = list(out["features"]) if "features" in out else None
        table = subset_utility(out.get("intra"), out.get("inter"), self.rho, mods)
        return shapley_values(table, mods or [m for S in table for m in S if len(S) == 1])

    def before_step(self, model, optimizer, out, batch, losses, epoch) -> dict[str, float]:
        if not self.active(epoch):
            if self.start_epoch is None and not self._warned:
                # a trainer that gates phase 2 itself but never tells SGM would get a silent no-op
                log.warning("SGM.before_step called at epoch %d while phase 2 has not been set "
                            "(start_epoch is None): no modulation; call enabled_from(epoch) when "
                            "phase 2 begins", epoch)
                self._warned = True
            return {}
        psi = self.shapley(out)
        used = psi
        if self.ema is not None:
            prev = self._psi_ema
            used = psi if prev is None else {m: self.ema * prev.get(m, v) + (1 - self.ema) * v
                                             for m, v in psi.items()}
            self._psi_ema = used
        phi = modulation(used, self.eps)
        scale_group_lr(optimizer, phi)  # groups that are not a modality's ("shared") keep the base
        info = {f"shapley_{m}": v for m, v in psi.items()}
        if self.ema is not None:
            info.update({f"shapley_ema_{m}": v for m, v in used.items()})
        info.update({f"phi_{m}": v for m, v in phi.items()})
        return info


def _build(cfg, task: str) -> Balancer:
    return SGM(rho=cfg.sgm.rho) if cfg.sgm.enabled else Balancer()


# PaSE's own phase 2: its section `sgm` also holds the trainer's phase switch, which every run
# reads (pipeline/config.py SgmConfig, pipeline/effective.py)
SPEC = BalancerSpec(name="sgm", display="SGM", build=_build, order=0)
