"""Per-modality encoders shared by PaSE and the baselines.

- `SequenceEncoder`: aligned word-level features (B, L, d) -> utterance vector (B, hidden):
  a linear projection, a one-layer bidirectional LSTM over the true length (packed, so padding
  never enters the state), and the concatenated final states projected to `hidden`.
- `ConvEncoder`: the same interface, a temporal convolution (kernel 3) and masked mean + max
  pooling: ~20x cheaper than the LSTM on a CPU (no sequential steps), the CPU default's choice.
- `TextEncoder`: on the CPU default the frozen, cached word vectors of the embed stage go through
  a `SequenceEncoder`; on the paper profile (`text.finetune: true`) a BERT model is fine-tuned end
  to end from the token ids (`text_bert`) and its [CLS] state (`text.pooling: cls`) or the mean
  of its token states (`mean`, the cpu-real profile's: MiniLM is a mean-pooled sentence encoder)
  is projected to `hidden`.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence


class SequenceEncoder(nn.Module):
    def __init__(self, d_in: int, hidden: int, dropout: float = 0.1):
        super().__init__()
        self.proj = nn.Sequential(nn.LayerNorm(d_in), nn.Linear(d_in, hidden), nn.ReLU())
        self.rnn = nn.LSTM(hidden, hidden, batch_first=True, bidirectional=True)
        self.out = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * hidden, hidden))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        h = self.proj(x)
        # Empty sequences (length 0) are run as length 1 over a zero row, then zeroed.
        lens = lengths.clamp(min=1).cpu()
        packed = pack_padded_sequence(h, lens, batch_first=True, enforce_sorted=False)
        _, (hn, _) = self.rnn(packed)
        z = self.out(torch.cat([hn[0], hn[1]], dim=-1))
        return z * (lengths > 0).to(z.dtype)[:, None]


class ConvEncoder(nn.Module):
    def __init__(self, d_in: int, hidden: int, dropout: float = 0.1):
        super().__init__()
        self.proj = nn.Sequential(nn.LayerNorm(d_in), nn.Linear(d_in, hidden), nn.GELU())
        self.conv = nn.Conv1d(hidden, hidden, kernel_size=3, padding=1)
        self.out = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * hidden, hidden))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        mask = (torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None])[..., None]
        h = self.proj(x) * mask  # padding never enters the convolution's window
        h = torch.nn.functional.gelu(self.conv(h.transpose(1, 2)).transpose(1, 2)) * mask
        n = lengths.clamp(min=1).to(h.dtype)[:, None]
        mean = h.sum(1) / n
        top = h.masked_fill(~mask, float("-inf")).amax(1)
        top = torch.where(lengths[:, None] > 0, top, torch.zeros_like(top))
        return self.out(torch.cat([mean, top], -1))


SEQUENCE_ENCODERS = {"lstm": SequenceEncoder, "conv": ConvEncoder}


POOLINGS = ("cls", "mean")


class BertTextEncoder(nn.Module):
    """Fine-tuned BERT -> hidden. `bert` is a transformers BertModel-like module; `pooling`:
    its [CLS] state, or the mean of its states over the tokens of the attention mask ([CLS] and
    [SEP] included, as sentence-transformers pools MiniLM)."""

    def __init__(self, bert: nn.Module, hidden: int, dropout: float = 0.1, pooling: str = "cls"):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling {pooling!r}: allowed {POOLINGS}")
        self.bert, self.pooling = bert, pooling
        self.out = nn.Sequential(nn.Dropout(dropout), nn.Linear(bert.config.hidden_size, hidden))

    def forward(self, text_bert: torch.Tensor) -> torch.Tensor:
        # Columns past the batch's longest utterance are padding in every row (masked out of
        # attention and of the mean): cut, the encoder's cost follows the real lengths, not
        # text.max_tokens (on a CPU, 2-4x less for MOSI's short utterances).
        longest = max(int(text_bert[:, 1].sum(-1).max()), 1)
        tb = text_bert[:, :, :longest].long()
        ids, mask, types = tb[:, 0], tb[:, 1], tb[:, 2]
        h = self.bert(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
        if self.pooling == "cls":
            return self.out(h[:, 0])
        m = mask.to(h.dtype)[..., None]
        return self.out((h * m).sum(1) / m.sum(1).clamp_min(1))


class ModalityEncoders(nn.Module):
    """One encoder per modality; `forward(batch)` -> {modality: (B, hidden)}."""

    def __init__(self, dims: dict[str, int], hidden: int, dropout: float = 0.1,
                 bert: nn.Module | None = None, kind: str = "lstm", pooling: str = "cls"):
        super().__init__()
        self.encoders = nn.ModuleDict()
        for m, d in dims.items():
            if m == "text" and bert is not None:
                self.encoders[m] = BertTextEncoder(bert, hidden, dropout, pooling)
            else:
                self.encoders[m] = SEQUENCE_ENCODERS[kind](d, hidden, dropout)

    def __getitem__(self, m: str) -> nn.Module:
        return self.encoders[m]

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        return encode(self.encoders, batch)


def encode(encoders: nn.ModuleDict, batch: dict) -> dict[str, torch.Tensor]:
    """Run each modality's encoder on its input: token ids for a fine-tuned BERT, else the
    (B, L, d) features with their lengths."""
    return {m: enc(batch["text_bert"]) if isinstance(enc, BertTextEncoder)
            else enc(batch[m], batch[f"{m}_len"]) for m, enc in encoders.items()}
