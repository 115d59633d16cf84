"""Readers for the widely shared MMSA and MulT pickles -> `{split: schema.PaddedSplit}`.

Unpickling runs whatever code the file names, so `read_pickle_checked` opens a pickle only when
its configured sha256 matches or the user opted in explicitly.

MMSA (`aligned_50.pkl`, `unaligned_50.pkl`; MOSI and MOSEI), as MMSA's `data_loader.py` reads it:
    data[split], split in train/valid/test, a dict with
      raw_text (N,) str, id (N,) str, regression_labels (N,) float in [-3, 3],
      text (N, L, 768) BERT features, text_bert (N, 3, L): token ids, attention mask, segment ids,
      audio (N, La, da), vision (N, Lv, dv)  (aligned: La = Lv = L = 50),
      unaligned only: audio_lengths (N,), vision_lengths (N,).
    Sizes: read from the file (MMSA's own: MOSI audio 5, vision 20; MOSEI audio 74, vision 35;
    MMSA-FET extractions have others); `dims` declares expected ones, checked split by split.
    Lengths: `audio_lengths` / `vision_lengths` where present (unaligned: 375 / 500 audio and
    vision steps for MOSI, 500 / 375 for MOSEI, each modality keeps its own). Aligned files have
    none: their rows are at BERT token positions (text is BERT's per-token output, and MMSA's
    models read audio and vision with the text's mask length, Self-MM's `mask_len`), so every
    modality's length is the number of ones in the attention mask (text_bert row 1, [CLS] and
    [SEP] included): the three agree utterance by utterance, at token level. Audio or vision rows
    beyond that length that are not zero are counted in a warning (they are masked out, as in MMSA).

MulT (`mosi_data.pkl`, `mosei_senti_data.pkl`, `iemocap_data.pkl` aligned; `*_noalign.pkl`),
as MulT's `src/dataset.py` reads it:
    data[split] with text (N, L, 300 GloVe), audio (N, La, da), vision (N, Lv, dv), labels, and
    `id` (MOSI/MOSEI: (N, 3) byte strings; IEMOCAP has none).
    Labels: MOSI/MOSEI (N, 1, 1) sentiment -> (N,) float32; IEMOCAP (N, 4, 2), one one-hot pair
    per emotion (neutral, happy, sad, angry) -> (N, 4) int64 = argmax of each pair, as MulT does.
    Sizes: read from the file (MulT's: MOSI audio 5, vision 20; MOSEI, IEMOCAP 74 / 35). No raw text.
    Lengths: MulT keeps none and its models read every step (zero padding at the front included),
    so every modality's length is its own number of steps: aligned files have one length for all
    three, `_noalign` files each modality's own (e.g. text 50, audio 375, vision 500).
    Ids: a 2-D id row becomes its fields joined by "_"; without `id`, "<split>/<index>".

Both: -inf (COVAREP's log energy of silence) and other non-finite feature values are set to 0, as
MMSA and MulT do, with one WARNING line per split and key giving the count. Finite values beyond
float32's range are refused (before the cast that would make them inf); raw text must be strings.
Every error names the file, the split and the key.
"""
from __future__ import annotations

import logging
import pickle
from pathlib import Path

import numpy as np

from pipeline.data.checks import to_float32
from pipeline.data.schema import IEMOCAP_EMOTIONS, LABEL_RANGE, PAPER_SPLIT_SIZES, SPLITS, PaddedSplit
from pipeline.data.download import sha256_file
from pipeline.errors import ConfigError, DataError

log = logging.getLogger(__name__)

MMSA_DATASETS = ("mosi", "mosei")
MULT_DATASETS = ("mosi", "mosei", "iemocap")
_BLOCK = 1024  # samples per block when scanning features: bounds the temporaries on MOSEI (GBs)

IEMOCAP_HELP = (
    "IEMOCAP is licensed and is never downloaded or replaced by other data. Request it from USC SAIL "
    "(https://sail.usc.edu/iemocap/), then get MulT's preprocessed four-emotion `iemocap_data.pkl` "
    "from the data link in the MulT repository (github.com/yaohungt/Multimodal-Transformer) and set "
    "`data.iemocap.path` in params.yaml to that file."
)


