"""CGGM (Guo, Jin, Chen, Zhu, Wang, Zhang, Ding, "Classifier-guided Gradient Modulation for
Enhanced Multimodal Learning", NeurIPS 2024), on PaSE's backbone with SGM off (`pase-cggm`).

Read from the authors' current code (zrguo/CGGM, `src/msatrain.py` `train`, `models/msamodel.py`
`ClassifierGuided`, `src/eval_metrics.py` `cal_cos`, `train_eval_senti`; HEAD 21e428c) and the
paper; nothing is copied. What the original does each training step, and what we do:

1. Classifiers. One classifier per modality on the detached encoder outputs (a 2-layer transformer
   + projection + `out_layer`), trained by the sum of their task losses with their own Adam
   (lr 5e-4). Here: PaSE's unimodal heads on the detached utterance vectors (`unimodal_heads:
   "detached"`: one linear layer, which is its `out_layer`), trained by PaSE's "aux" term (the
   mean of the unimodal task losses; only the heads receive it) with the trainer's optimizer.
2. Coefficients from the change of each classifier's score. acc_m: the batch accuracy of
   classifier m (MOSI/MOSEI: sign agreement, (ŷ > 0) == (y > 0), zeros kept, as
   `train_eval_senti`; IEMOCAP: here each emotion's two-way accuracy averaged over the four, where
   the original's IEMOCAP head is one four-way classifier). d_m = acc_m - acc_m(previous step),
   D = sum_m d_m + 1e-8, coeff_m = (D - d_m) / D = 1 - d_m / D: a modality whose classifier
   improved most is slowed. The rule is the original's, with its 1e-8: when the changes nearly
   cancel (D ≈ 0) a coefficient can be very large or negative (logged as `cggm_coeff_<m>`).
3. Gradient modulation: every gradient of modality m's encoder (`model.modality_parameters()`;
   the original's `encoders.<i>`) is multiplied by coeff_m · ρ (`cggm.rho`, the original's `rou`,
   1.3), after the backward pass and before clipping and the step.
4. Direction term: L_gm = (sum_m |coeff_m| - sum_m coeff_m · cos_m) / M, with cos_m the cosine
   between classifier m's `out_layer.weight` and the fusion head's (PaSE's `head[-1].weight`),
   flattened. It is computed this step and added, times λ (`cggm.lam`, the original's `lamda`,
   0.2), to the next step's loss. As in the original's code the cosine is between the weights
   (`para`), not their gradients, whatever the variable names say; it trains the fusion head's
   output layer only, the classifier's side being detached (the original discards the gradient
   that reaches its classifiers: their optimizer zeroes it before their own backward).

Under Adam: the original trains with Adam (`--optim Adam`) and scales the gradient, as here.
Adam divides each step by the running RMS of the gradient, so a coefficient that stayed the same
from step to step would cancel; what acts is its change between steps (the moments mix steps
with different factors), its sign (a negative coefficient reverses the encoder's step) and the
gradient clipping after it (the original clips at 0.8; here `train.grad_clip`, the same for every
method). We keep the gradient scaling rather than moving it to the update (as OGM-GE and SGM do
here), so that the method acts as it did in its authors' runs.

Deviations, and why:
- The previous step's accuracies and L_gm start afresh each epoch (the original carries them
  across epochs): a run resumed from an epoch's checkpoint is then the same run as one never
  interrupted. The first step of each epoch takes d_m = acc_m, as the original's first step does.
- Window `cggm.start_epoch`..`end_epoch` (1-based, inclusive; default the whole run, as the
  original): outside it the trainer's plain step runs.
- No ReduceLROnPlateau, no DataParallel and the classifiers' own learning rate: the trainer's
  settings are every method's (a comparison holds everything but the balancer equal).
"""
from __future__ import annotations

from dataclasses import dataclass

from pipeline.fields import bounded

from .base import Balancer, BalancerSpec, epoch_window_check


def accuracy(pred, label, task: str) -> float:
    """A classifier's batch accuracy (step 2 of the module doc)."""
    if task == "regression":
        return float(((pred.detach().view(-1) > 0) == (label.view(-1) > 0)).float().mean())
    logits = pred.detach().view(pred.shape[0], -1, 2)
    return float((logits.argmax(-1) == label.view(pred.shape[0], -1).long()).float().mean())


