"""Statistics of many windows ``[lo, hi)`` of one array at once, bit-identical to NumPy's per slice.

`window_mean` and `window_median_mad` return, for every window, what
``x[lo:hi].mean()``, ``np.median(x[lo:hi])`` and ``np.median(np.abs(x[lo:hi]
- median))`` return, without a Python loop over the windows: the radial
profile of a large shadow has thousands of them (`aiflat_astro.flat._radial`).
The mean follows NumPy's pairwise summation (8 partial sums in blocks of
at most 128 values, halves beyond), so every bit is the same; the medians
are order statistics of the windows sorted side by side.
"""

import numpy as np


_PAIRWISE_BLOCK = 128   # NumPy's PW_BLOCKSIZE: longer runs are summed as two halves
_CHUNK_VALUES = 2 ** 21  # values sorted at once (16 MB of float64) by `window_median_mad`


def _gather(x, idx):
    """``x[idx]`` with indices past the end clipped (their values are masked out by the caller)."""
    return x[np.minimum(idx, x.size - 1)]


def _short_sums(x, start, n):
    """Sums of runs shorter than 8 values: one after the other from 0, as NumPy does."""
    acc = np.zeros(start.size)
    for i in range(7):
        acc = acc + np.where(i < n, _gather(x, start + i), 0.0)
    return acc


def _block_sums(x, start, n):
    """Sums of runs of 8 to `_PAIRWISE_BLOCK` values: 8 partial sums, paired, then the rest in turn."""
    blocks = n // 8
    part = _gather(x, start[:, None] + np.arange(8))
    for k in range(1, _PAIRWISE_BLOCK // 8):
        more = _gather(x, start[:, None] + 8 * k + np.arange(8))
        part = part + np.where((k < blocks)[:, None], more, 0.0)
    acc = ((part[:, 0] + part[:, 1]) + (part[:, 2] + part[:, 3])) + \
          ((part[:, 4] + part[:, 5]) + (part[:, 6] + part[:, 7]))
    tail = start + 8 * blocks
    for i in range(7):
        acc = acc + np.where(i < n % 8, _gather(x, tail + i), 0.0)
    return acc


def _pairwise_sums(x, start, n):
    """``np.add.reduce(x[s:s + k])`` for every ``(s, k)`` of ``(start, n)``, bit for bit."""
    out = np.empty(start.size)
    short = n < 8
    block = ~short & (n <= _PAIRWISE_BLOCK)
    long_ = n > _PAIRWISE_BLOCK
    if short.any():
        out[short] = _short_sums(x, start[short], n[short])
    if block.any():
        out[block] = _block_sums(x, start[block], n[block])
    if long_.any():
        half = n[long_] // 2
        half -= half % 8
        out[long_] = _pairwise_sums(x, start[long_], half) + \
            _pairwise_sums(x, start[long_] + half, n[long_] - half)
    return out


def window_mean(x, lo, hi):
    """``x[lo[i]:hi[i]].mean()`` for every window, bit-identical to NumPy's; windows must not be empty.

    Examples
    --------
    >>> import numpy as np
    >>> window_mean(np.arange(10.0), np.array([0, 2]), np.array([4, 10])).tolist()
    [1.5, 5.5]
    """
    x = np.ascontiguousarray(x, dtype=np.float64)
    lo, hi = np.asarray(lo, np.int64), np.asarray(hi, np.int64)
    return _pairwise_sums(x, lo, hi - lo) / (hi - lo)


def _middle(rows, n):
    """The median of each sorted row's first ``n`` values: its middle one, or the mean of the two."""
    at = np.arange(rows.shape[0])
    upper = rows[at, n // 2]
    lower = rows[at, np.maximum(n - 1, 0) // 2]
    return np.where(n % 2 == 1, upper, (lower + upper) / 2)


def _chunk_median_mad(x, lo, n):
    width = int(n.max())
    idx = lo[:, None] + np.arange(width)
    inside = np.arange(width) < n[:, None]
    rows = np.where(inside, _gather(x, idx), np.inf)
    med = _middle(np.sort(rows, axis=1), n)
    dev = np.where(inside, np.abs(rows - med[:, None]), np.inf)
    mad = _middle(np.sort(dev, axis=1), n)
    return med, mad


def window_median_mad(x, lo, hi):
    """``np.median(x[lo:hi])`` and the median absolute deviation from it, for every window.

    Bit-identical to NumPy's per slice (a window holding a NaN gives NaN for
    both); windows must not be empty.  The windows are sorted side by side
    in chunks of similar length (at most `_CHUNK_VALUES` values at once).

    Examples
    --------
    >>> import numpy as np
    >>> med, mad = window_median_mad(np.array([3.0, 1.0, 2.0, 10.0]), np.array([0, 0]), np.array([3, 4]))
    >>> med.tolist(), mad.tolist()
    ([2.0, 2.5], [1.0, 1.0])
    """
    x = np.ascontiguousarray(x, dtype=np.float64)
    lo, hi = np.asarray(lo, np.int64), np.asarray(hi, np.int64)
    n = hi - lo
    med, mad = np.empty(lo.size), np.empty(lo.size)
    order = np.argsort(n, kind="stable")
    start = 0
    while start < order.size:
        stop = min(order.size, start + max(1, _CHUNK_VALUES // max(int(n[order[start]]), 1)))
        while stop - start > 1 and int(n[order[stop - 1]]) * (stop - start) > _CHUNK_VALUES:
            stop = start + (stop - start) // 2     # sorted by length: the last row is the longest
        pick = order[start:stop]
        med[pick], mad[pick] = _chunk_median_mad(x, lo[pick], n[pick])
        start = stop
    nans = np.concatenate([[0], np.cumsum(np.isnan(x))])
    has_nan = nans[hi] > nans[lo]
    med[has_nan] = np.nan
    mad[has_nan] = np.nan
    return med, mad