# --- reading --------------------------------------------------------------------------------------

def read_pickle_checked(path, sha256: str | None, allow_unverified: bool, *, dataset: str | None = None):
    """Unpickle `path` only if its sha256 equals `sha256`, or, without a sum, if
    `allow_unverified` (logged as a warning). A configured sum that does not match is an error
    even with the opt-in: it means the file is not the one the sum was recorded for.
    `dataset` only names the params keys in the messages."""
    path = Path(path)
    ds = dataset or "<dataset>"
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if sha256:
        got = sha256_file(path)
        if got != sha256.strip().lower():
            raise DataError(f"{path}: sha256 is {got} but `data.{ds}.sha256` is {sha256}; "
                            "refusing to unpickle a file that is not the one the checksum was recorded for")
    elif allow_unverified:
        log.warning("%s: loading a pickle without checksum (data.%s.allow_unverified_pickle: true); "
                    "unpickling runs any code the file contains", path, ds)
    else:
        raise DataError(
            f"{path}: refusing to unpickle an unverified file, since loading a pickle can run arbitrary "
            f"code. Set its checksum in params.yaml as `data.{ds}.sha256: <hex>` (compute it with "
            f"`sha256sum {path}` and compare with the one its publisher gives), or accept the risk with "
            f"`data.{ds}.allow_unverified_pickle: true`.")
    try:
        with open(path, "rb") as f:
            return pickle.load(f)
    except Exception as e:  # unpickling can fail with almost any exception type
        raise DataError(f"{path}: corrupt or truncated pickle ({type(e).__name__}: {e})") from None


# --- checks shared by both formats ----------------------------------------------------------------