def coefficients(acc: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    """coeff_m = (D - d_m) / D with d_m = acc_m - before_m, D = sum_m d_m + 1e-8."""
    diff = {m: acc[m] - before.get(m, 0.0) for m in acc}
    total = sum(diff.values()) + 1e-8
    return {m: (total - d) / total for m, d in diff.items()}


def direction_term(coeff: dict[str, float], cos: dict):
    """L_gm = (sum_m |coeff_m| - sum_m coeff_m cos_m) / M (a tensor, through cos)."""
    return (sum(abs(c) for c in coeff.values()) - sum(coeff[m] * cos[m] for m in coeff)) / len(coeff)


class CGGM(Balancer):
    """Classifier-guided gradient modulation (module doc). rho, lam: ρ and λ. start, end: the
    epoch window [start, end), 0-based (end None: no end). task: "regression" or
    "classification"."""

    name = "cggm"

    def __init__(self, rho: float = 1.3, lam: float = 0.2, start: int = 0, end: int | None = None,
                 task: str = "regression"):
        self.rho, self.lam, self.start, self.end, self.task = rho, lam, start, end, task
        self._epoch, self._before, self._l_gm = None, {}, None

    def active(self, epoch: int) -> bool:
        return epoch >= self.start and (self.end is None or epoch < self.end)

    def _at(self, epoch: int) -> None:
        if epoch != self._epoch:  # each epoch starts afresh (module doc, deviations)
            self._epoch, self._before, self._l_gm = epoch, {}, None

    def backward(self, model, losses: dict, epoch: int) -> None:
        self._at(epoch)
        total = sum(losses.values())
        if self._l_gm is not None:  # the previous step's direction term
            total = total + self.lam * self._l_gm
        total.backward()

    def before_step(self, model, optimizer, out, batch, losses, epoch) -> dict[str, float]:
        import torch
        self._at(epoch)
        heads, fusion = getattr(model, "aux", None), getattr(model, "head", None)
        if "unimodal" not in out or heads is None or fusion is None:
            raise KeyError("CGGM needs PaSE's unimodal heads (out['unimodal'], model.aux) and its "
                           "fusion head (model.head)")
        acc = {m: accuracy(out["unimodal"][m], batch["label"], self.task) for m in out["unimodal"]}
        coeff = coefficients(acc, self._before)
        self._before = acc
        fused = fusion[-1].weight.clone().reshape(-1)  # a copy: the step changes the weight in place
        cos = {m: torch.nn.functional.cosine_similarity(heads[m].weight.detach().reshape(-1), fused,
                                                        dim=0) for m in coeff}
        self._l_gm = direction_term(coeff, cos)
        for m, params in model.modality_parameters().items():
            for p in params:
                if p.grad is not None:
                    p.grad.mul_(coeff[m] * self.rho)
        info = {f"cggm_coeff_{m}": c for m, c in coeff.items()}
        info.update({f"cggm_acc_{m}": a for m, a in acc.items()})
        info["cggm_lgm"] = float(self._l_gm.detach())
        return info


@dataclass
class CggmParams:
    """params.yaml `cggm:`: CGGM on the PaSE backbone with SGM off (variant `pase-cggm`)."""

    rho: float = bounded(0.0, default=1.3)  # ρ, the gradient factor's scale (the original's rou)
    lam: float = bounded(0.0, default=0.2)  # λ, weight of the direction term L_gm (lamda)
    start_epoch: int = bounded(1, default=1)  # window [start_epoch, end_epoch], 1-based
    end_epoch: int | None = None  # None: to the last epoch


def _build(cfg, task: str) -> CGGM:
    p = cfg.cggm
    return CGGM(rho=p.rho, lam=p.lam, start=p.start_epoch - 1, end=p.end_epoch, task=task)


SPEC = BalancerSpec(name="cggm", display="CGGM", build=_build, order=4, section="cggm",
                    params=CggmParams, check=epoch_window_check("cggm", "cggm"),
                    unimodal_heads="detached", variant="pase-cggm",
                    summary="CGGM's classifier-guided gradient modulation")
