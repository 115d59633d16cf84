"""The contract between a model and the trainer (pipeline/train.py).

A model is an `nn.Module` subclassing `MultimodalModel`:
- `forward(batch)` takes the batch dict the data loader gives (`text`, `audio`, `vision` as
  (B, L, d) float tensors with `<m>_len` lengths; `text_bert` (B, 3, T) token ids when the text
  encoder is fine-tuned) and returns a dict with at least
    "pred":     (B, out_dim) task output (out_dim 1 for MOSI/MOSEI regression,
                8 = 4 emotions x 2 for IEMOCAP),
  and where the model has them
    "unimodal": {modality: (B, out_dim)} unimodal predictions (OGM-GE, CP+SL, Self-MM use them),
    "features": {modality: (B, h)} per-modality utterance representations,
    "fused":    (B, h) the fused representation (t-SNE figure).
  The model never reads `batch["label"]` in forward: labels reach it only through
  `extra_losses`, which the trainer calls in training mode only.
- `extra_losses(out, batch, task, epoch)` returns the model's own loss terms as already weighted
  scalars, by name (the trainer adds them to the task loss and logs each; a non-finite one stops
  training naming the term).
- `modality_parameters()` maps each modality to the parameters of its own encoder: gradient
  balancing methods (SGM, OGM-GE, CP) scale these, and nothing else.
- `on_epoch_start(epoch, phase)` lets a model change behaviour between epochs (optional).
"""
from __future__ import annotations

import torch
from torch import nn

MODALITIES = ("text", "audio", "vision")


class MultimodalModel(nn.Module):
    modalities: tuple[str, ...] = MODALITIES

    def extra_losses(self, out: dict, batch: dict, task: str, epoch: int) -> dict[str, torch.Tensor]:
        return {}

    def modality_parameters(self) -> dict[str, list[nn.Parameter]]:
        encoders = getattr(self, "encoders", None)
        if encoders is None:
            return {}
        return {m: list(encoders[m].parameters()) for m in self.modalities}

    def on_epoch_start(self, epoch: int, phase: int = 1) -> None:
        pass


def task_loss(pred: torch.Tensor, label: torch.Tensor, task: str) -> torch.Tensor:
    """L1 on sentiment scores (MMSA's MOSI/MOSEI loss); for IEMOCAP a two-way cross-entropy per
    emotion, averaged over the four (MulT's)."""
    pred = pred.float()
    if task == "regression":
        return nn.functional.l1_loss(pred.view(-1), label.float().view(-1))
    return nn.functional.cross_entropy(pred.view(-1, 2), label.long().view(-1))


def out_dim_for(task: str) -> int:
    return 1 if task == "regression" else 8


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# The balancer interface lives with the balancers (pipeline/balancers/); re-exported here.
from pipeline.balancers.base import Balancer  # noqa: E402,F401
