"""Word-level alignment of CMU-MOSI / CMU-MOSEI computational sequences, vectorised with numpy.

A computational sequence (`.csd`, mmsdk's HDF5 format) holds, per video,
`/<root>/data/<video>/intervals` (n, 2) in seconds and `.../features` (n, d). The standard CMU
recipe (mmsdk `mmdataset`) turns the raw sequences into word-level utterances:

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

Implementation. Subject rows are sorted by start once per video (frames come sorted: nothing is
copied); for every reference interval the rows that can intersect form one contiguous range
[lo, hi), estimated with `np.searchsorted` and checked against the exact float predicate (start <
... for the upper end, the running maximum of the ends for the lower end; a vectorised bisection
settles the rare references where rounding fooled the estimate). Every candidate pair is then
tested exactly, in bounded chunks: for frames the candidates are the frames under the word plus
one or two at each edge, so this is linear in the frames. The sums are a sparse 0/1 (words x
frames) matrix times the features: every frame is read once and summed row by row in the
features' own dtype, as `np.average` does, so NaN/±inf propagate alike and float32 means come out
bit for bit equal to mmsdk's (for rows given in time order; to float rounding otherwise).

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
from typing import Callable, Iterator, Mapping, NamedTuple, Sequence

import h5py
import numpy as np
import scipy.sparse
from tqdm import tqdm

from pipeline.data.checks import to_float32
from pipeline.data.schema import Utterances
from pipeline.errors import DataError

log = logging.getLogger(__name__)

EPSILON = 10e-4  # mmsdk.mmdatasdk.dataset.dataset.epsilon
_CHUNK_PAIRS = 1 << 21  # candidate pairs expanded at once (bounds memory on overlapping rows)


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


def _as_intervals(iv, what: str) -> np.ndarray:
    iv = np.asarray(iv)
    if iv.ndim != 2 or iv.shape[1] != 2:
        raise ValueError(f"{what}: intervals must have shape (n, 2), got {iv.shape}")
    if not np.issubdtype(iv.dtype, np.floating):
        iv = iv.astype(np.float64)
    if not np.all(np.isfinite(iv)):
        # the bisection below relies on a total order; mmsdk's own sort is undefined with NaN too
        raise ValueError(f"{what}: intervals contain NaN or inf")
    return iv


def _first_true(n: int, pred: Callable[[np.ndarray, np.ndarray], np.ndarray],
                guess: np.ndarray) -> np.ndarray:
    """For one monotone predicate per query over 0..n-1 (False...False True...True), the first
    index where each is True (n if never). `pred(q, j)` evaluates the predicates of queries q at
    indices j. `guess` (in 0..n, e.g. a searchsorted estimate) is checked exactly at its two
    sides; only the queries where it is wrong are bisected, log2(n) rounds of array operations."""
    m, g = len(guess), guess
    if n == 0:
        return np.zeros(m, dtype=np.intp)
    q = np.arange(m)
    exact = (((g == n) | pred(q, np.minimum(g, n - 1)))
             & ((g == 0) | ~pred(q, np.maximum(g - 1, 0))))
    lo = np.where(exact, g, 0)
    hi = np.where(exact, g, n)
    q = q[~exact]
    while q.size:
        mid = (lo[q] + hi[q]) // 2
        ok = pred(q, mid)
        hi[q[ok]] = mid[ok]
        lo[q[~ok]] = mid[~ok] + 1
        q = q[lo[q] < hi[q]]
    return lo


class _Columns(NamedTuple):
    """(n, 2) intervals as two contiguous columns (numpy is several times slower on the strided
    column views of an (n, 2) array)."""

    start: np.ndarray
    end: np.ndarray

    @classmethod
    def of(cls, iv: np.ndarray) -> "_Columns":
        return cls(np.ascontiguousarray(iv[:, 0]), np.ascontiguousarray(iv[:, 1]))

    def take(self, rows: np.ndarray) -> "_Columns":
        return _Columns(self.start[rows], self.end[rows])


def _candidate_ranges(ref: _Columns, sub: _Columns, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """For sub sorted by start: per reference row, the range [lo, hi) of sub rows outside which
    mmsdk's intersection test fails. The test is evaluated with mmsdk's exact arithmetic:
    (-s0) - (-r1) rounds exactly like r1 - s0, so `r1 - s0 > -eps` is mmsdk's first condition."""
    (r0, r1), (s0, s1) = ref, sub
    n = len(s0)
    # fl(r1 - s0) is non-increasing in s0, so the first condition holds on a prefix of sub
    hi = _first_true(n, lambda q, j: ~((r1[q] - s0[j]) > -eps), np.searchsorted(s0, r1 + eps))
    # the second, s1 - r0 > -eps, fails for every row before the first j whose running max of
    # the ends passes it (fl(x - r0) is non-decreasing in x)
    run_max = s1 if np.all(s1[:-1] <= s1[1:]) else np.maximum.accumulate(s1)
    lo = _first_true(n, lambda q, j: (run_max[j] - r0[q]) > -eps,
                     np.searchsorted(run_max, r0 - eps, "right"))
    return lo, np.maximum(lo, hi)


