"""Word-level alignment of CMU-MOSI / CMU-MOSEI computational sequences, vectorised with numpy.

A computational sequence (`.csd`, mmsdk's HDF5 format; pipeline/data/csd.py reads it) holds, per
video, `/<root>/data/<video>/intervals` (n, 2) in seconds and `.../features` (n, d). The standard
CMU recipe (mmsdk `mmdataset`) turns the raw sequences into word-level utterances:

    ds = mmdataset({"words": ..., "COVAREP": ..., "FACET": ...})
    ds.align("words", collapse_functions=[avg])   # mean of the frames under each word
    ds.impute("words")                            # words without frames get zeros
    ds.add_computational_sequences({"labels": ...}, destination=None)
    ds.align("labels")                            # segment "vid[i]" keeps the word rows in it

This module gives the same arrays without mmsdk's per-interval Python loops.
The semantics it reproduces, with eps = mmsdk's `epsilon` = 10e-4:

* A reference interval r (a word, then a labelled segment) with |r.start - r.end| < eps is
  skipped: it gets no row at all, in any sequence.
* A subject row s (a frame, then a word row) intersects r when
  `r.end - s.start > -eps and s.end - r.start > -eps` (computed exactly as mmsdk does, in the
  same dtypes); it is clipped to [max(s.start, r.start), min(s.end, r.end)] and dropped when the
  clipped length |start - end| <= eps.
* First alignment (to the words): each modality is collapsed onto each word: the features are the
  mean of the intersecting frames, the interval is [min, max] of their clipped intervals. A word
  with no frame is imputed: zeros, and the word's own interval (as [min, max] of it, which is what
  mmsdk's collapse of the word onto itself gives).
* Second alignment (to the segments): every sequence - the words themselves and each modality's
  collapsed rows - is matched to the segment independently, using its own intervals. Rows come in
  mmsdk's order: sorted by interval start with a stable sort, ties kept in the order mmsdk lists
  them (words with frames in word order, then the imputed words in word order).

The interval arithmetic behind both rules (and how it stays linear in the frames) is
pipeline/data/intervals.py's; this module runs both alignments per video and turns the segments
into utterances.

`align_cmu` streams the `.csd` files video by video (one contiguous h5py read per array, into
buffers reused from video to video), then turns every segment of the video into one utterance:

* silence: the word rows whose token is in `drop_tokens` (default "sp") or empty are removed, and
  with them the modality rows of those same words;
* row matching: every modality row is the collapse of exactly one word, so its word index is
  carried through both alignments and rows are matched to words by that identity (equivalently, by
  the word whose interval contains the row's collapsed interval). The utterance follows the word
  rows' order. A word whose modality row fell out of the segment (its frames lie only on the other
  side of the segment boundary, so the collapsed interval's part inside the segment is <= eps) gets
  zeros for that modality, as mmsdk's impute would give; a modality row whose word is not in the
  segment's word rows is dropped. Both are counted in a log line. (CMU's tutorial instead drops
  every segment whose modalities have different row counts.) Utterances left with no word are
  skipped and counted;
* non-finite values (NaN, ±inf: the real COVAREP has them) in the aligned features are replaced by
  0 and counted, one log line per modality;
* the label is the first feature of the segment's row in the labels sequence; the utterance goes to
  the split whose fold lists its video; videos in no fold are skipped and counted.
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, NamedTuple, Sequence

import numpy as np
from tqdm import tqdm

from pipeline.data.checks import to_float32
from pipeline.data.csd import Csd, decode_tokens, token_array
from pipeline.data.intervals import EPSILON, align_to_reference, as_intervals, intersections
from pipeline.data.schema import Utterances
from pipeline.errors import DataError

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# Small array helpers


def replace_nonfinite(x: np.ndarray) -> tuple[np.ndarray, int]:
    """NaN and ±inf -> 0. Returns the array (a copy only when something was replaced) and the
    number of values replaced."""
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        return x, 0
    bad = ~np.isfinite(x)
    n = int(np.count_nonzero(bad))
    if n:
        x = x.copy()
        x[bad] = 0
    return x, n


# --------------------------------------------------------------------------------------------
# One video: both alignments


@dataclass
class Rows:
    """One sequence's rows in one segment, in mmsdk's order."""

    intervals: np.ndarray  # (k, 2) clipped to the segment
    features: np.ndarray  # (k, d); for the words, the (k, 1) tokens as stored
    word: np.ndarray  # (k,) row in words_iv of the word each row belongs to


@dataclass
class AlignedSegment:
    index: int  # row of the segment in the labels sequence; mmsdk's id is f"{video}[{index}]"
    interval: np.ndarray  # (2,)
    words: Rows
    modalities: dict[str, Rows]

    @property
    def tokens(self) -> list[str]:
        return token_array(self.words.features).tolist()


class _Matched(NamedTuple):
    """One sequence's rows in every segment, in mmsdk's order, as flat arrays grouped by segment.
    Every row of every sequence belongs to one word: `word` is its index among the kept words
    (those not shorter than eps)."""

    segment: np.ndarray  # (p,) number of the segment among the live ones, ascending
    start: np.ndarray  # (p,) the row's interval, clipped to the segment
    end: np.ndarray
    word: np.ndarray  # (p,)


class _VideoRows(NamedTuple):
    live: np.ndarray  # rows of the segments not shorter than eps
    kept: np.ndarray  # rows of the words not shorter than eps
    features: dict  # sequence -> one row per kept word: the (k, 1) tokens, or a modality's means
    matched: dict  # sequence -> _Matched; sequence None is the words themselves


def _align_segments(words_iv, words, modalities: Mapping[str, tuple[np.ndarray, np.ndarray]],
                    segments_iv, eps: float) -> _VideoRows:
    """Both alignments for one video, every segment at once (the arguments are align_video's):
    per sequence, its rows in all the segments as flat arrays, and per kept word, the features
    of its row."""
    words_iv = as_intervals(words_iv, "words")
    tokens = np.asarray(words)
    tokens = tokens.reshape(len(tokens), -1)
    if len(tokens) != len(words_iv):
        raise ValueError(f"words: {len(words_iv)} intervals but {len(tokens)} tokens")
    seg_iv = as_intervals(segments_iv, "segments")

    # First alignment. Words shorter than eps disappear from every sequence.
    kept = np.flatnonzero(~(abs(words_iv[:, 0] - words_iv[:, 1]) < eps))
    ref = words_iv[kept]
    # per sequence: the intervals of its row of each kept word, and mmsdk's order of those rows.
    # The words aligned to themselves, collapsed, are [min, max] of their own interval.
    features = {None: tokens[kept]}
    rows = {None: (np.stack([ref.min(axis=1), ref.max(axis=1)], axis=1), np.arange(len(kept)))}
    for name, (iv, feat) in modalities.items():
        c = align_to_reference(ref, iv, feat, eps)
        features[name] = c.features
        # mmsdk lists the words with frames first, the imputed ones after, each in word order
        rows[name] = (c.intervals, np.concatenate([np.flatnonzero(c.hit), np.flatnonzero(~c.hit)]))

    # Second alignment: each sequence, sorted by start (stable), against the segments.
    live = np.flatnonzero(~(abs(seg_iv[:, 0] - seg_iv[:, 1]) < eps))
    matched = {}
    for name, (iv, listed) in rows.items():
        order = listed[np.argsort(iv[listed, 0], kind="stable")]
        k, j, start, end = intersections(seg_iv[live], iv[order], eps)
        matched[name] = _Matched(k, start, end, order[j])
    return _VideoRows(live, kept, features, matched)


def align_video(words_iv, words, modalities: Mapping[str, tuple[np.ndarray, np.ndarray]],
                segments_iv, eps: float = EPSILON) -> list[AlignedSegment]:
    """Both alignments of mmsdk's recipe for one video. `words`: the (n,) or (n, 1) tokens of the
    words sequence; `modalities`: name -> (intervals, features). Returns one AlignedSegment per
    segment row not shorter than eps, in row order, with every word row (silence included) and,
    per modality, its rows in that segment ((0, d) where mmsdk has no entry)."""
    v = _align_segments(words_iv, words, modalities, segments_iv, eps)
    seg_iv = as_intervals(segments_iv, "segments")
    per_seq = {}
    for name, x in v.matched.items():
        intervals = np.stack([x.start, x.end], axis=1)
        feats, word = v.features[name][x.word], v.kept[x.word]
        bounds = np.searchsorted(x.segment, np.arange(len(v.live) + 1))
        per_seq[name] = [Rows(intervals[s:e], feats[s:e], word[s:e])
                         for s, e in zip(bounds[:-1], bounds[1:])]
    return [AlignedSegment(int(i), seg_iv[i].copy(), per_seq[None][n],
                           {name: per_seq[name][n] for name in modalities})
            for n, i in enumerate(v.live)]


# --------------------------------------------------------------------------------------------
# The CMU datasets


def _isin(keys: np.ndarray, of: np.ndarray) -> np.ndarray:
    """np.isin for integer arrays, without its overhead on a few hundred keys."""
    if not len(of):
        return np.zeros(len(keys), dtype=bool)
    of = np.sort(of)
    return of[np.minimum(np.searchsorted(of, keys), len(of) - 1)] == keys


def align_cmu(paths: Mapping[str, str | Path], folds: Mapping[str, Sequence[str]],
              modality_keys: Mapping[str, str] | None = None, drop_tokens: Sequence[str] = ("sp",),
              progress: bool = True, eps: float = EPSILON) -> dict[str, Utterances]:
    """Align CMU-MOSI / CMU-MOSEI computational sequences into word-level utterances per split.

    paths: .csd path for "words", "labels" and every value of modality_keys.
    folds: split -> video ids (mmsdk's standard folds). modality_keys: Utterances field ->
    computational sequence name (default audio: COVAREP, vision: FACET). Returns split ->
    Utterances for every split in `folds`, in the order mmsdk lists the segments (videos as the
    labels file lists them, then segment rows). See the module docstring for the semantics."""
    modality_keys = dict(modality_keys or {"audio": "COVAREP", "vision": "FACET"})
    if set(modality_keys) != {"audio", "vision"}:
        raise ValueError(f"modality_keys must map 'audio' and 'vision', got {sorted(modality_keys)}")
    names = ["words", "labels", *modality_keys.values()]
    missing = [n for n in names if n not in paths]
    if missing:
        raise DataError(f"no .csd path given for {missing} (got {sorted(paths)})")
    split_of: dict[str, str] = {}
    for split, vids in folds.items():
        for vid in vids:
            if split_of.setdefault(vid, split) != split:
                raise DataError(f"folds: video {vid!r} is in both {split_of[vid]!r} and {split!r}")
    drop = set(drop_tokens) | {""}

    out = {split: Utterances(ids=[], words=[], audio=[], vision=[], labels=[]) for split in folds}
    nonfinite = {f: 0 for f in modality_keys}
    zero_filled = {f: 0 for f in modality_keys}
    stray = {f: 0 for f in modality_keys}
    n_empty = 0
    with contextlib.ExitStack() as stack:
        csd = {}
        for name in names:
            csd[name] = Csd(paths[name], name)
            stack.callback(csd[name].close)
        # like mmsdk's unify: only videos every sequence has
        common = set.intersection(*(set(c.videos) for c in csd.values()))
        videos = [v for v in csd["labels"].videos if v in common]
        partial = len(set().union(*(c.videos for c in csd.values())) - common)
        if partial:
            log.warning("skipped %d videos missing from at least one of %s", partial, names)
        no_fold = [v for v in videos if v not in split_of]
        if no_fold:
            log.info("skipped %d videos that are in no fold (e.g. %s)", len(no_fold), no_fold[:3])
        absent = [v for v in split_of if v not in common]
        if absent:
            log.warning("%d fold videos are not in every computational sequence (e.g. %s)",
                        len(absent), absent[:3])
        videos = [v for v in videos if v in split_of]

        for vid in tqdm(videos, desc="align", unit="video", disable=None if progress else True):
            w_iv, w_feat = csd["words"].read(vid)
            l_iv, l_feat = csd["labels"].read(vid)
            if l_feat.shape[1] == 0:
                raise DataError(f"{paths['labels']}: video {vid!r} of labels has no label column")
            mods = {key: csd[key].read(vid) for key in modality_keys.values()}
            try:
                v = _align_segments(w_iv, w_feat, mods, l_iv, eps)
            except ValueError as e:  # malformed arrays that passed the reader's checks
                files = ", ".join(str(paths[n]) for n in names)
                raise DataError(f"video {vid!r} ({files}): {e}") from e

            # Every segment at once. The utterances' rows are the word rows without silence, in
            # segment order; a row is identified by (segment, word), and a modality's row of the
            # same (segment, word) fills it (each modality row is the collapse of one word).
            tokens = decode_tokens(w_feat)
            silent = np.array([t.strip() in drop for t in tokens], dtype=bool)[v.kept]
            words = v.matched[None]
            keep = ~silent[words.word]
            seg, word = words.segment[keep], words.word[keep]
            key_all = words.segment * len(v.kept) + words.word
            feats = {}
            for field, key in modality_keys.items():
                rows = v.matched[key]
                key_rows = rows.segment * len(v.kept) + rows.word
                has = _isin(key_all[keep], key_rows)
                f = v.features[key][word]
                f[~has] = 0
                f, n_bad = replace_nonfinite(f)
                zero_filled[field] += int(np.count_nonzero(~has))
                stray[field] += int(np.count_nonzero(~_isin(key_rows, key_all)))
                nonfinite[field] += n_bad
                feats[field] = to_float32(f, f"{paths[key]}: split '{split_of[vid]}': video {vid!r} "
                                             f"key 'features'")

            # utterance n: rows bounds[n]:bounds[n + 1]; segments left with no word are skipped
            bounds = np.searchsorted(seg, np.arange(len(v.live) + 1)).tolist()
            full = [n for n in range(len(v.live)) if bounds[n] < bounds[n + 1]]
            n_empty += len(v.live) - len(full)
            kept_tokens = [tokens[w] for w in v.kept[word].tolist()]
            live, labels = v.live.tolist(), l_feat[v.live, 0].tolist()
            split = out[split_of[vid]]
            split.ids.extend(f"{vid}[{live[n]}]" for n in full)
            split.words.extend(kept_tokens[bounds[n]:bounds[n + 1]] for n in full)
            split.labels.extend(labels[n] for n in full)
            for field, f in feats.items():
                getattr(split, field).extend(f[bounds[n]:bounds[n + 1]] for n in full)

    for field, key in modality_keys.items():
        log.log(logging.WARNING if nonfinite[field] else logging.INFO,
                "%s (%s): replaced %d non-finite values (NaN/±inf) by 0", field, key, nonfinite[field])
        if zero_filled[field] or stray[field]:
            log.info("%s (%s): %d words had no row in their segment (zero-filled), %d rows had no "
                     "word there (dropped)", field, key, zero_filled[field], stray[field])
    if n_empty:
        log.info("skipped %d segments with no word left after dropping %s", n_empty, sorted(drop))
    for u in out.values():
        u.labels = np.asarray(u.labels, dtype=np.float32)
    log.info("aligned %s utterances from %d videos",
             ", ".join(f"{s} {len(u)}" for s, u in out.items()), len(videos))
    return out