class _Split:
    """One split of a pickle, with error messages that name the file, the split and the key."""

    def __init__(self, data, path: Path, split: str, dims: "_Dims"):
        self.path, self.split, self.dims = path, split, dims
        if not isinstance(data, dict):
            raise DataError(f"{path}: top level is a {type(data).__name__}, expected a dict with splits {SPLITS}")
        if split not in data:
            raise DataError(f"{path}: missing split '{split}' (has: {sorted(map(str, data))})")
        self.d = data[split]
        if not isinstance(self.d, dict):
            raise DataError(f"{path}: split '{split}' is a {type(self.d).__name__}, expected a dict of arrays")
        self.n: dict[str, int] = {}  # key -> first dimension, to compare across keys

    def error(self, msg: str) -> DataError:
        return DataError(f"{self.path}: split '{self.split}': {msg}")

    def has(self, key: str) -> bool:
        return key in self.d

    def get(self, key: str):
        if key not in self.d:
            raise DataError(f"{self.path}: split '{self.split}' missing key '{key}' "
                            f"(has: {sorted(map(str, self.d))})")
        return self.d[key]

    def array(self, key: str, expected: str, ndim: int, dims: dict[int, int] | None = None) -> np.ndarray:
        """The key as an array of `ndim` dims, with dims[axis] == size; `expected` is the shape to
        print, e.g. "(N, L, 5)"."""
        try:
            a = np.asarray(self.get(key))
        except ValueError as e:  # ragged nested lists
            raise self.error(f"'{key}' is not a rectangular array ({e})") from None
        if a.ndim != ndim or any(a.shape[ax] != size for ax, size in (dims or {}).items()):
            raise self.error(f"'{key}' has shape {a.shape}, expected {expected}")
        self.n[key] = a.shape[0]
        return a

    def numeric(self, key: str, a: np.ndarray) -> np.ndarray:
        if a.dtype.kind not in "fiub":
            raise self.error(f"'{key}' has dtype {a.dtype}, expected numbers")
        return a

    def features(self, key: str) -> np.ndarray:
        """(N, L, d) float32 with non-finite values set to 0 (counted in a warning); d is checked
        against the declared size, or against the first split's."""
        a = self.numeric(key, self.array(key, "(N, L, d)", 3))
        self.dims.check(self, key, a.shape)
        a = to_float32(a, f"{self.path}: split '{self.split}': key '{key}'")  # no copy if float32
        if not a.flags.writeable or not a.flags.c_contiguous:
            a = np.array(a, order="C")  # we zero values in place below
        bad = 0
        for i in range(0, len(a), _BLOCK):
            block = a[i:i + _BLOCK]
            mask = ~np.isfinite(block)
            bad += int(mask.sum())
            block[mask] = 0.0
        log.log(logging.WARNING if bad else logging.INFO, "%s %s/%s: %d non-finite value(s) "
                "(NaN/-inf, e.g. COVAREP's silence) set to 0", self.path.name, self.split, key, bad)
        return a

    def strings(self, key: str, text: bool = False) -> list[str]:
        """Ids or texts as str: bytes are decoded, a 2-D row's fields joined by '_'. With `text`,
        every entry must be a string (a NaN or None would otherwise become the word "nan")."""
        a = self.get(key)
        a = np.asarray(a, dtype=object)
        if a.ndim not in (1, 2) or text and a.ndim != 1:
            raise self.error(f"'{key}' has shape {a.shape}, expected (N,){'' if text else ' or (N, k)'}")
        self.n[key] = a.shape[0]
        if text:
            bad = [i for i, v in enumerate(a) if not isinstance(v, (str, bytes))]
            if bad:
                raise self.error(f"'{key}' has {len(bad)} entries that are not strings "
                                 f"(e.g. {a[bad[0]]!r} at index {bad[0]})")
        dec = lambda v: v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)  # noqa: E731
        if a.ndim == 1:
            return [dec(v) for v in a]
        return ["_".join(dec(v) for v in row) for row in a]

    def lengths(self, key: str, max_len: int) -> np.ndarray:
        a = self.numeric(key, self.array(key, "(N,)", 1))
        if a.size and not (np.isfinite(a).all() and a.min() >= 0):
            raise self.error(f"'{key}' has negative or non-finite lengths")
        a = a.astype(np.int64)
        over = int((a > max_len).sum())
        if over:
            log.warning("%s %s/%s: %d length(s) exceed the padded length %d; cut to it",
                        self.path.name, self.split, key, over, max_len)
        return np.minimum(a, max_len)

    def check_n(self) -> int:
        """All keys must agree on N, and N > 0."""
        sizes = set(self.n.values())
        if len(sizes) > 1:
            ref = next(iter(self.n))
            other = next(k for k, v in self.n.items() if v != self.n[ref])
            raise self.error(f"'{ref}' has {self.n[ref]} entries but '{other}' has {self.n[other]} "
                             f"(all sizes: {self.n})")
        n = sizes.pop() if sizes else 0
        if n == 0:
            raise self.error("is empty (0 samples)")
        return n

    def sentiment(self, key: str) -> np.ndarray:
        """Regression labels of any shape holding one value a sample -> (N,) float32 in [-3, 3]."""
        y = self.numeric(key, np.asarray(self.get(key)))
        if y.ndim == 0 or y.size != y.shape[0]:
            raise self.error(f"'{key}' has shape {y.shape}, expected (N,) or (N, 1, 1)")
        self.n[key] = y.shape[0]
        y = y.reshape(-1).astype(np.float32)
        lo, hi = LABEL_RANGE
        bad = ~(np.isfinite(y) & (y >= lo) & (y <= hi))
        if bad.any():
            i = int(np.argmax(bad))
            raise self.error(f"'{key}' has {int(bad.sum())} value(s) outside [{lo:g}, {hi:g}] or non-finite "
                             f"(e.g. {y[i]} at index {i})")
        return y


def _check_sizes(path: Path, dataset: str, out: dict[str, PaddedSplit]) -> None:
    """Split sizes that differ from the paper's are worth a warning, not an error: published
    copies of the same dataset differ by a few samples."""
    paper = PAPER_SPLIT_SIZES[dataset]
    got = {s: len(out[s]) for s in SPLITS}
    if got != paper:
        log.warning("%s: split sizes %s differ from the paper's %s", path, got, paper)


