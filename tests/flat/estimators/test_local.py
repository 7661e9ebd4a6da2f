"""Tests of the local clean estimates (aiflat_astro.flat.estimators.local)."""

import numpy as np
import pytest

from aiflat_astro.flat.estimators.local import LOCAL_METHODS, inpaint_local, match_photometry
from aiflat_astro.utils.exceptions import AiflatDeprecationWarning, InputError


def _plane(shape=(80, 96)):
    y, x = np.mgrid[0:shape[0], 0:shape[1]]
    return (1000 + 3.0 * x - 2.0 * y).astype(np.float64)


def _disc(shape, cy, cx, r):
    y, x = np.mgrid[0:shape[0], 0:shape[1]]
    return np.hypot(y - cy, x - cx) < r


@pytest.mark.parametrize("method", LOCAL_METHODS)
def test_linear_background_is_reconstructed(method):
    truth = _plane()
    mask = _disc(truth.shape, 40, 50, 9) | _disc(truth.shape, 15, 15, 5)
    dusty = np.where(mask, 0.7 * truth, truth)
    clean = inpaint_local(dusty, mask, method=method)
    assert clean.dtype == np.float32
    assert np.max(np.abs(clean[mask] / truth[mask] - 1)) < 1e-4
    # pixels with weight 0 are never touched, bit for bit
    assert np.array_equal(clean[~mask], dusty[~mask].astype(np.float32))


def test_quadratic_background_needs_curvature():
    y, x = np.mgrid[0:80, 0:80]
    truth = 1000 + 0.4 * (x - 40.0) ** 2 + 0.3 * (y - 30.0) ** 2
    mask = _disc(truth.shape, 40, 40, 10)
    dusty = np.where(mask, 0.5 * truth, truth)
    err = {m: np.abs(inpaint_local(dusty, mask, method=m, normalize=False)[mask] / truth[mask] - 1).max()
           for m in ("harmonic", "biharmonic", "poly")}
    # a harmonic function cannot follow a positive Laplacian; biharmonic and the polynomial can
    assert err["poly"] < 1e-6
    assert err["biharmonic"] < 0.2 * err["harmonic"]


def _hot_pixel_case():
    truth = _plane((40, 40))
    weight = np.zeros(truth.shape, np.float32)
    weight[15:25, 15:25] = 1.0
    weight[14, 15:25] = 0.3
    dusty = truth.copy()
    dusty[15:25, 15:25] *= 0.8
    ignore = np.zeros(truth.shape, bool)
    ignore[13, 20] = True            # a hot pixel next to the region: not used as boundary
    dusty[13, 20] = 1e6
    return truth, weight, dusty, ignore


def test_soft_weight_and_ignored_pixels():
    truth, weight, dusty, ignore = _hot_pixel_case()
    clean = inpaint_local(dusty, weight, ignore=ignore, method="harmonic", normalize=False)
    assert np.abs(clean[15:25, 15:25] / truth[15:25, 15:25] - 1).max() < 1e-3
    assert clean[13, 20] == np.float32(1e6)  # weight 0: unchanged even though ignored
    assert np.abs(clean[14, 20] / truth[14, 20] - 1) < 1e-3  # weight 0.3: reconstructed too
    with pytest.raises(InputError, match="ignore mask shape"):
        inpaint_local(dusty, weight, ignore=ignore[:-1])


def test_invalid_is_deprecated_for_ignore():
    truth, weight, dusty, ignore = _hot_pixel_case()
    new = inpaint_local(dusty, weight, ignore=ignore, method="harmonic", normalize=False)
    with pytest.warns(AiflatDeprecationWarning, match=r"inpaint_local\(invalid=\.\.\.\) is deprecated; use ign") as rec:
        old = inpaint_local(dusty, weight, invalid=ignore, method="harmonic", normalize=False)
    assert rec[0].filename == __file__
    np.testing.assert_array_equal(new, old)
    assert not np.array_equal(new, inpaint_local(dusty, weight, method="harmonic", normalize=False))
    with pytest.raises(InputError, match="not both"):
        inpaint_local(dusty, weight, ignore=ignore, invalid=ignore)


