"""Self-MM: self-supervised multi-task learning with generated unimodal labels.

Reference: Yu, Xu, Yuan, Wu, "Learning Modality-Specific Representations with Self-Supervised
Multi-Task Learning for Multimodal Sentiment Analysis", AAAI 2021 (code: thuiar/Self-MM, also
MMSA's `SELF_MM`). Read there, written here.

Model (Sec. 3.2 of the paper):
- one encoder per modality (`self.encoders[m]`, the project's shared encoders): BERT [CLS] or a
  BiLSTM over the cached word vectors for text, a BiLSTM for audio and vision, each -> h;
- multimodal task: F* = ReLU(W1 [h_t; h_a; h_v])  (the fused representation, `out["fused"]`),
  then ReLU(W2 .) and a linear output: y_m;
- unimodal tasks, one a modality: F_s = ReLU(W1_s h_s)  (`out["features"][s]`), then ReLU(W2_s .)
  and a linear output: y_s (`out["unimodal"][s]`).

Unimodal label generation (ULGM, Sec. 3.3): per training sample i (`batch["index"]`) the model
keeps its multimodal label y_m (the true label), a generated label y_s per modality, and the last
seen F*, F_s (buffers of `n_train` rows, saved with the model). Class centres are the means of the
stored representations of the samples with positive / negative labels of that space (y_m for the
fused space, the generated y_s for modality s: the paper's Eq. 4 and the official code; zero labels
in neither class, MMSA's `excludeZero`). For a representation F with centres C_p, C_n the relative
distance is
    alpha = (D_n - D_p) / (D_p + eps),  D_p = ||F - C_p||,  D_n = ||F - C_n||
(alpha grows as F gets closer to the positive centre). From alpha_m (fused) and alpha_s:
    y_s_hat = 0.5 * y_m * alpha_s / alpha_m  +  0.5 * (y_m + alpha_s - alpha_m),
clipped to [-H, H] (H = 3), i.e. the mean of the paper's ratio ("scaling") and difference
("shifting") rules. So a sample whose unimodal representation is relatively closer to the positive
centre than its fused one (alpha_s > alpha_m, with y_m, alpha_m > 0) gets y_s above y_m. The stored
label moves by momentum, y_s <- (n-1)/(n+1) y_s + 2/(n+1) y_s_hat with n the 1-based epoch, at every
step of every epoch after `warmup_epochs` (the paper and MMSA: from the second epoch).

Loss: L = |y_m_pred - y_m|  +  sum_s tanh(|y_s - y_m|) |y_s_pred - y_s|   (batch means); the
weights come from the stored labels (generated y_s vs y_m), as in the paper and its code, not from
the predictions, so they carry no gradient. In the warm-up epoch y_s = y_m and the weights are 0.
The trainer adds the first term (its L1 task loss); `extra_losses` returns the three unimodal
terms ("selfmm_text", ...). Order inside a step, as in MMSA: the loss reads the stored labels as
they were, then labels (with the centres of the previous step), representations and centres are
updated.

Sizes: MMSA (MOSI) uses BERT-base text (768), audio/video LSTM outputs 16/32, post-fusion 128,
post-text/audio/video 32/16/32. Here, scaled with `hidden` = h: every encoder outputs h,
post-fusion h, post-unimodal h // 2 (= 32 at h = 64). At h = 64 with text 384 / audio 74 /
vision 35 (cached-vector path): 120,638 parameters with the conv encoders (train.encoder: conv,
the CPU default, as PaSE), 283,262 with BiLSTMs.

Deviations, and why:
- Shared project encoders (BiLSTM, LayerNorm'd input projection) replace MMSA's unidirectional
  single-layer audio/video LSTMs; the BERT [CLS] state is projected to h (MMSA uses 768 as is).
- Labels reach the model only through `extra_losses`, so a sample's labels and representations
  are initialised the first time it is seen in training (MMSA fills every label before training)
  and the centres are means over the samples seen so far (MMSA's zero rows of unseen samples never
  matter there either, since label updates start in epoch 2, after every sample was seen).
- A class with no seen sample yet keeps its previous centre; labels are not updated until both
  centres of the fused space and of that modality exist.
- One optimizer step per batch with the trainer's optimizer (MMSA accumulates 4 batches and uses
  separate learning rates for BERT, audio, video and the rest).
- One dropout rate for all branches (MMSA sets one per branch).
- Regression only (the paper's ULGM needs a signed continuous label): IEMOCAP raises ValueError.
"""
from __future__ import annotations

import torch
from torch import nn

