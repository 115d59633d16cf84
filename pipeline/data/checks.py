"""Checks on a dataset before its store is written (the `align` stage), and per-modality cuts.

Every check runs on the padded splits a source gives, before anything is written: a refusal
leaves no store behind. Errors name the input (file or folder), the split, the key and the count.

| check                          | threshold                                        | outcome |
|--------------------------------|--------------------------------------------------|---------|
| a modality's length is 0       | every utterance of a split, or > max_empty_fraction | error   |
|                                | fewer (but some)                                 | WARNING with the count |
| an id in more than one split   | any                                              | error (leakage) |
| a split copies another         | every utterance of one split (features, text and label) is in the other | error |
|                                | some utterances identical across splits          | WARNING with the count |
| split too small to score       | < MIN_UTTERANCES utterances; valid/test: constant labels, or no negative or no positive score (regression), or an emotion with one class only (IEMOCAP) | error |
| finite value beyond float32    | any (checked before the float32 cast)            | error |

Sources check the rest where they read it (raw text that is not a string, shapes, labels); the
benign non-finite values (MMSA's -inf audio, COVAREP's NaN) are set to 0 and counted at WARNING.
"""
from __future__ import annotations

import hashlib
import logging

import numpy as np

from pipeline.data.schema import IEMOCAP_EMOTIONS, SPLITS, PaddedSplit
from pipeline.errors import DataError

log = logging.getLogger(__name__)

# Pearson's r needs two samples (and labels that vary); fewer cannot be scored at all.
MIN_UTTERANCES = 2
FLOAT32_MAX = float(np.finfo(np.float32).max)
_BLOCK = 1024  # rows at a time: bounds the temporaries on MOSEI-sized arrays


def to_float32(a: np.ndarray, where: str) -> np.ndarray:
    """`a` as float32, refusing finite values that float32 cannot hold (they would become inf and
    then be zeroed as "non-finite"). `where` names the file, split and key in the error."""
    a = np.asarray(a)
    if a.dtype.kind == "f" and a.dtype.itemsize > 4 or a.dtype.kind in "iu" and a.dtype.itemsize > 2:
        over = 0
        flat = a.reshape(len(a), -1) if a.ndim else a.reshape(1, -1)
        for i in range(0, len(flat), _BLOCK):
            block = flat[i:i + _BLOCK]
            over += int(np.count_nonzero(np.isfinite(block) & (np.abs(block) > FLOAT32_MAX)))
        if over:
            raise DataError(f"{where}: {over} finite value(s) exceed the float32 range "
                            f"(|x| > {FLOAT32_MAX:.3g}); they would become inf. Rescale the features")
    return np.asarray(a, dtype=np.float32)


def modality_keys(p: PaddedSplit) -> dict[str, str]:
    """Modality -> the source's key its lengths come from (for messages)."""
    mods = ("text", "audio", "vision") if p.text is not None else ("audio", "vision")
    return {m: p.length_keys.get(m, f"{m}_len") for m in mods}  # "label" names the label key


def cut(p: PaddedSplit, max_len: dict[str, int | None], front_padded: bool = False) -> dict[str, int]:
    """Cut each modality to max_len[m] steps (None: keep the source's own). Returns, per
    modality, the number of utterances that lost rows.

    Back-padded sources (content first: MMSA, word-level stores) keep the first `limit` steps.
    `front_padded` sources (MulT's pickles: zero padding first, the features in the last steps)
    keep the last `limit` steps, so the cut drops padding before content. Their lengths are
    their step counts (MulT reads every step, pickles.py), so the utterances that lose rows are
    counted by their true length: the steps from the first non-zero row to the end."""
    counts = {}
    for m in ("text", "audio", "vision"):
        a, n = getattr(p, m), getattr(p, f"{m}_len")
        limit = max_len.get(m)
        if a is None:
            continue
        counts[m] = 0
        if limit is None or limit >= a.shape[1]:
            continue
        if front_padded:
            counts[m] = int(np.count_nonzero(front_padded_lengths(a) > limit))
            setattr(p, m, np.ascontiguousarray(a[:, a.shape[1] - limit:]))
        else:
            counts[m] = int(np.count_nonzero(n > limit))
            setattr(p, m, np.ascontiguousarray(a[:, :limit]))
        setattr(p, f"{m}_len", np.minimum(n, limit))
    return counts


def front_padded_lengths(a: np.ndarray) -> np.ndarray:
    """(N,) steps from each utterance's first non-zero row to the end of a front-padded (N, L, d)
    array; 0 for an all-zero utterance."""
    L = a.shape[1]
    out = np.zeros(len(a), dtype=np.int64)
    for i in range(0, len(a), _BLOCK):
        nonzero = np.any(a[i:i + _BLOCK] != 0, axis=2)  # (b, L)
        first = np.where(nonzero.any(axis=1), nonzero.argmax(axis=1), L)
        out[i:i + _BLOCK] = L - first
    return out


