"""The in-memory forms data takes between a source and the HDF5 store.

Sources give either word-level, variable-length `Utterances` (the `cmu` aligner and the synthetic
generator) or already padded `PaddedSplit`s (the MMSA and MulT pickles). `pad_utterances` turns
the first into the second; `pipeline.data.store` writes `PaddedSplit`s to HDF5.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pipeline.errors import DataError

SPLITS = ("train", "valid", "test")
MODALITIES = ("text", "audio", "vision")
DATASETS = ("mosi", "mosei", "iemocap")
IEMOCAP_EMOTIONS = ("neutral", "happy", "sad", "angry")
LABEL_RANGE = (-3.0, 3.0)  # MOSI / MOSEI sentiment scores

# Split sizes from the paper's supplementary, Table 1 (utterances).
PAPER_SPLIT_SIZES = {
    "mosi": {"train": 1284, "valid": 229, "test": 686},
    "mosei": {"train": 16326, "valid": 1861, "test": 4659},
    "iemocap": {"train": 2717, "valid": 798, "test": 938},
}


@dataclass
class Utterances:
    """One split, word-level and variable length: utterance i has n_i words."""

    ids: list[str]
    words: list[list[str]]  # the utterance's words; [] where the source has no raw text
    audio: list[np.ndarray]  # (n_i, d_audio) float32
    vision: list[np.ndarray]  # (n_i, d_vision) float32
    labels: np.ndarray  # (N,) float32 sentiment, or (N, 4) int for IEMOCAP
    text: list[np.ndarray] | None = None  # precomputed word vectors (n_i, d_text), if the source has them

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class PaddedSplit:
    """One split cut or zero-padded to a fixed length L, with the true lengths kept."""

    ids: list[str]
    audio: np.ndarray  # (N, L, d_audio) float32
    audio_len: np.ndarray  # (N,) int64
    vision: np.ndarray  # (N, L, d_vision) float32
    vision_len: np.ndarray
    labels: np.ndarray  # (N,) float32, or (N, 4) int64 for IEMOCAP
    raw_text: list[str] | None = None
    text: np.ndarray | None = None  # (N, L, d_text) float32 precomputed text features, if any
    text_len: np.ndarray | None = None
    extra: dict = field(default_factory=dict)  # e.g. MMSA's text_bert token ids (N, 3, L)
    length_keys: dict = field(default_factory=dict)  # modality -> the source key of its lengths

    def __len__(self) -> int:
        return len(self.ids)


def pad_sequences(seqs: list[np.ndarray], length: int, dim: int, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Stack variable-length (n_i, dim) arrays into (N, length, dim), cutting the tail beyond
    `length` (as MMSA does) and zero-padding the rest. Returns the array and the kept lengths."""
    out = np.zeros((len(seqs), length, dim), dtype=np.float32)
    lens = np.zeros(len(seqs), dtype=np.int64)
    for i, s in enumerate(seqs):
        s = np.asarray(s, dtype=np.float32)
        if s.ndim != 2 or (s.shape[0] and s.shape[1] != dim):
            raise DataError(f"{name}: utterance {i} has shape {s.shape}, expected (n, {dim})")
        n = min(len(s), length)
        out[i, :n] = s[:n]
        lens[i] = n
    return out, lens


def pad_utterances(u: Utterances, length: int, dims: dict[str, int], split: str) -> PaddedSplit:
    """Word-level utterances -> fixed-length arrays (the store's layout)."""
    audio, audio_len = pad_sequences(u.audio, length, dims["audio"], f"{split}/audio")
    vision, vision_len = pad_sequences(u.vision, length, dims["vision"], f"{split}/vision")
    text = text_len = None
    if u.text is not None:
        text, text_len = pad_sequences(u.text, length, dims["text"], f"{split}/text")
    raw = [" ".join(w) for w in u.words] if any(len(w) for w in u.words) else None
    return PaddedSplit(ids=list(u.ids), audio=audio, audio_len=audio_len, vision=vision,
                       vision_len=vision_len, labels=np.asarray(u.labels), raw_text=raw,
                       text=text, text_len=text_len)