from pipeline.models.base import MultimodalModel
from pipeline.models.baselines._common import ordered_modalities
from pipeline.models.encoders import BertTextEncoder, ModalityEncoders

EPS = 1e-8


class SelfMM(MultimodalModel):
    def __init__(self, dims: dict[str, int], n_train: int, hidden: int = 64, dropout: float = 0.1,
                 bert: nn.Module | None = None, warmup_epochs: int = 1, H: float = 3.0,
                 exclude_zero: bool = True, encoder: str = "lstm", text_pooling: str = "cls"):
        super().__init__()
        self.modalities = ordered_modalities(dims, "Self-MM", minimum=1)
        if int(n_train) <= 0:
            raise ValueError(f"Self-MM: n_train (training samples) must be positive, got {n_train}")
        self.n_train, self.warmup_epochs = int(n_train), int(warmup_epochs)
        self.H, self.exclude_zero = float(H), bool(exclude_zero)
        # audio/vision (and frozen text) sequence encoders: train.encoder, as PaSE's (equal footing)
        self.encoders = ModalityEncoders({m: dims[m] for m in self.modalities}, hidden, dropout, bert,
                                         kind=encoder, pooling=text_pooling).encoders
        post_f, post_u = hidden, max(hidden // 2, 1)
        d_cat = hidden * len(self.modalities)
        self.fusion_1 = nn.Sequential(nn.Dropout(dropout), nn.Linear(d_cat, post_f), nn.ReLU())
        self.fusion_2 = nn.Sequential(nn.Linear(post_f, post_f), nn.ReLU(), nn.Linear(post_f, 1))
        self.uni_1 = nn.ModuleDict({m: nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, post_u), nn.ReLU())
                                    for m in self.modalities})
        self.uni_2 = nn.ModuleDict({m: nn.Sequential(nn.Linear(post_u, post_u), nn.ReLU(), nn.Linear(post_u, 1))
                                    for m in self.modalities})
        # ULGM state, one row a training sample (saved in checkpoints with the weights).
        self.names = ("fusion",) + self.modalities
        self.register_buffer("labels", torch.zeros(len(self.names), self.n_train))  # row 0: y_m
        self.register_buffer("seen", torch.zeros(self.n_train, dtype=torch.bool))
        self.register_buffer("bank_fusion", torch.zeros(self.n_train, post_f))
        for m in self.modalities:
            self.register_buffer(f"bank_{m}", torch.zeros(self.n_train, post_u))
        self.register_buffer("centre_pos", torch.zeros(len(self.names), max(post_f, post_u)))
        self.register_buffer("centre_neg", torch.zeros(len(self.names), max(post_f, post_u)))
        self.register_buffer("centre_ready", torch.zeros(len(self.names), 2, dtype=torch.bool))

    # ---- forward: features only, never the label ----
    def forward(self, batch: dict) -> dict:
        h = {}
        for m in self.modalities:
            enc = self.encoders[m]
            h[m] = enc(batch["text_bert"]) if isinstance(enc, BertTextEncoder) else enc(batch[m], batch[f"{m}_len"])
        fused = self.fusion_1(torch.cat([h[m] for m in self.modalities], dim=-1))
        feats = {m: self.uni_1[m](h[m]) for m in self.modalities}
        return {"pred": self.fusion_2(fused), "fused": fused, "features": feats,
                "unimodal": {m: self.uni_2[m](feats[m]) for m in self.modalities}}

    # ---- ULGM ----
    def _row(self, name: str) -> int:
        return self.names.index(name)

    def _bank(self, name: str) -> torch.Tensor:
        return getattr(self, f"bank_{name}")

    def _check_index(self, index: torch.Tensor) -> torch.Tensor:
        index = index.view(-1).long().to(self.labels.device)
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= self.n_train):
            raise IndexError(f"Self-MM: batch['index'] holds {int(index.min())}..{int(index.max())}, outside the "
                             f"training split's 0..{self.n_train - 1} (n_train given at build time)")
        return index

    @torch.no_grad()
    def init_labels(self, index: torch.Tensor, y: torch.Tensor) -> None:
        """Multimodal label of every sample in the batch; unimodal labels of first-seen samples."""
        index = self._check_index(index)
        y = y.view(-1).to(self.labels)
        new = ~self.seen[index]
        self.labels[0, index] = y
        if new.any():
            self.labels[1:, index[new]] = y[new].expand(len(self.names) - 1, -1)
            self.seen[index[new]] = True

    @torch.no_grad()
    def update_bank(self, fused: torch.Tensor, feats: dict[str, torch.Tensor], index: torch.Tensor) -> None:
        """Store this step's representations, then recompute the class centres (MMSA's order)."""
        index = self._check_index(index)
        self.bank_fusion[index] = fused.detach().to(self.bank_fusion)
        for m in self.modalities:
            self._bank(m)[index] = feats[m].detach().to(self._bank(m))
        for name in self.names:
            bank, r, d = self._bank(name), self._row(name), self._bank(name).shape[1]
            y = self.labels[r]  # each space is split by its own labels (Eq. 4; MMSA: label_map[mode])
            neg = self.seen & (y < 0)
            pos = self.seen & ((y > 0) if self.exclude_zero else (y >= 0))
            for k, mask, store in ((0, pos, self.centre_pos), (1, neg, self.centre_neg)):
                if mask.any():  # a class with no seen sample keeps its previous centre
                    store[r, :d] = bank[mask].mean(0)
                    self.centre_ready[r, k] = True

    def relative_distance(self, name: str, f: torch.Tensor) -> torch.Tensor:
        """alpha = (D_n - D_p) / (D_p + eps) of representations f (B, d) in space `name`."""
        r, d = self._row(name), f.shape[1]
        d_p = torch.linalg.vector_norm(f - self.centre_pos[r, :d], dim=-1)
        d_n = torch.linalg.vector_norm(f - self.centre_neg[r, :d], dim=-1)
        return (d_n - d_p) / (d_p + EPS)

    @torch.no_grad()
    def update_labels(self, fused: torch.Tensor, feats: dict[str, torch.Tensor], index: torch.Tensor,
                      epoch: int) -> None:
        """Momentum update of the unimodal labels of the batch's samples (0-based `epoch`)."""
        index = self._check_index(index)
        if not bool(self.centre_ready[0].all()):
            return
        n = epoch + 1  # the paper's 1-based epoch
        y_m = self.labels[0, index]
        a_m = self.relative_distance("fusion", fused.detach().float())
        for m in self.modalities:
            r = self._row(m)
            if not bool(self.centre_ready[r].all()):
                continue
            a_s = self.relative_distance(m, feats[m].detach().float())
            target = 0.5 * y_m * a_s / (a_m + EPS) + 0.5 * (y_m + a_s - a_m)
            target = target.clamp(-self.H, self.H)
            self.labels[r, index] = (n - 1) / (n + 1) * self.labels[r, index] + 2 / (n + 1) * target

    def unimodal_labels(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        index = self._check_index(index)
        return {m: self.labels[self._row(m), index].clone() for m in self.modalities}

    # ---- losses (training only) ----
    def extra_losses(self, out: dict, batch: dict, task: str, epoch: int) -> dict[str, torch.Tensor]:
        if task != "regression":
            raise ValueError(f"Self-MM supports regression (MOSI/MOSEI) only, not task {task!r}: its unimodal "
                             f"label generation needs a signed continuous sentiment label")
        if "index" not in batch:
            raise KeyError("Self-MM: the training batch has no 'index' (sample indices into the training split)")
        index = self._check_index(batch["index"])
        y = batch["label"].view(-1).float()
        self.init_labels(index, y)
        y_m = self.labels[0, index].clone()
        losses = {}
        for m in self.modalities:
            y_s = self.labels[self._row(m), index].clone()  # this step's targets, before the update
            w = torch.tanh((y_s - y_m).abs())
            pred = out["unimodal"][m].float().view(-1)
            losses[f"selfmm_{m}"] = (w * (pred - y_s).abs()).mean()
        if epoch >= self.warmup_epochs:
            self.update_labels(out["fused"], out["features"], index, epoch)
        self.update_bank(out["fused"], out["features"], index)
        return losses


def build(dims: dict[str, int], out_dim: int, hidden: int = 64, dropout: float = 0.1, *,
          n_train: int | None = None, bert: nn.Module | None = None, warmup_epochs: int = 1,
          H: float = 3.0, exclude_zero: bool = True, encoder: str = "lstm",
          text_pooling: str = "cls") -> SelfMM:
    """Self-MM for regression. `n_train`: size of the training split (the label buffers)."""
    if out_dim != 1:
        raise ValueError(f"Self-MM is a regression model (out_dim 1); got out_dim {out_dim} (IEMOCAP's "
                         f"classification is not supported: its unimodal label generation needs a signed "
                         f"continuous label)")
    if n_train is None:
        raise ValueError("Self-MM needs n_train= (the number of training samples) to size its per-sample "
                         "label buffers")
    return SelfMM(dims, n_train, hidden, dropout, bert=bert, warmup_epochs=warmup_epochs, H=H,
                  exclude_zero=exclude_zero, encoder=encoder, text_pooling=text_pooling)
