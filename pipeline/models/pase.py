"""PaSE: Prototype-aligned Calibration and Shapley-based Equilibrium (AAAI 2026).

The paper's equations are the reference (pase-paper.txt); where they cannot be taken literally
the choice is made here and listed in docs/methods.md.

- Encoders: one per modality (pipeline/models/encoders.py) -> h^m (B, H).
- PCL (Eq. 1-3): K class prototypes per modality. Each training step the prototype of every class
  present in the batch becomes c <- gamma*c + (1-gamma)*mean_batch(h) (Eq. 2). The updated
  prototype keeps the gradient of its batch-mean term (the stored copy is detached), so the
  intra-class loss and the transport loss both train the encoders. L_intra^m (Eq. 3) is a
  cross-entropy over cosine similarities / tau against the prototypes.
- CAL (Eq. 4-9): entropic OT between the prototypes of every modality pair (pipeline/models/ot.py).
- Entropy weights (Eq. 10-11) and PGF (Eq. 12-13), label-free: Eq. 10 uses p(y_i | h_i) and
  Eq. 12 the prototype of the true class, which are unknown at test time. We use the modality's
  own class posterior q_i^m = softmax_k(cos(h_i^m, c_k^m) / tau) instead, in training and test
  alike: E_i^m = 1 - sum_k q_ik log q_ik (the expectation of Eq. 10's term under q), per sample so
  a prediction never depends on the rest of its batch; alpha_i = softmax_m(E_i^m) (Eq. 11); and
  the expected prototype c_hat_i^m = sum_k q_ik c_k^m stands for c_y^m in the gate (Eq. 12).
- Heads (Eq. 14, 16): a regression output for MOSI/MOSEI (scored on a continuous scale), four
  two-way classifiers for IEMOCAP; the trainer owns the task loss.
- L = L_task + mu * (sum_m alpha^m L_intra^m + L_inter) (Eq. 15, 17); alpha^m is the batch mean
  of the per-sample weights. alpha is detached once, where it is made (a weighting, not a path
  for gradients), so the gate (Eq. 12) and Eq. 17 treat it alike.
- Ablations (Table 3) remove exactly the named component: "- PCL" computes no intra-class loss
  (Eq. 3): no term, nothing in out["intra"], so SGM's utility reads CAL only; the running
  prototypes (Eq. 1-2) stay, since CAL and the gate read them. "- CAL" computes no transport loss
  and leaves out["inter"] out (SGM reads PCL only). "- PGF" removes the gates (entropy-weighted
  concatenation); sum / concat / attention replace PGF by that fusion. "- SGM" keeps every loss.
The per-modality intra losses and per-pair CAL losses are left in `out["intra"]`/`out["inter"]`
for SGM (pipeline/balancers/sgm.py), which needs nothing else to compute Shapley values.
"""
from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.models.base import MultimodalModel, task_loss
from pipeline.models.encoders import ModalityEncoders, encode

FUSIONS = ("pgf", "sum", "concat", "attention")


def prototype_classes(label: torch.Tensor, task: str, neutral_band: float) -> torch.Tensor:
    """Class index per sample: negative / neutral / positive for a sentiment score (neutral:
    |y| <= neutral_band, the scores Acc-7 rounds to 0 by default), the emotion for IEMOCAP."""
    if task == "regression":
        y = label.view(-1).float()
        return torch.where(y > neutral_band, 2, torch.where(y < -neutral_band, 0, 1)).long()
    return label.view(label.shape[0], -1).argmax(dim=1).long()