def test_region_at_the_image_border():
    truth = _plane((50, 50))
    mask = np.zeros(truth.shape, bool)
    mask[0:8, 0:10] = True
    dusty = np.where(mask, 0.9 * truth, truth)
    for method in LOCAL_METHODS:
        clean = inpaint_local(dusty, mask, method=method)
        assert np.abs(clean[mask] / truth[mask] - 1).max() < 0.01, method


def test_large_region_coarse_to_fine(monkeypatch):
    import aiflat_astro.flat.estimators.local as ip

    monkeypatch.setattr(ip, "_DIRECT_LIMIT", 500)
    truth = _plane((100, 100))
    mask = _disc(truth.shape, 50, 50, 30)
    clean = inpaint_local(np.where(mask, 0.5 * truth, truth), mask, method="harmonic", normalize=False)
    assert np.abs(clean[mask] / truth[mask] - 1).max() < 1e-4


def test_empty_mask_returns_copy():
    img = _plane((20, 20))
    out = inpaint_local(img, np.zeros(img.shape, bool))
    assert np.array_equal(out, img.astype(np.float32)) and out is not img


def test_input_errors():
    img = _plane((20, 20))
    with pytest.raises(InputError, match="shape"):
        inpaint_local(img, np.zeros((5, 5), bool))
    with pytest.raises(InputError, match="0..1"):
        inpaint_local(img, np.full(img.shape, 2.0))
    with pytest.raises(InputError, match="unknown local"):
        inpaint_local(img, np.zeros(img.shape, bool), method="magic")
    with pytest.raises(InputError, match="2-D"):
        inpaint_local(np.zeros((2, 3, 4)), np.zeros((2, 3, 4), bool))
    with pytest.raises(InputError, match="no valid pixel"):
        inpaint_local(img, np.ones(img.shape, bool))


def test_input_not_modified():
    img = _plane((30, 30))
    mask = _disc(img.shape, 15, 15, 5)
    before = img.copy()
    inpaint_local(img, mask)
    assert np.array_equal(img, before)


@pytest.mark.parametrize("method", ["linear", "histogram"])
def test_match_photometry_affine(method):
    rng = np.random.default_rng(3)
    ref = rng.uniform(200, 4000, (64, 64))
    est = 0.01 * ref + 5.0
    mask = _disc(ref.shape, 30, 30, 8)
    out = match_photometry(est, ref, mask, method=method)
    tol = 1e-6 if method == "linear" else 2e-3
    assert np.abs(out[mask] / ref[mask] - 1).max() < tol


def test_match_photometry_gamma_needs_histogram():
    rng = np.random.default_rng(4)
    ref = rng.uniform(100, 4000, (64, 64))
    est = (ref / 4000) ** (1 / 2.2)
    mask = _disc(ref.shape, 30, 30, 8)
    lin = np.abs(match_photometry(est, ref, mask, method="linear")[mask] / ref[mask] - 1).max()
    hist = np.abs(match_photometry(est, ref, mask, method="histogram")[mask] / ref[mask] - 1).max()
    assert hist < 0.02 < lin


def test_match_photometry_robust_to_outliers():
    rng = np.random.default_rng(5)
    ref = rng.uniform(500, 1500, (64, 64))
    est = 2.0 * ref - 100
    est[:5, :5] = 1e5  # a generative artefact outside the mask
    mask = _disc(ref.shape, 30, 30, 8)
    out = match_photometry(est, ref, mask)
    assert np.abs(out[mask] / ref[mask] - 1).max() < 1e-6


def test_match_photometry_errors():
    with pytest.raises(InputError, match="unknown photometric"):
        match_photometry(np.ones((8, 8)), np.ones((8, 8)), np.zeros((8, 8)), method="x")
    with pytest.raises(InputError, match="constant"):
        match_photometry(np.ones((8, 8)), np.arange(64.0).reshape(8, 8), np.zeros((8, 8)))