class _Dims:
    """Feature sizes: the declared ones (data.<ds>.dims; None = take the file's), else the first
    split's; every split must agree. `found` is what the file holds."""

    def __init__(self, dataset: str, allowed: tuple, declared: dict | None):
        if dataset not in allowed:
            raise ConfigError(f"dataset {dataset!r} is not available from this source; allowed: {', '.join(allowed)}")
        self.dataset = dataset
        self.declared = {k: v for k, v in (declared or {}).items() if v is not None}
        self.found: dict[str, tuple[int, str]] = {}

    def check(self, s: "_Split", key: str, shape: tuple) -> None:
        d = shape[-1]
        if key in self.declared and d != self.declared[key]:
            raise s.error(f"'{key}' has {d} features (shape {shape}) but data.{self.dataset}.dims."
                          f"{key} declares {self.declared[key]}")
        first = self.found.setdefault(key, (d, s.split))
        if first[0] != d:
            raise s.error(f"'{key}' has {d} features (shape {shape}) but split '{first[1]}' has {first[0]}")

    def sizes(self) -> dict[str, int]:
        return {k: v[0] for k, v in self.found.items()}


# --- MMSA -----------------------------------------------------------------------------------------

def load_mmsa(path, dataset: str, sha256: str | None, allow_unverified: bool,
              dims: dict[str, int] | None = None) -> dict[str, PaddedSplit]:
    """MMSA's aligned_50.pkl / unaligned_50.pkl -> {split: PaddedSplit}. `dims` declares the
    expected feature sizes ({"text": 768, "audio": ..., "vision": ...}; None: the file's)."""
    path = Path(path)
    dims = _Dims(dataset, MMSA_DATASETS, dims)
    data = read_pickle_checked(path, sha256, allow_unverified, dataset=dataset)
    out = {}
    for split in SPLITS:
        s = _Split(data, path, split, dims)
        for key in ("raw_text", "id", "text", "text_bert", "audio", "vision", "regression_labels"):
            s.get(key)  # report a missing key before any shape problem
        ids = s.strings("id")
        raw_text = s.strings("raw_text", text=True)
        text = s.features("text")
        bert = s.numeric("text_bert", s.array("text_bert", f"(N, 3, {text.shape[1]})", 3,
                                              {1: 3, 2: text.shape[1]}))
        audio = s.features("audio")
        vision = s.features("vision")
        unaligned = s.has("audio_lengths") or s.has("vision_lengths")
        if unaligned:
            audio_len = s.lengths("audio_lengths", audio.shape[1])
            vision_len = s.lengths("vision_lengths", vision.shape[1])
        labels = s.sentiment("regression_labels")
        s.check_n()

        text_len = (bert[:, 1, :] != 0).sum(axis=1).astype(np.int64)  # attention mask
        mask_key = "text_bert[:, 1] (attention mask)"
        keys = {"text": mask_key, "audio": "audio_lengths", "vision": "vision_lengths"}
        if not unaligned:  # aligned: token positions, every modality has the text's length
            if audio.shape[1] != text.shape[1] or vision.shape[1] != text.shape[1]:
                raise s.error(f"aligned file (no 'audio_lengths') but 'text', 'audio', 'vision' have "
                              f"{text.shape[1]}, {audio.shape[1]}, {vision.shape[1]} steps")
            audio_len = vision_len = text_len
            keys = {m: mask_key for m in keys}
            for key, a in (("audio", audio), ("vision", vision)):
                beyond = _rows_beyond(a, text_len)
                if beyond:
                    log.warning("%s %s/%s: %d utterance(s) have non-zero rows beyond the attention "
                                "mask's length; they are masked out (as in MMSA)", path.name, split, key, beyond)
        out[split] = PaddedSplit(ids=ids, audio=audio, audio_len=audio_len, vision=vision,
                                 vision_len=vision_len, labels=labels, raw_text=raw_text, text=text,
                                 text_len=text_len, extra={"text_bert": bert.astype(np.int64)},
                                 length_keys=keys | {"label": "regression_labels"})
    _check_sizes(path, dataset, out)
    return out


def found_dims(splits: dict[str, PaddedSplit]) -> dict[str, int]:
    """The feature size of each modality of a loaded file."""
    p = splits["train"]
    return {m: getattr(p, m).shape[-1] for m in ("text", "audio", "vision") if getattr(p, m) is not None}


