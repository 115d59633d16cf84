"""CP+SL: Conflict-aware Penalty and Statistical Loss, the second method this project reproduces.

Reference: Dai, Liang, Mai, "A Conflict-Aware Penalty and Statistical Loss Framework for Balancing
Modalities and Enhancing Stability in Multimodal Sentiment Analysis", arXiv:2605.28575 (2026).
Only the abstract is public (papers/cp-sl-abstract.txt). What it fixes: (a) adaptive modality
encoding, (b) gated cross-modal fusion with unimodal auxiliary heads, (c) a Statistical Loss (SL)
that "aligns predicted distribution statistics with empirical input statistics", (d) a
Conflict-aware Penalty (CP) that "detects and penalizes gradient norm conflicts at each training
step" and "prevents dominant modality gradients from interfering with the SL objective"; the
dominant modality is text. Everything else below is our design, taken from documented relatives
and written down so that it can be changed when the paper appears.
# UNVERIFIED: a secondary summary reports CMU-MOSI Acc-2 89.31 for CP+SL (and mentions a
# multiplicative penalty inside an epoch schedule, reconstruction and unimodal auxiliary losses).
# Not from the paper; nothing in this file depends on it.

(a) Adaptive modality encoding (`AdaptiveEncoder`, `self.encoders[m]`). The project's encoder of
    modality m (BiLSTM over aligned features, or fine-tuned BERT [CLS] for text) gives h_m; then
        a_m = LayerNorm(h_m),   s_m = 2 * sigmoid(W_s a_m + b_s),   e_m = s_m * a_m
    an input-dependent, per-feature scale in (0, 2) (squeeze-and-excitation, Hu et al. 2018; the
    sigmoid gates of the Gated Multimodal Unit, Arevalo et al. 2017). W_s, b_s start at zero, so
    s_m = 1 at initialisation (plain normalised encoding) and the model learns to amplify or damp
    each modality sample by sample. LayerNorm first puts the three modalities on one scale, which
    also makes the gradient norms that CP compares comparable. A modality of length 0 gives e_m = 0.
(b) Gated cross-modal fusion (`GatedFusion`): the GMU generalised to M modalities, with each
    modality's gate computed from all modalities (hence cross-modal):
        u_m = tanh(W_m e_m),   [z_1..z_M] = softmax_m(W_z [e_1; ..; e_M])  (per feature),
        f = sum_m z_m * u_m,   pred = MLP(f)
    An absent modality (length 0) gets gate 0. Unimodal auxiliary heads MLP_m(e_m) -> y_m (as in
    Self-MM, PaSE's live unimodal heads); their task losses are `extra_losses` "aux_<m>", weight `aux_weight`
    (0.5: below the fused task's 1, so the fused head stays the primary objective, large enough
    that the weak encoders get a direct signal). Utterance vectors rather than cross-modal
    attention over sequences: cheap, and the abstract names gating, not attention.
(c) Statistical Loss (`statistical_loss`): first and second moments of the batch's predictions
    matched to those of the labels (the "empirical statistics"; we read "input" as the training
    targets, the only empirical distribution a prediction can be compared with):
        SL = mean_k [ (mu_pred,k - mu_y,k)^2 + (sd_pred,k - sd_y,k)^2 ],  sd = sqrt(var_biased + 1e-6)
    over output columns k (regression: the score; IEMOCAP: P(emotion present) vs the 0/1 labels).
    It is exactly 0 when the batch mean and variance of the predictions equal the labels', > 0
    otherwise, and differentiable (the eps keeps sd's gradient finite for constant predictions).
    It is the distribution part of Lin's concordance (1 - CCC has exactly these two terms in its
    numerator) and counters the L1 regressor's shrinkage to the median: when text dominates,
    predictions collapse towards the mean and Acc-7 / Corr suffer. Weight `sl_weight` = 0.1 on the
    fused prediction; `sl_unimodal` (default 0) adds the same term on each unimodal head (off by
    default: it would force a modality that carries no signal to spread its predictions at random).
    `recon_weight` (default 0, from the unverified summary) adds an MSE reconstruction of each
    e_m (detached) from the fused f.
(d) Conflict-aware Penalty: a balancer, pipeline/balancers/cp.py (its docstring has every choice).
    It compares, on the dominant (text) encoder, the gradient of the fused task loss with that of
    SL (the terms "sl" and "sl_unimodal" below) and damps the task part when it outgrows SL's.
    The variant `cpsl` pairs this model with it (`balancer: cp`, window from `cp.start`/`cp.end`).

Output: {"pred", "unimodal": {m}, "features": {m: e_m}, "fused": f, "fusion_weights": (B, M) mean
gate per modality}.

Sizes (hidden h = 64, text 384 / audio 74 / vision 35, cached-vector path): 173,854 parameters
with the conv encoders (train.encoder: conv, the CPU default, as PaSE), 336,478 with BiLSTMs
(regression); with BERT for text the [CLS] projection replaces the text sequence encoder.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from pipeline.models.base import MultimodalModel
from pipeline.models.baselines._common import ordered_modalities
from pipeline.models.encoders import BertTextEncoder, ModalityEncoders

SD_EPS = 1e-6


def task_loss(pred: torch.Tensor, label: torch.Tensor, task: str) -> torch.Tensor:
    """The trainer's task loss: L1 for regression, per-emotion cross-entropy for IEMOCAP."""
    pred = pred.float()
    if task == "regression":
        return F.l1_loss(pred.view(-1), label.float().view(-1))
    return F.cross_entropy(pred.view(-1, 2), label.long().view(-1))