class PaSE(MultimodalModel):
    def __init__(self, dims: dict[str, int], out_dim: int, task: str, n_classes: int, *,
                 hidden: int = 64, dropout: float = 0.1, fusion: str = "pgf", pgf: bool = True,
                 pcl: bool = True, cal: bool = True, gamma: float = 0.98, tau: float = 0.1,
                 neutral_band: float = 0.5, cal_reg: float = 0.01, cal_alpha: float = 0.1,
                 cal_beta: float = 0.05, cal_iter: int = 100, mu: float = 0.1, bert=None,
                 aux_heads: bool = False, aux_detach: bool = True, encoder: str = "lstm",
                 text_pooling: str = "cls"):
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f"fusion {fusion!r}: allowed {FUSIONS}")
        self.modalities = tuple(dims)
        self.task, self.K, self.fusion_type, self.use_pgf = task, n_classes, fusion, pgf
        self.use_pcl, self.use_cal = pcl, cal
        self.gamma, self.tau, self.neutral_band, self.mu = gamma, tau, neutral_band, mu
        self.cal_kw = dict(reg=cal_reg, alpha=cal_alpha, beta=cal_beta, n_iter=cal_iter)
        M = len(self.modalities)
        self.encoders = ModalityEncoders(dims, hidden, dropout, bert=bert, kind=encoder,
                                         pooling=text_pooling).encoders
        # Prototypes are running averages (buffers), saved with the model and used at test time.
        self.register_buffer("prototypes", torch.zeros(M, n_classes, hidden))
        self.register_buffer("seen", torch.zeros(n_classes, dtype=torch.bool))
        self.gates = nn.ModuleDict({m: nn.Linear(2 * hidden, hidden) for m in self.modalities})
        if fusion == "attention":
            self.attn = nn.MultiheadAttention(hidden, num_heads=4 if hidden % 4 == 0 else 1,
                                              batch_first=True)
        fused_in = hidden if fusion in ("sum", "attention") else M * hidden
        self.ffn = nn.Sequential(nn.Linear(fused_in, hidden), nn.ReLU(), nn.Dropout(dropout))
        self.head = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, out_dim))
        # Unimodal heads for balancers that score modalities (a balancer's SPEC asks for them).
        # Detached: they measure each encoder without changing how PaSE trains it.
        self.aux = nn.ModuleDict({m: nn.Linear(hidden, out_dim) for m in self.modalities}) \
            if aux_heads else None
        # aux_detach=False ("live" heads): the heads read the live features, so each unimodal
        # loss also trains its encoder (unimodal assistance, integrated by the balancer).
        self.aux_detach = aux_detach

    # ------------------------------------------------------------------ forward (label-free)
    def posterior(self, h: torch.Tensor, protos: torch.Tensor) -> torch.Tensor:
        """q_ik = softmax_k(cos(h_i, c_k) / tau) over the classes seen so far."""
        sim = F.cosine_similarity(h[:, None, :], protos[None], dim=-1) / self.tau
        sim = sim.masked_fill(~self.seen[None], float("-inf")) if self.seen.any() else sim
        return sim.softmax(dim=-1)

    def forward(self, batch: dict) -> dict:
        feats = encode(self.encoders, batch)
        # A copy: extra_losses updates the running prototypes in place before backward runs.
        protos = self.prototypes.clone()
        q = {m: self.posterior(feats[m], protos[i]) for i, m in enumerate(self.modalities)}
        # Eq. 10-11, per sample: E = 1 - sum_k q log q; alpha = softmax over modalities.
        ent = torch.stack([1 - (q[m] * q[m].clamp_min(1e-12).log()).sum(-1) for m in self.modalities], 1)
        # A weighting, not a path for gradients: detached here, so Eq. 12's gate, "- PGF"'s
        # weighting and Eq. 17 all see the same constant alpha.
        alpha = ent.softmax(dim=1).detach()  # (B, M)
        parts = []
        gates = {}
        for i, m in enumerate(self.modalities):
            h = feats[m]
            if self.fusion_type == "pgf":
                if self.use_pgf:
                    c_hat = q[m] @ protos[i]  # expected prototype under q (Eq. 12's c_y)
                    g = torch.sigmoid(self.gates[m](torch.cat([alpha[:, i:i + 1] * h, c_hat], -1)))
                    gates[m] = g
                    parts.append(g * h)
                else:
                    parts.append(alpha[:, i:i + 1] * h)  # "- PGF": entropy weights, no gates
            else:
                parts.append(h)
        if self.fusion_type == "sum":
            z = torch.stack(parts, 0).sum(0)
        elif self.fusion_type == "attention":
            tokens = torch.stack(parts, 1)  # (B, M, H): modalities attend to each other
            z = self.attn(tokens, tokens, tokens, need_weights=False)[0].mean(1)
        else:
            z = torch.cat(parts, -1)
        fused = self.ffn(z)
        out = {"pred": self.head(fused), "features": feats, "fused": fused, "alpha": alpha,
               "gates": gates}
        if gates:  # mean gate value per modality and sample (the paper's Figure 4)
            out["gate_mean"] = torch.stack([gates[m].mean(-1) for m in self.modalities], 1)
        if self.aux is not None:
            out["unimodal"] = {m: self.aux[m](feats[m].detach() if self.aux_detach else feats[m])
                               for m in self.modalities}
        return out

    # ------------------------------------------------------------------ training losses
    def extra_losses(self, out: dict, batch: dict, task: str, epoch: int) -> dict[str, torch.Tensor]:
        from pipeline.models.ot import cal_loss

        feats = out["features"]
        cls = prototype_classes(batch["label"], task, self.neutral_band)
        onehot = F.one_hot(cls, self.K).to(feats[self.modalities[0]].dtype)  # (B, K)
        count = onehot.sum(0)
        present = count > 0
        seen = self.seen | present
        protos, intra = {}, {}
        for i, m in enumerate(self.modalities):
            mean = (onehot.T @ feats[m]) / count.clamp_min(1)[:, None]  # Eq. 1, batch centroids
            old = self.prototypes[i]
            # Eq. 2; a class seen for the first time starts at its batch centroid.
            mom = torch.where(self.seen, torch.full_like(count, self.gamma), torch.zeros_like(count))
            upd = mom[:, None] * old + (1 - mom[:, None]) * mean
            protos[m] = torch.where(present[:, None], upd, old)
            if self.use_pcl:
                sim = F.cosine_similarity(feats[m][:, None, :], protos[m][None], dim=-1) / self.tau
                sim = sim.masked_fill(~seen[None], float("-inf"))
                intra[m] = F.cross_entropy(sim, cls)  # Eq. 3
        inter = {}
        if self.use_cal and len(self.modalities) > 1:
            for m, n in itertools.combinations(self.modalities, 2):
                inter[frozenset((m, n))] = cal_loss(protos[m], protos[n], present=seen, **self.cal_kw)["total"]
        with torch.no_grad():  # keep the running prototypes for the next step and for inference
            for i, m in enumerate(self.modalities):
                self.prototypes[i] = protos[m].detach()
            self.seen |= present
        # for SGM's utility (Eq. 19): only the components this variant has
        if self.use_pcl:
            out["intra"] = intra
        if self.use_cal:
            out["inter"] = inter  # {} for a single modality: no pair
        weights = out["alpha"].mean(0)
        terms = {}
        if self.use_pcl:
            terms["pcl"] = self.mu * sum(weights[i] * intra[m] for i, m in enumerate(self.modalities))
        if inter:
            terms["cal"] = self.mu * sum(inter.values())
        if self.aux is not None:
            uni = {m: task_loss(out["unimodal"][m], batch["label"], task) for m in self.modalities}
            if self.aux_detach:  # measuring heads: one averaged term
                terms["aux"] = sum(uni.values()) / len(self.modalities)
            else:  # live heads: L_mm + sum_m L_u^m, each unimodal objective at weight 1
                terms.update({f"aux_{m}": v for m, v in uni.items()})
        return terms


def build(dims, out_dim, task, cfg, bert=None) -> PaSE:
    """PaSE from the validated config (pipeline/config.py), with the unimodal heads its balancer
    asks for (its SPEC's `unimodal_heads`)."""
    from pipeline.balancers import unimodal_heads
    heads = unimodal_heads(cfg.balancer)
    return PaSE(dims, out_dim, task, n_classes=3 if task == "regression" else 4,
                hidden=cfg.train.hidden, dropout=cfg.train.dropout, fusion=cfg.fusion.type,
                pgf=cfg.pgf.enabled, pcl=cfg.pcl.enabled, cal=cfg.cal.enabled, gamma=cfg.pcl.gamma,
                tau=cfg.pcl.tau, neutral_band=cfg.pcl.neutral_band, cal_reg=cfg.cal.reg,
                cal_alpha=cfg.cal.alpha, cal_beta=cfg.cal.beta, cal_iter=cfg.cal.n_iter,
                mu=cfg.loss.mu, bert=bert, aux_heads=heads is not None, aux_detach=heads != "live",
                encoder=cfg.train.encoder, text_pooling=cfg.text.pooling)