def is_aligned(splits: dict[str, PaddedSplit]) -> bool:
    """One time axis for every modality and equal lengths utterance by utterance."""
    for p in splits.values():
        mods = [m for m in ("text", "audio", "vision") if getattr(p, m) is not None]
        steps = {getattr(p, m).shape[1] for m in mods}
        if len(steps) > 1 or any((getattr(p, f"{m}_len") != p.audio_len).any() for m in mods):
            return False
    return True


def _rows_beyond(a: np.ndarray, lengths: np.ndarray) -> int:
    """Utterances with a non-zero row at or after their length."""
    steps = np.arange(a.shape[1])
    n = 0
    for i in range(0, len(a), _BLOCK):
        nonzero = np.any(a[i:i + _BLOCK] != 0, axis=2)
        n += int(np.count_nonzero((nonzero & (steps[None, :] >= lengths[i:i + _BLOCK, None])).any(axis=1)))
    return n


# --- MulT -----------------------------------------------------------------------------------------

def _iemocap_labels(s: _Split) -> np.ndarray:
    """(N, 4, 2) one-hot pairs -> (N, 4) int64 index of the positive class (argmax, as MulT)."""
    k = len(IEMOCAP_EMOTIONS)
    y = s.numeric("labels", s.array("labels", f"(N, {k}, 2)", 3, {1: k, 2: 2}))
    if not np.isin(y, (0, 1)).all():
        raise s.error("'labels' has values other than 0 and 1, expected one-hot pairs")
    not_one_hot = int((y.sum(axis=2) != 1).sum())
    if not_one_hot:  # argmax reads an all-zero pair as class 0; say so rather than fail
        log.warning("%s %s/labels: %d emotion pair(s) are not one-hot; argmax reads them as class 0",
                    s.path.name, s.split, not_one_hot)
    return np.argmax(y, axis=2).astype(np.int64)


def load_mult(path, dataset: str, sha256: str | None, allow_unverified: bool,
              dims: dict[str, int] | None = None) -> dict[str, PaddedSplit]:
    """MulT's mosi_data.pkl / mosei_senti_data.pkl / iemocap_data.pkl (and *_noalign.pkl)
    -> {split: PaddedSplit}. `dims` declares the expected feature sizes (None: the file's)."""
    path = Path(path)
    dims = _Dims(dataset, MULT_DATASETS, dims)
    data = read_pickle_checked(path, sha256, allow_unverified, dataset=dataset)
    out = {}
    for split in SPLITS:
        s = _Split(data, path, split, dims)
        for key in ("text", "audio", "vision", "labels"):
            s.get(key)
        ids = s.strings("id") if s.has("id") else None
        text = s.features("text")
        audio = s.features("audio")
        vision = s.features("vision")
        labels = _iemocap_labels(s) if dataset == "iemocap" else s.sentiment("labels")
        n = s.check_n()
        if ids is None:
            ids = [f"{split}/{i}" for i in range(n)]
        full = {m: np.full(n, a.shape[1], dtype=np.int64) for m, a in
                (("text", text), ("audio", audio), ("vision", vision))}  # MulT reads every step
        out[split] = PaddedSplit(ids=ids, audio=audio, audio_len=full["audio"], vision=vision,
                                 vision_len=full["vision"], labels=labels, raw_text=None,
                                 text=text, text_len=full["text"],
                                 length_keys={m: f"{m} (steps; MulT keeps no lengths)" for m in full}
                                 | {"label": "labels"})
    _check_sizes(path, dataset, out)
    return out


def load_iemocap(path, sha256: str | None, allow_unverified: bool,
                 dims: dict[str, int] | None = None) -> dict[str, PaddedSplit]:
    """IEMOCAP from the user's copy of MulT's iemocap_data.pkl; nothing else stands in for it."""
    if path is None or str(path).strip() == "":
        raise DataError(f"IEMOCAP: no file given (`data.iemocap.path` is empty). {IEMOCAP_HELP}")
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"{path}: IEMOCAP file not found (`data.iemocap.path`). {IEMOCAP_HELP}")
    return load_mult(path, "iemocap", sha256, allow_unverified, dims)
