"""mmsdk's interval rule, vectorised with numpy: which rows of a sequence intersect each reference
interval, clipped how, and the first alignment built on it (`align_to_reference`: a modality
collapsed onto the words). pipeline/data/align.py states the semantics reproduced (eps, the
intersection test, the clipping, the collapse and the impute) and runs both alignments per video.

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
"""
from __future__ import annotations

from typing import Callable, Iterator, NamedTuple

import numpy as np
import scipy.sparse

EPSILON = 10e-4  # mmsdk.mmdatasdk.dataset.dataset.epsilon
_CHUNK_PAIRS = 1 << 21  # candidate pairs expanded at once (bounds memory on overlapping rows)


# --------------------------------------------------------------------------------------------
# Intersecting intervals


def as_intervals(iv, what: str) -> np.ndarray:
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


def intersections(ref_iv: np.ndarray, sub_iv: np.ndarray, eps: float) -> tuple[np.ndarray, ...]:
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
    ref = as_intervals(ref_iv, "reference")
    sub = as_intervals(sub_iv, "subject")
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
