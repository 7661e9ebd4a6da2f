"""The radial profile's running median, all windows at once, against the per-window loop it replaced."""

import numpy as np
import pytest

from aiflat_astro.flat._radial import _radial_profile, _running_median
from aiflat_astro.flat._windows import window_mean, window_median_mad


def _loop_running_median(rs, vs, at, half_width, n_min):
    """The former implementation: one np.median per radius bin."""
    half_width = np.broadcast_to(half_width, at.shape)
    lo = np.searchsorted(rs, at - half_width)
    hi = np.searchsorted(rs, at + half_width)
    rad, med, err = np.empty(at.size), np.empty(at.size), np.empty(at.size)
    n_min = min(n_min, rs.size)
    for i in range(at.size):
        a, b = lo[i], hi[i]
        if b - a < n_min:
            j = int(np.searchsorted(rs, at[i]))
            b = min(rs.size, max(0, j - n_min // 2) + n_min)
            a = max(0, b - n_min)
        seg = vs[a:b]
        m = np.median(seg)
        rad[i] = rs[a:b].mean()
        med[i] = m
        err[i] = 1.2533 * 1.4826 * np.median(np.abs(seg - m)) / np.sqrt(seg.size)
    return rad, med, err


def _samples(rng, n, radius):
    r = np.sort(np.sqrt(rng.random(n)) * radius)
    v = 1.0 - 0.3 * np.exp(-(r / (0.4 * radius)) ** 2) + rng.normal(0, 0.02, n)
    return r, v


# the reference loop costs 1-3 s a seed: two seeds in the fast tier
@pytest.mark.parametrize("seed", [0, 3] + [pytest.param(s, marks=pytest.mark.slow) for s in (1, 2, 4, 5)])
def test_running_median_bit_identical_to_loop(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 12000))
    rs, vs = _samples(rng, n, float(rng.uniform(2, 120)))
    at = np.arange(0.0, rs[-1] + 0.1, 0.1)
    for half_width in (0.25, 1.5, rng.uniform(0.05, 3.0, at.size)):   # narrow (widened), wide, variable
        for n_min in (8, 9, 1, n + 5):                                    # even, odd, tiny, above the count
            got = _running_median(rs, vs, at, half_width, n_min)
            ref = _loop_running_median(rs, vs, at, half_width, n_min)
            for g, r in zip(got, ref, strict=True):
                np.testing.assert_array_equal(g, r)


def test_window_stats_odd_even_and_long_windows():
    rng = np.random.default_rng(7)
    x = rng.normal(size=5000)
    lo = rng.integers(0, 4000, 300)
    hi = np.minimum(x.size, lo + rng.integers(1, 1000, 300))   # lengths 1 .. 999 (pairwise halves beyond 128)
    mean = window_mean(x, lo, hi)
    med, mad = window_median_mad(x, lo, hi)
    for i in range(lo.size):
        seg = x[lo[i]:hi[i]]
        assert mean[i] == seg.mean()
        assert med[i] == np.median(seg)
        assert mad[i] == np.median(np.abs(seg - np.median(seg)))


def test_window_median_nan_and_repeated_values():
    x = np.array([1.0, 1.0, 2.0, np.nan, 2.0, 2.0, 5.0])
    med, mad = window_median_mad(x, np.array([0, 0, 4]), np.array([3, 4, 7]))
    assert med[0] == 1.0 and mad[0] == 0.0
    assert np.isnan(med[1]) and np.isnan(mad[1])
    assert med[2] == 2.0 and mad[2] == 0.0


def test_radial_profile_unchanged_on_a_shadow():
    rng = np.random.default_rng(3)
    rs, vs = _samples(rng, 20000, 60.0)
    perm = rng.permutation(rs.size)
    rc, prof, perr = _radial_profile(rs[perm], vs[perm])
    assert np.all(np.diff(rc) > 0)
    assert abs(prof[0] - 0.7) < 0.02 and abs(prof[-1] - 1.0) < 0.02
    assert np.all(perr > 0)
