"""OGM-GE (Peng et al., "Balanced Multimodal Learning via On-the-fly Gradient Modulation", CVPR 2022).

Read from the authors' current code (GeWu-Lab/OGM-GE_CVPR2022, main.py `train_epoch`, HEAD
343dc1d) and the paper; nothing is copied. What the original does, step by step, and what we do:

1. Scores. The original splits its final linear layer by modality (out_a = a·W_aᵀ + b/2, out_v
   likewise) and sums the softmax probability of the true class over the batch:
   s_m = Σ_i softmax(out_m)_i[y_i]. Here PaSE's fusion is not one linear layer, so each modality
   has its own linear head on its detached encoder output (`PaSE(aux_heads=True)`, trained by an
   "aux" term that reaches only the heads); s_m is the batch mean of the true-class probability
   (the mean, not the sum: the ratio is the same). IEMOCAP (4 emotions x 2 classes): per emotion,
   then averaged. Regression (MOSI/MOSEI) has no true-class probability; the analogue used is the
   likelihood of the true score under the distribution the task loss assumes: the L1 loss is the
   negative log-likelihood of a Laplace(ŷ, b = 1), so s_m = mean_i exp(-|ŷ_m,i - y_i|) in (0, 1]
   (1 at a perfect prediction, like a true-class probability of 1). The previous analogue
   1 / (1 + MAE) kept every ratio near 1.
2. Ratio. Original (two modalities): ratio_v = s_v / s_a, ratio_a = 1 / ratio_v. For M modalities:
   ρ_m = s_m / mean_{k≠m} s_k (the same for M = 2).
3. Coefficient. Original: if ratio_v > 1, coeff_v = 1 - tanh(α·relu(ratio_v)), coeff_a = 1; else
   coeff_a = 1 - tanh(α·relu(ratio_a)), coeff_v = 1. So exactly one modality, the one with the
   larger score, gets k = 1 - tanh(α·ρ) (relu is inert there since ρ > 0), the other k = 1. For M
   modalities: the dominant d = argmax_m ρ_m gets k_d = 1 - tanh(α·ρ_d) (when ρ_d ≥ 1 — always
   true of the largest ratio), every other modality 1. Paper Eq. 10 reads k = 1 - tanh(α·ρ) for
   ρ > 1, else 1: the same for ρ > 1; at exact balance (ρ = 1 for both) the code still damps one
   modality by 1 - tanh(α) and the paper damps none. We follow the code (the authors' current
   version; their first commit's `ratio - 1` form, which the project used before, is gone).
   Note the level: at balance k = 1 - tanh(α) (α = 0.1: 0.90; α = 0.8: 0.34), it is not 1.
4. Where it acts, and GE. Original: on every parameter whose name is in the audio or visual
   encoder and whose gradient is 4-D (the conv kernels of its ResNet-18s; biases, BatchNorm and
   linear layers are untouched), g ← k·g + N(0, (std(g) + 1e-8)²) with std taken from the
   unscaled gradient; the noise goes on both encoders, whichever was damped. Here: the
   convolution kernels (`nn.Conv1d/2d/3d` weights) of each modality encoder
   (`model.modality_parameters()`), with the same std rule. Encoders without convolutions (the
   BiLSTM, fine-tuned BERT) get no noise, as the original's linear and norm layers get none.
5. Optimizer. Original: SGD, lr 1e-3, momentum 0.9, weight decay 1e-4, where scaling the gradient
   scales the step. This trainer uses Adam for every method (a comparison holds everything but the
   compared part equal), and Adam cancels a gradient scale. So k is applied to the *update*: the
   learning rate of the dominant modality's optimizer group becomes base_lr·k for this step (as
   SGM does; `reset` restores it). Under SGD the two are the same except for the GE noise, which
   here is added to the unscaled gradient and is then scaled by k with it (original: not scaled);
   under Adam the noise's relative size is what matters, and it is the original's (std(g)).
6. Window. Original: `modulation_starts <= epoch <= modulation_ends`, 0-based, inclusive,
   defaults 0 and 50 of 100 epochs. Here [start, end) 0-based (the trainer passes ogm.start_epoch
   - 1 and ogm.end_epoch from the 1-based inclusive config).
7. α: required in the original, recommended 0.1 (VGGSound) and 0.8 (CREMA-D); params.yaml's
   `ogm.alpha`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where it runs: declaring a balancer needs none
    import torch
    from torch import nn

from pipeline.fields import bounded

from .base import Balancer, BalancerSpec, epoch_window_check, reset_group_lr, scale_group_lr

def unimodal_score(pred: torch.Tensor, label: torch.Tensor, task: str) -> float:
    """Batch score of one unimodal head (step 1 of the module doc).

    classification: mean softmax probability of the true class; `pred` (B, C) with integer labels
    (B,), or (B, E·C) with labels (B, E) for E tasks (IEMOCAP: E = 4, C = 2).
    regression: mean exp(-|pred - y|), the Laplace(ŷ, 1) likelihood of the true score.
    """
    import torch
    pred = pred.detach().float()
    if task == "regression":
        err = (pred.reshape(-1) - label.reshape(-1).float()).abs()
        return float(torch.exp(-err).mean())
    label = label.long()
    if label.dim() == 1:
        logits = pred.reshape(label.shape[0], 1, -1)
        label = label[:, None]
    else:
        logits = pred.reshape(label.shape[0], label.shape[1], -1)
    prob = logits.softmax(-1).gather(-1, label[..., None])
    return float(prob.mean())


def coefficients(scores: dict[str, float], alpha: float) -> dict[str, float]:
    """Steps 2-3: k = 1 - tanh(α·ρ_d) for the modality with the largest ratio, 1 for the others."""
    ratios = {}
    for m, s in scores.items():
        others = [v for n, v in scores.items() if n != m]
        ratios[m] = s / max(sum(others) / len(others), 1e-12) if others else 0.0
    coeff = {m: 1.0 for m in scores}
    if len(scores) > 1:
        d = max(ratios, key=ratios.get)
        coeff[d] = 1.0 - math.tanh(alpha * max(ratios[d], 0.0))
    return coeff


def conv_kernels(module: nn.Module) -> list[nn.Parameter]:
    """The convolution weights inside `module` (where the original adds the GE noise)."""
    from torch import nn
    return [m.weight for m in module.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) and m.weight.requires_grad]


class OGMGE(Balancer):
    """On-the-fly Gradient Modulation with Generalisation Enhancement (module doc).

    alpha: the tanh slope. start, end: the epoch window [start, end), 0-based (end None: no end).
    task: "regression" or "classification" (None: regression when the unimodal outputs have one
    column). noise: add the GE noise. generator: a torch.Generator for the noise (None: global RNG).
    """

    name = "ogm_ge"

    def __init__(self, alpha: float = 0.1, start: int = 0, end: int | None = None,
                 task: str | None = None, noise: bool = True,
                 generator: torch.Generator | None = None):
        if task not in (None, "regression", "classification"):
            raise ValueError(f"OGMGE: task must be 'regression' or 'classification', got {task!r}")
        self.alpha, self.start, self.end = alpha, start, end
        self.task, self.noise, self.generator = task, noise, generator

    def active(self, epoch: int) -> bool:
        return epoch >= self.start and (self.end is None or epoch < self.end)

    def coefficients(self, scores: dict[str, float]) -> dict[str, float]:
        return coefficients(scores, self.alpha)

    def _add_noise(self, model) -> None:
        import torch
        encoders = getattr(model, "encoders", None)
        if encoders is None:
            return
        with torch.no_grad():
            for m in model.modalities:
                for w in conv_kernels(encoders[m]):
                    if w.grad is None or w.grad.numel() < 2:
                        continue
                    std = float(w.grad.std()) + 1e-8  # of the unscaled gradient, as the original
                    dev = self.generator.device if self.generator is not None else w.grad.device
                    noise = torch.randn(w.grad.shape, generator=self.generator, dtype=w.grad.dtype,
                                        device=dev)
                    w.grad.add_(noise.to(w.grad.device) * std)

    def before_step(self, model, optimizer, out, batch, losses, epoch) -> dict[str, float]:
        if not self.active(epoch):
            return {}
        if "unimodal" not in out:
            raise KeyError("OGM-GE needs the model's unimodal predictions out['unimodal']")
        unimodal = out["unimodal"]
        task = self.task
        if task is None:
            first = next(iter(unimodal.values()))
            task = "regression" if first.shape[-1] == 1 else "classification"
        scores = {m: unimodal_score(unimodal[m], batch["label"], task) for m in unimodal}
        coeff = self.coefficients(scores)
        scale_group_lr(optimizer, coeff)
        if self.noise:
            self._add_noise(model)
        info = {f"ogm_coeff_{m}": k for m, k in coeff.items()}
        info.update({f"ogm_score_{m}": s for m, s in scores.items()})
        return info

    def reset(self, optimizer) -> None:
        reset_group_lr(optimizer)


@dataclass
class OgmParams:
    """params.yaml `ogm:`: OGM-GE on the PaSE backbone with SGM off (variant `pase-ogm_ge`)."""

    alpha: float = bounded(0.0, default=0.1)  # modulation strength: the dominant modality gets 1 - tanh(alpha * ratio)
    start_epoch: int = bounded(1, default=1)  # modulation window [start_epoch, end_epoch], 1-based
    end_epoch: int | None = None  # None: to the last epoch


def _build(cfg, task: str) -> OGMGE:
    p = cfg.ogm
    return OGMGE(alpha=p.alpha, start=p.start_epoch - 1, end=p.end_epoch, task=task)


SPEC = BalancerSpec(name="ogm_ge", display="OGM-GE", build=_build, order=1, section="ogm",
                    params=OgmParams, check=epoch_window_check("ogm", "ogm_ge"),
                    unimodal_heads="detached", variant="pase-ogm_ge",
                    summary="OGM-GE's gradient modulation")