def _utterance_digests(p: PaddedSplit) -> list[bytes]:
    """One digest per utterance over its features (within its lengths), raw text and label."""
    out = []
    mods = [m for m in ("text", "audio", "vision") if getattr(p, m) is not None]
    for i in range(len(p)):
        h = hashlib.blake2b(digest_size=16)
        for m in mods:
            h.update(np.ascontiguousarray(getattr(p, m)[i, :int(getattr(p, f"{m}_len")[i])]).tobytes())
            h.update(b"|")
        if p.raw_text is not None:
            h.update(p.raw_text[i].encode())
        h.update(np.ascontiguousarray(p.labels[i]).tobytes())
        out.append(h.digest())
    return out


def _check_empty(source: str, split: str, p: PaddedSplit, max_fraction: float) -> dict[str, int]:
    counts = {}
    for m, key in modality_keys(p).items():
        counts[m] = int(np.count_nonzero(np.asarray(getattr(p, f"{m}_len")) == 0))
        check_empty_count(source, split, m, key, counts[m], len(p), max_fraction)
    return counts


def check_empty_count(source: str, split: str, modality: str, key: str, empty: int, n: int,
                      max_fraction: float, hint: str = "check the file's lengths") -> None:
    """The rule of data.max_empty_fraction for `empty` of `n` utterances of one split whose
    `modality` is empty (`key` says what showed it): an error over the fraction, else a warning.
    Shared by align (the source's lengths) and embed (the text the model reads)."""
    if not empty:
        return
    what = (f"{source}: split '{split}': '{key}' is 0 for {empty} of {n} utterances "
            f"({empty / n:.1%}): the {modality} modality is empty there")
    if empty == n:
        raise DataError(f"{what}, i.e. the whole split has no {modality}")
    if empty > max_fraction * n:
        raise DataError(f"{what}, more than data.max_empty_fraction = {max_fraction:g}; "
                        f"{hint} (or raise the fraction if this is expected)")
    log.warning("%s; models see zeros for %s there", what, modality)


def _check_scorable(source: str, split: str, p: PaddedSplit, task: str) -> None:
    n = len(p)
    if n < MIN_UTTERANCES:
        raise DataError(f"{source}: split '{split}': {n} utterance(s); at least {MIN_UTTERANCES} are "
                        "needed to score it (Pearson's r needs two)")
    if split == "train":
        return
    y = np.asarray(p.labels)
    key = p.length_keys.get("label", "label")
    where = f"{source}: split '{split}': key '{key}'"
    if task == "regression":
        if np.all(y == y[0]):
            raise DataError(f"{where} is constant ({y[0]:g}) over {n} utterances; Corr (Pearson) is "
                            "undefined on constant labels")
        if not (y < 0).any() or not (y > 0).any():
            raise DataError(f"{where} has no {'negative' if not (y < 0).any() else 'positive'} score "
                            f"among {n}; Acc-2 and F1 (negative vs positive) need both")
    else:
        for k in range(y.shape[1]):
            if len(np.unique(y[:, k])) < 2:
                name = IEMOCAP_EMOTIONS[k] if k < len(IEMOCAP_EMOTIONS) else k
                raise DataError(f"{where} emotion {k} ({name}) has only class {int(y[0, k])} in {n} "
                                "utterances; its F1 and weighted accuracy need both classes")


def check_splits(source: str, splits: dict[str, PaddedSplit], task: str,
                 max_empty_fraction: float) -> dict:
    """Run every check on the padded splits (see the module docstring); raise DataError on the
    first refusal. Returns counts for the store's attributes."""
    empty = {}
    for s in SPLITS:
        _check_scorable(source, s, splits[s], task)
        empty[s] = _check_empty(source, s, splits[s], max_empty_fraction)
    ids = {s: set(splits[s].ids) for s in SPLITS}
    for s in SPLITS:
        if len(ids[s]) != len(splits[s]):
            log.warning("%s: split '%s': key 'id' has %d repeated value(s)", source, s,
                        len(splits[s]) - len(ids[s]))
    digests = {s: _utterance_digests(splits[s]) for s in SPLITS}
    shared_rows = {}
    for i, a in enumerate(SPLITS):
        for b in SPLITS[i + 1:]:
            both = ids[a] & ids[b]
            if both:
                raise DataError(f"{source}: splits '{a}' and '{b}': key 'id' has {len(both)} value(s) "
                                f"in both (e.g. {sorted(both)[:3]}): a model would be scored on utterances "
                                "it was trained or selected on")
            da, db = set(digests[a]), set(digests[b])
            same = da & db
            if same and (same == da or same == db):
                small, big = (b, a) if same == db else (a, b)  # the later split is the copy
                raise DataError(f"{source}: split '{small}' is a copy of split '{big}': all {len(set(digests[small]))} "
                                "distinct utterances appear in both (same values in the keys of every "
                                "modality, the raw text and the label; ids aside)")
            if same:
                log.warning("%s: splits '%s' and '%s': %d utterance(s) with identical features, text and "
                            "label in both", source, a, b, len(same))
            shared_rows[f"{a}/{b}"] = len(same)
    return {"empty": empty, "identical_across_splits": shared_rows}