def statistical_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """SL over the batch (dim 0): mean over columns of (mu_p - mu_y)^2 + (sd_p - sd_y)^2.
    `pred`, `target`: (B,) or (B, k). Exactly 0 when the batch means and (biased) variances match."""
    pred = pred.float().reshape(pred.shape[0], -1)
    target = target.float().reshape(target.shape[0], -1).to(pred.device)
    mu_p, mu_y = pred.mean(0), target.mean(0)
    sd_p = torch.sqrt(((pred - mu_p) ** 2).mean(0) + SD_EPS)
    sd_y = torch.sqrt(((target - mu_y) ** 2).mean(0) + SD_EPS)
    return ((mu_p - mu_y) ** 2 + (sd_p - sd_y) ** 2).mean()


def sl_inputs(pred: torch.Tensor, label: torch.Tensor, task: str) -> tuple[torch.Tensor, torch.Tensor]:
    """What SL compares: the score for regression; P(present) per emotion for IEMOCAP."""
    if task == "regression":
        return pred.float().view(-1, 1), label.float().view(-1, 1)
    probs = torch.softmax(pred.float().view(pred.shape[0], -1, 2), dim=-1)[..., 1]
    return probs, label.float().view(pred.shape[0], -1)


class AdaptiveEncoder(nn.Module):
    """Encoder -> LayerNorm -> input-dependent per-feature scale 2*sigmoid(W a + b) (1 at init)."""

    def __init__(self, encoder: nn.Module, hidden: int):
        super().__init__()
        self.encoder = encoder
        self.norm = nn.LayerNorm(hidden)
        self.scale = nn.Linear(hidden, hidden)
        nn.init.zeros_(self.scale.weight)
        nn.init.zeros_(self.scale.bias)

    def forward(self, batch: dict, m: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if isinstance(self.encoder, BertTextEncoder):
            h = self.encoder(batch["text_bert"])
            present = batch["text_bert"][:, 1].sum(-1) > 0
        else:
            h = self.encoder(batch[m], batch[f"{m}_len"])
            present = batch[f"{m}_len"] > 0
        a = self.norm(h)
        s = 2 * torch.sigmoid(self.scale(a))
        return s * a * present.to(a.dtype).unsqueeze(-1), s, present


class GatedFusion(nn.Module):
    """GMU over M modalities with cross-modal gates: f = sum_m softmax_m(W_z [e_1..e_M])_m * tanh(W_m e_m)."""

    def __init__(self, modalities: tuple[str, ...], hidden: int):
        super().__init__()
        self.modalities = modalities
        self.value = nn.ModuleDict({m: nn.Linear(hidden, hidden) for m in modalities})
        self.gate = nn.Linear(hidden * len(modalities), hidden * len(modalities))

    def forward(self, e: dict[str, torch.Tensor], present: dict[str, torch.Tensor]):
        B, M = next(iter(e.values())).shape[0], len(self.modalities)
        logits = self.gate(torch.cat([e[m] for m in self.modalities], -1)).view(B, M, -1)
        absent = ~torch.stack([present[m] for m in self.modalities], 1)  # (B, M)
        logits = logits.masked_fill(absent.unsqueeze(-1), -1e4)
        z = torch.softmax(logits.float(), dim=1).to(logits.dtype)
        u = torch.stack([torch.tanh(self.value[m](e[m])) for m in self.modalities], 1)
        return (z * u).sum(1), z


def _mlp(hidden: int, out_dim: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, out_dim))