def _expand(starts: np.ndarray, stops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ragged ranges -> (range number, index) pairs, in range order."""
    lens = np.maximum(stops - starts, 0)
    group = np.repeat(np.arange(len(starts)), lens)
    offsets = np.arange(group.size) - np.repeat(np.cumsum(lens) - lens, lens)
    return group, np.repeat(starts, lens) + offsets


def _pairs(ref: _Columns, sub: _Columns, eps: float, starts: np.ndarray,
           stops: np.ndarray) -> Iterator[tuple[np.ndarray, ...]]:
    """Test every candidate pair (reference k, sub row j in [starts[k], stops[k])) with mmsdk's
    exact rule, in chunks of about _CHUNK_PAIRS pairs holding whole references. Yields
    (k, j, clipped start, clipped end) for the intersecting pairs, ordered by k then j."""
    lens = np.maximum(stops - starts, 0)
    cum = np.cumsum(lens)
    first = 0
    while first < len(starts):
        # the largest block of whole ranges within the chunk budget (at least one range)
        last = max(int(np.searchsorted(cum, (cum[first - 1] if first else 0) + _CHUNK_PAIRS, "right")),
                   first + 1)
        k, j = _expand(starts[first:last], stops[first:last])
        k += first
        (r0, r1), (s0, s1) = ref.take(k), sub.take(j)
        c0, c1 = np.maximum(s0, r0), np.minimum(s1, r1)
        keep = ((r1 - s0) > -eps) & ((s1 - r0) > -eps) & (abs(c0 - c1) > eps)
        if not keep.all():
            k, j, c0, c1 = k[keep], j[keep], c0[keep], c1[keep]
        yield k, j, c0, c1
        first = last


def _intersections(ref_iv: np.ndarray, sub_iv: np.ndarray, eps: float) -> tuple[np.ndarray, ...]:
    """Every intersecting (reference k, sub row j) pair, for sub sorted by start, ordered by k then
    j: (k, j, clipped start, clipped end)."""
    ref, sub = _Columns.of(ref_iv), _Columns.of(sub_iv)
    lo, hi = _candidate_ranges(ref, sub, eps)
    parts = list(_pairs(ref, sub, eps, lo, hi))
    if len(parts) == 1:
        return parts[0]
    if not parts:
        empty = np.zeros(0, dtype=np.intp)
        no_iv = np.zeros(0, dtype=np.result_type(ref_iv.dtype, sub_iv.dtype))
        return empty, empty, no_iv, no_iv
    return tuple(np.concatenate(x) for x in zip(*parts))


def _is_sorted(iv: _Columns) -> bool:
    """Sorted by start, ties by end."""
    s0, s1 = iv
    if not np.all(s0[:-1] <= s0[1:]):
        return False
    tie = np.flatnonzero(s0[:-1] == s0[1:])
    return not tie.size or bool(np.all(s1[tie] <= s1[tie + 1]))


class _Accumulator:
    """Per reference row: the sum of the intersecting rows' features, their count, and [min, max]
    of their clipped intervals, fed with intersecting pairs grouped by reference."""

    def __init__(self, m: int, feat: np.ndarray, iv_dtype):
        self.m, self.feat = m, feat
        # the features' own float dtype: mmsdk's `np.average(features, axis=0)` sums in it too
        # (scipy.sparse has no float16: those, and integers, are summed in float64)
        self.dtype = feat.dtype if feat.dtype in (np.float32, np.float64) else np.dtype(np.float64)
        self.sums = np.zeros((m, feat.shape[1]), dtype=self.dtype)
        self.counts = np.zeros(m, dtype=np.int64)
        self.mins = np.full(m, np.inf, dtype=iv_dtype)
        self.maxs = np.full(m, -np.inf, dtype=iv_dtype)

    def add(self, k: np.ndarray, rows: np.ndarray, c0: np.ndarray, c1: np.ndarray) -> None:
        """Pairs (reference k, feature row), k ascending, with their clipped intervals; every
        reference's pairs come in a single call."""
        indptr = np.searchsorted(k, np.arange(self.m + 1))
        # the sums as a sparse 0/1 (m, n) matrix times the features: every selected row is read
        # once, with no gathered copy, and summed row by row in order, as np.average does (NaN
        # and ±inf propagate alike)
        select = scipy.sparse.csr_array((np.ones(len(rows), dtype=self.dtype), rows, indptr),
                                        shape=(self.m, len(self.feat)))
        self.sums += select @ self.feat
        self.counts += np.diff(indptr)
        hit = np.flatnonzero(indptr[1:] > indptr[:-1])
        if hit.size:
            first = indptr[hit]
            self.mins[hit] = np.minimum.reduceat(np.minimum(c0, c1), first)
            self.maxs[hit] = np.maximum.reduceat(np.maximum(c0, c1), first)


# --------------------------------------------------------------------------------------------
# First alignment: collapse a modality onto reference intervals


class Collapsed(NamedTuple):
    features: np.ndarray  # (m, d) float64: mean of the intersecting rows; 0 where none (impute)
    intervals: np.ndarray  # (m, 2): [min, max] of the clipped rows; the ref's [min, max] where none
    hit: np.ndarray  # (m,) bool: the reference row had at least one intersecting row


def align_to_reference(ref_iv, sub_iv, sub_feat, eps: float = EPSILON) -> Collapsed:
    """mmsdk's `align(ref, collapse_functions=[avg])` followed by `impute(ref)` for one video:
    for every reference interval, the mean of the sub rows intersecting it (see the module
    docstring for the rule), [min, max] of their clipped intervals, and whether there were any.
    References shorter than eps count as having none (mmsdk gives them no row at all).
    sub rows may come in any order and overlap; zero-length rows never intersect."""
    ref = _as_intervals(ref_iv, "reference")
    sub = _as_intervals(sub_iv, "subject")
    feat = np.asarray(sub_feat)
    if feat.ndim != 2 or len(feat) != len(sub):
        raise ValueError(f"subject features must have shape ({len(sub)}, d), got {feat.shape}")
    m = len(ref)
    iv_dtype = np.result_type(ref.dtype, sub.dtype)  # the dtype of mmsdk's clipped intervals

    acc = _Accumulator(m, feat, iv_dtype)
    # sort the intervals by start (ties by end); frames usually come sorted already. The
    # features stay where they are: pairs refer to them through `order`.
    ref, sub = _Columns.of(ref), _Columns.of(sub)
    order = None
    if not _is_sorted(sub):
        order = np.lexsort((sub.end, sub.start))
        sub = sub.take(order)
    lo, hi = _candidate_ranges(ref, sub, eps)
    alive = ~(abs(ref.start - ref.end) < eps)  # mmsdk skips (near) zero-length references
    hi = np.where(alive, hi, lo)
    # For frames (sorted, contiguous) [lo, hi) is the frames under the reference plus one or two
    # at each edge, so the candidate pairs are about as many as the frames: one chunk, linear.
    for k, j, c0, c1 in _pairs(ref, sub, eps, lo, hi):
        acc.add(k, j if order is None else order[j], c0, c1)

    hit = acc.counts > 0
    # float64 means (rows without a hit are 0 / 1); from float32 sums, rounding them back to
    # float32 gives exactly mmsdk's float32 mean
    features = acc.sums / np.maximum(acc.counts, 1)[:, None]
    own = np.stack([np.minimum(ref.start, ref.end), np.maximum(ref.start, ref.end)], axis=1)
    intervals = np.where(hit[:, None], np.stack([acc.mins, acc.maxs], axis=1), own).astype(iv_dtype)
    return Collapsed(features, intervals, hit)


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
        return _token_array(self.words.features).tolist()


def _decode(token) -> str:
    return token.decode("utf-8", errors="replace") if isinstance(token, bytes) else str(token)


def _tokens(feat: np.ndarray) -> list[str]:
    """The words sequence's (n, 1) features (bytes, as the .csd stores them) as str."""
    flat = np.asarray(feat).reshape(len(feat), -1)[:, 0].tolist() if len(feat) else []
    return [_decode(t) for t in flat]


def _token_array(feat: np.ndarray) -> np.ndarray:
    """The words sequence's (n, 1) features as an (n,) str array."""
    return np.array(_tokens(feat), dtype=str)


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
    words_iv = _as_intervals(words_iv, "words")
    tokens = np.asarray(words)
    tokens = tokens.reshape(len(tokens), -1)
    if len(tokens) != len(words_iv):
        raise ValueError(f"words: {len(words_iv)} intervals but {len(tokens)} tokens")
    seg_iv = _as_intervals(segments_iv, "segments")

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
        k, j, start, end = _intersections(seg_iv[live], iv[order], eps)
        matched[name] = _Matched(k, start, end, order[j])
    return _VideoRows(live, kept, features, matched)


def align_video(words_iv, words, modalities: Mapping[str, tuple[np.ndarray, np.ndarray]],
                segments_iv, eps: float = EPSILON) -> list[AlignedSegment]:
    """Both alignments of mmsdk's recipe for one video. `words`: the (n,) or (n, 1) tokens of the
    words sequence; `modalities`: name -> (intervals, features). Returns one AlignedSegment per
    segment row not shorter than eps, in row order, with every word row (silence included) and,
    per modality, its rows in that segment ((0, d) where mmsdk has no entry)."""
    v = _align_segments(words_iv, words, modalities, segments_iv, eps)
    seg_iv = _as_intervals(segments_iv, "segments")
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
# Reading .csd files lazily


class _Csd:
    """One computational sequence opened with h5py; reads one video at a time."""

    def __init__(self, path, name: str):
        self.path, self.name = Path(path), name
        if not self.path.is_file():
            raise DataError(f"{self.path}: {name} computational sequence not found")
        try:
            self.h5 = h5py.File(self.path, "r")
        except OSError as e:
            raise DataError(f"{self.path}: {name} is not a readable HDF5 computational sequence "
                            f"(truncated download or not a .csd file?): {e}") from e
        try:
            roots = list(self.h5.keys())
            self.data = self.h5[roots[0]]["data"]  # mmsdk reads the first root group too
            self.videos = list(self.data.keys())
        except Exception as e:  # noqa: BLE001 - h5py raises many types on corrupt files
            self.h5.close()
            raise DataError(f"{self.path}: {name} has no /<root>/data group of videos "
                            f"(corrupt or not a computational sequence): {e!r}") from e
        self.dim: tuple[int, str] | None = None  # feature size, and the video it was first seen in
        self._buffers: dict[str, np.ndarray] = {}  # "intervals" / "features" -> reusable memory

    def read(self, vid: str) -> tuple[np.ndarray, np.ndarray]:
        """One video's (intervals, features), each in one contiguous read. Numeric arrays land in
        buffers reused from video to video (fresh memory for every video costs page faults about
        as much as the read itself): they are valid until the next call, so copy what must
        outlive it."""
        try:
            iv, feat = self._read(vid, "intervals"), self._read(vid, "features")
        except Exception as e:  # noqa: BLE001
            raise DataError(f"{self.path}: video {vid!r} of {self.name}: cannot read intervals/"
                            f"features (truncated or corrupt file?): {e!r}") from e
        where = f"{self.path}: video {vid!r} of {self.name}"
        if iv.ndim != 2 or iv.shape[1] != 2:
            raise DataError(f"{where}: intervals have shape {iv.shape}, expected (n, 2)")
        if feat.ndim != 2:
            raise DataError(f"{where}: features have shape {feat.shape}, expected (n, d)")
        if len(iv) != len(feat):
            raise DataError(f"{where}: {len(iv)} intervals but {len(feat)} feature rows")
        if not np.issubdtype(iv.dtype, np.number) or not np.all(np.isfinite(iv)):
            raise DataError(f"{where}: intervals are not finite numbers")
        if self.dim is None:
            self.dim = (feat.shape[1], vid)
        elif feat.shape[1] != self.dim[0]:
            raise DataError(f"{where}: features have {feat.shape[1]} columns but video "
                            f"{self.dim[1]!r} has {self.dim[0]}")
        return iv, feat

    def _read(self, vid: str, key: str) -> np.ndarray:
        # h5py's low-level API: the high-level Group / Dataset objects cost more to create than
        # most videos' reads
        ds = h5py.h5d.open(self.data.id, f"{vid}/{key}".encode())
        shape, dtype = ds.shape, ds.dtype
        size = int(np.prod(shape))
        if dtype.kind not in "iufS" or size == 0:  # variable-length strings, empty videos
            return h5py.Dataset(ds)[()]
        buf = self._buffers.get(key)
        if buf is None or buf.dtype != dtype or buf.size < size:
            buf = self._buffers[key] = np.empty(size + size // 4, dtype=dtype)  # room to grow
        out = buf[:size].reshape(shape)
        ds.read(h5py.h5s.ALL, h5py.h5s.ALL, out)
        return out

    def close(self) -> None:
        self.h5.close()


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
            csd[name] = _Csd(paths[name], name)
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
            tokens = _tokens(w_feat)
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
