"""MAG-BERT: BERT with a Multimodal Adaptation Gate.

Reference: Rahman, Hasan, Lee, Zadeh, Mao, Morency, Hoque, "Integrating Multimodal Information in
Large Pretrained Transformers", ACL 2020 (code: WasifurRahman/BERT_multimodal_transformer, also
MMSA's `BERT_MAG`). Read there, written here.

The MAG sits between two layers of a fine-tuned BERT (`inject_layer`: 0 = on the embedding
output, the paper's best and its code's setting; k = after encoder layer k). For token i with
hidden state Z_i and the word-aligned acoustic A_i and visual V_i vectors:
    g_v = ReLU(W_gv [Z_i; V_i] + b_v),    g_a = ReLU(W_ga [Z_i; A_i] + b_a)      (gates)
    H_i = g_v * (W_v V_i) + g_a * (W_a A_i)                                      (displacement)
    alpha_i = min(beta * ||Z_i|| / ||H_i||, 1)                                   (norm-ratio cap)
    Z_i <- Z_i + alpha_i * H_i
so the shift never exceeds beta times the token's own norm (beta = 1: MMSA's `beta_shift`). The
rest of BERT runs unchanged; the pooled output (BERT's pooler on [CLS]; the [CLS] state where the
model has no pooler) -> Dropout -> Linear -> `pred`, as MAG_BertForSequenceClassification.

Any `transformers` BertModel instance can be passed (`build(dims, out_dim, bert=...)`): the MAG
is attached with a forward hook on `bert.embeddings` or on `bert.encoder.layer[k-1]`, so the BERT
code itself is not copied or changed. Word-aligned audio/vision reach token positions as follows:
- exact: if the batch has `text_word_ids` (B, T) int64, token t takes the row of word
  `text_word_ids[t]` (-1 for [CLS]/[SEP]/padding: zero vector), i.e. every sub-word token of a word
  repeats that word's vectors, as the original code does. The embed stage writes this map
  (`text_word_ids`, from the fast tokenizer's `word_ids()`, pipeline/features/text.py) for every
  word-level source (synthetic, cmu, MMSA unaligned with raw text), and the trainer passes it;
- otherwise (a source whose audio/vision are already at BERT token positions, MMSA's aligned
  pickles, which get no word map): by position, token t takes row t, [CLS] at t = 0 included,
  as MMSA's BERT_MAG adds `visual[:, t]` / `acoustic[:, t]` to the embedding of token t
  (pipeline/data/pickles.py: the rows sit at the tokens of the file's `text_bert`, so the rule
  holds when the tokenisation is the file's, bert-base-uncased). Tokens past the rows get zeros.
In both cases tokens with attention mask 0 get zero vectors.

Sizes: the MAG adds (2D + d_a + d_v + 2) * D + d_a * D + d_v * D parameters for BERT width D; head
D * out_dim + out_dim. `hidden` is not used (the widths are BERT's). With text 384 / audio 74 /
vision 35 and a MiniLM-L6-shaped BERT (D = 384, 6 layers): MAG 379,392, head 385, BERT 22,713,216;
with the tiny test BERT (D = 32): MAG 9,088; at BERT-base width (D = 768): 1,348,608.

Deviations, and why:
- No bias in W_v, W_a and no b_H: the displacement is exactly zero when the audio and vision rows
  are zero (padding, [CLS]/[SEP], missing data), so those tokens keep BERT's own states. The
  gates keep their biases.
- No extra LayerNorm on Z + alpha*H (the original code re-normalises the sum and applies dropout
  to all of it): BERT's embeddings and layers already end in a LayerNorm, and re-normalising
  would change BERT's states even with a zero displacement. Dropout (`dropout`) acts on the
  displacement only. `post_norm=True` restores the original LayerNorm + dropout on the sum.
- Utterance-level sizes follow our trainer (one lr, L1 loss); the original uses MSE loss, lr 1e-5
  (MMSA: 2e-5 MOSI, 1e-5 MOSEI) and dropout 0.5 (MMSA 0.3/0.2).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from pipeline.models.base import MultimodalModel
from pipeline.models.baselines._common import length_mask, ordered_modalities

NONVERBAL = ("audio", "vision")


class MAG(nn.Module):
    """Multimodal Adaptation Gate over token states Z (B, T, D) and aligned nonverbal rows."""

    def __init__(self, d_text: int, d_nonverbal: dict[str, int], beta: float = 1.0, dropout: float = 0.1,
                 post_norm: bool = False):
        super().__init__()
        if beta <= 0:
            raise ValueError(f"MAG: beta (the norm-ratio cap) must be positive, got {beta}")
        self.beta = float(beta)
        self.gate = nn.ModuleDict({m: nn.Linear(d + d_text, d_text) for m, d in d_nonverbal.items()})
        self.proj = nn.ModuleDict({m: nn.Linear(d, d_text, bias=False) for m, d in d_nonverbal.items()})
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(d_text) if post_norm else None

    def displacement(self, z: torch.Tensor, nonverbal: dict[str, torch.Tensor]) -> torch.Tensor:
        """alpha * H (B, T, D): the capped, gated shift."""
        h = torch.zeros_like(z)
        for m, x in nonverbal.items():
            x = x.to(z.dtype)
            h = h + F.relu(self.gate[m](torch.cat([x, z], dim=-1))) * self.proj[m](x)
        z_norm = torch.linalg.vector_norm(z, dim=-1)
        h_norm = torch.linalg.vector_norm(h, dim=-1)
        # Where H = 0 the shift is 0 whatever alpha is; the clamp only avoids 0/0.
        alpha = torch.clamp(self.beta * z_norm / h_norm.clamp_min(1e-6), max=1.0)
        return alpha.unsqueeze(-1) * h

    def forward(self, z: torch.Tensor, nonverbal: dict[str, torch.Tensor]) -> torch.Tensor:
        shifted = z + self.dropout(self.displacement(z, nonverbal))
        if self.norm is not None:  # the original code's re-normalisation (see module docstring)
            shifted = self.dropout(self.norm(shifted))
        return shifted


def rows_to_tokens(x: torch.Tensor, mask: torch.Tensor, word_ids: torch.Tensor | None = None) -> torch.Tensor:
    """Word-aligned rows x (B, L, d) -> token positions (B, T, d) for BERT ids with attention mask
    `mask` (B, T). With `word_ids` (B, T; -1 = no word) token t takes row word_ids[t]; without
    (rows already at token positions), token t takes row t. Masked tokens and tokens past L get
    zeros."""
    B, L, d = x.shape
    T = mask.shape[1]
    if word_ids is None:
        word_ids = torch.arange(T, device=x.device).expand(B, T)
    word_ids = word_ids.to(x.device).long()
    valid = (word_ids >= 0) & (word_ids < L) & (mask.to(x.device) > 0)
    rows = torch.gather(x, 1, word_ids.clamp(0, L - 1).unsqueeze(-1).expand(B, T, d))
    return rows * valid.unsqueeze(-1).to(x.dtype)


class MAGBert(MultimodalModel):
    def __init__(self, dims: dict[str, int], out_dim: int, bert: nn.Module, dropout: float = 0.1,
                 beta: float = 1.0, inject_layer: int = 0, post_norm: bool = False):
        super().__init__()
        mods = ordered_modalities(dims, "MAG-BERT")
        nonverbal = tuple(m for m in NONVERBAL if m in mods)
        if "text" not in mods or not nonverbal:
            raise ValueError(f"MAG-BERT needs text and at least one of audio/vision, got {list(mods)}")
        self.modalities = ("text",) + nonverbal
        self.bert = bert
        d_text = int(bert.config.hidden_size)
        n_layers = int(bert.config.num_hidden_layers)
        if not 0 <= inject_layer <= n_layers:
            raise ValueError(f"MAG-BERT: inject_layer must be 0 (embeddings) .. {n_layers}, got {inject_layer}")
        self.inject_layer = inject_layer
        self.mag = MAG(d_text, {m: dims[m] for m in nonverbal}, beta, dropout, post_norm)
        self.head = nn.Sequential(nn.Dropout(float(getattr(bert.config, "hidden_dropout_prob", dropout))),
                                  nn.Linear(d_text, out_dim))
        self._nonverbal: dict[str, torch.Tensor] | None = None  # set for the duration of one forward
        site = bert.embeddings if inject_layer == 0 else bert.encoder.layer[inject_layer - 1]
        site.register_forward_hook(self._inject)

    def _inject(self, module, args, output):
        if self._nonverbal is None:  # BERT called on its own: unchanged
            return None
        if isinstance(output, tuple):  # older transformers: layers return tuples
            return (self.mag(output[0], self._nonverbal),) + tuple(output[1:])
        return self.mag(output, self._nonverbal)

    def modality_parameters(self) -> dict[str, list[nn.Parameter]]:
        params = {"text": list(self.bert.parameters())}
        for m in self.modalities[1:]:
            params[m] = list(self.mag.gate[m].parameters()) + list(self.mag.proj[m].parameters())
        return params

    def encode(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """BERT's sequence output (B, T, D) with the MAG shift applied, and the pooled output (B, D)."""
        tb = batch["text_bert"]
        ids, mask, types = tb[:, 0].long(), tb[:, 1].long(), tb[:, 2].long()
        word_ids = batch.get("text_word_ids")
        nonverbal = {}
        for m in self.modalities[1:]:
            x = batch[m] * length_mask(batch[f"{m}_len"], batch[m].shape[1]).unsqueeze(-1).to(batch[m].dtype)
            nonverbal[m] = rows_to_tokens(x, mask, word_ids)
        self._nonverbal = nonverbal
        try:
            out = self.bert(input_ids=ids, attention_mask=mask, token_type_ids=types)
        finally:
            self._nonverbal = None
        pooled = getattr(out, "pooler_output", None)
        return out.last_hidden_state, (out.last_hidden_state[:, 0] if pooled is None else pooled)

    def forward(self, batch: dict) -> dict:
        _, pooled = self.encode(batch)
        return {"pred": self.head(pooled), "fused": pooled}


def build(dims: dict[str, int], out_dim: int, hidden: int = 64, dropout: float = 0.1, *,
          bert: nn.Module | None = None, n_train: int | None = None, beta: float = 1.0,
          inject_layer: int = 0, post_norm: bool = False) -> MAGBert:
    """MAG-BERT around `bert` (a transformers BertModel). `hidden` and `n_train` are unused."""
    if bert is None:
        raise ValueError("MAG-BERT fine-tunes BERT: pass bert= (a transformers BertModel) and run the "
                         "fine-tuned text path (text.finetune: true, batches with 'text_bert')")
    return MAGBert(dims, out_dim, bert, dropout=dropout, beta=beta, inject_layer=inject_layer,
                   post_norm=post_norm)