class CPSL(MultimodalModel):
    def __init__(self, dims: dict[str, int], out_dim: int, hidden: int = 64, dropout: float = 0.1,
                 bert: nn.Module | None = None, aux_weight: float = 0.5, sl_weight: float = 0.1,
                 sl_unimodal: float = 0.0, recon_weight: float = 0.0, encoder: str = "lstm",
                 text_pooling: str = "cls"):
        super().__init__()
        self.modalities = ordered_modalities(dims, "CP+SL")
        base = ModalityEncoders({m: dims[m] for m in self.modalities}, hidden, dropout, bert,
                                kind=encoder, pooling=text_pooling).encoders  # train.encoder, as PaSE's
        self.encoders = nn.ModuleDict({m: AdaptiveEncoder(base[m], hidden) for m in self.modalities})
        self.fusion = GatedFusion(self.modalities, hidden)
        self.head = _mlp(hidden, out_dim, dropout)
        self.aux_heads = nn.ModuleDict({m: _mlp(hidden, out_dim, dropout) for m in self.modalities})
        self.recon = (nn.ModuleDict({m: nn.Linear(hidden, hidden) for m in self.modalities})
                      if recon_weight > 0 else None)
        self.aux_weight, self.sl_weight = float(aux_weight), float(sl_weight)
        self.sl_unimodal, self.recon_weight = float(sl_unimodal), float(recon_weight)

    def forward(self, batch: dict) -> dict:
        e, present = {}, {}
        for m in self.modalities:
            e[m], _, present[m] = self.encoders[m](batch, m)
        fused, z = self.fusion(e, present)
        unimodal = {m: self.aux_heads[m](e[m]) for m in self.modalities}
        return {"pred": self.head(fused), "unimodal": unimodal, "features": e, "fused": fused,
                "fusion_weights": z.mean(-1)}

    def extra_losses(self, out: dict, batch: dict, task: str, epoch: int) -> dict[str, torch.Tensor]:
        y = batch["label"]
        losses = {f"aux_{m}": self.aux_weight * task_loss(out["unimodal"][m], y, task) for m in self.modalities}
        if self.sl_weight > 0:
            losses["sl"] = self.sl_weight * statistical_loss(*sl_inputs(out["pred"], y, task))
            if self.sl_unimodal > 0:
                terms = [statistical_loss(*sl_inputs(out["unimodal"][m], y, task)) for m in self.modalities]
                losses["sl_unimodal"] = self.sl_weight * self.sl_unimodal * torch.stack(terms).mean()
        if self.recon is not None:
            terms = [F.mse_loss(self.recon[m](out["fused"]).float(), out["features"][m].detach().float())
                     for m in self.modalities]
            losses["recon"] = self.recon_weight * torch.stack(terms).mean()
        return losses


def build(dims: dict[str, int], out_dim: int, hidden: int = 64, dropout: float = 0.1, *,
          bert: nn.Module | None = None, n_train: int | None = None, aux_weight: float = 0.5,
          sl_weight: float = 0.1, sl_unimodal: float = 0.0, recon_weight: float = 0.0,
          encoder: str = "lstm", text_pooling: str = "cls") -> CPSL:
    """The CP+SL model (regression or IEMOCAP). `n_train` is unused; CP is pipeline/balancers/cp.py."""
    return CPSL(dims, out_dim, hidden, dropout, bert=bert, aux_weight=aux_weight, sl_weight=sl_weight,
                sl_unimodal=sl_unimodal, recon_weight=recon_weight, encoder=encoder,
                text_pooling=text_pooling)

