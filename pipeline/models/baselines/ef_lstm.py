"""EF-LSTM: early-fusion LSTM baseline.

Reference: the "EF-LSTM" baseline of Zadeh et al., "Memory Fusion Network for Multi-view
Sequential Learning" (AAAI 2018) and "Tensor Fusion Network for Multimodal Sentiment Analysis"
(EMNLP 2017), as run in MMSA (`EF_LSTM`): the word-aligned features of all modalities are
concatenated at every time step and one LSTM reads the joint sequence; its last state goes through
a small MLP head.

Shape (defaults, `hidden` = h = 64):
- per modality m: `LayerNorm(d_m) -> Linear(d_m, h)` applied to every time step (the
  modality's "encoder", `self.encoders[m]`);
- the per-step vectors of the present modalities are concatenated (M*h) and read by a
  unidirectional LSTM (`num_layers`, default 1, hidden h) over the true length, packed;
- head: Dropout -> Linear(h, h) -> ReLU -> Dropout -> Linear(h, out_dim) (MMSA's head).
Output: {"pred": (B, out_dim), "fused": (B, h) the LSTM's last state}. No unimodal heads.

Deviations, and why:
- A per-modality linear projection (no non-linearity) precedes the concatenation. The
  composition of this block-diagonal map with the LSTM's input weights is still one linear map of
  the concatenated per-step features, so the fusion stays early; the projections give each
  modality its own parameters, which the gradient balancers (SGM, OGM-GE, CP) need, and a
  LayerNorm per modality replaces MMSA's BatchNorm over the concatenation (batch-independent).
- Padding: a sample's sequence length is the longest of its modalities' lengths; every modality's
  steps beyond its own length enter as zeros, and the LSTM is packed, so padded positions never
  reach the state (MMSA runs the LSTM over the padded sequence). A sample whose modalities are all
  empty is run as one zero step.
- Unaligned data (each modality its own number of steps, e.g. MMSA's unaligned_50.pkl): MMSA
  runs EF-LSTM on its aligned file only (`need_data_aligned`); with one store per dataset we run
  it on what the store holds, the modalities' steps concatenated by position (step t of each
  modality, zeros past a modality's own length). This is early fusion without alignment; use an
  aligned file to compare with MMSA's EF-LSTM numbers.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from pipeline.models.base import MultimodalModel
from pipeline.models.baselines._common import length_mask, ordered_modalities


class EFLSTM(MultimodalModel):
    def __init__(self, dims: dict[str, int], out_dim: int, hidden: int = 64, dropout: float = 0.1,
                 num_layers: int = 1):
        super().__init__()
        self.modalities = ordered_modalities(dims, "EF-LSTM", minimum=1)
        self.encoders = nn.ModuleDict({
            m: nn.Sequential(nn.LayerNorm(dims[m]), nn.Linear(dims[m], hidden))
            for m in self.modalities
        })
        self.rnn = nn.LSTM(hidden * len(self.modalities), hidden, num_layers=num_layers,
                           batch_first=True, dropout=dropout if num_layers > 1 else 0.0)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, hidden), nn.ReLU(),
                                  nn.Dropout(dropout), nn.Linear(hidden, out_dim))

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        steps, lengths = [], []
        T = max(batch[m].shape[1] for m in self.modalities)  # unaligned data: the longest axis
        for m in self.modalities:
            x, n = batch[m], batch[f"{m}_len"].clamp(max=batch[m].shape[1])
            mask = length_mask(n, x.shape[1]).to(x.dtype)[..., None]
            h = self.encoders[m](x) * mask  # padded steps enter as zeros
            steps.append(nn.functional.pad(h, (0, 0, 0, T - x.shape[1])))
            lengths.append(n)
        x = torch.cat(steps, dim=-1)
        lens = torch.stack(lengths).max(0).values.clamp(min=1, max=x.shape[1]).cpu()
        packed = pack_padded_sequence(x, lens, batch_first=True, enforce_sorted=False)
        _, (hn, _) = self.rnn(packed)
        fused = hn[-1]
        return {"pred": self.head(fused), "fused": fused}


def build(dims: dict[str, int], out_dim: int, hidden: int = 64, dropout: float = 0.1,
          **kw) -> EFLSTM:
    return EFLSTM(dims, out_dim, hidden=hidden, dropout=dropout, **kw)
