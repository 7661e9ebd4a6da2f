"""The silhouette model of non-round shadows (``make_flat(..., silhouette=True)``, opt-in)."""

import json

import numpy as np
import pytest
from scipy import ndimage

from aiflat_astro.flat import FlatOptions, make_flat
from aiflat_astro.flat.silhouette import _Convolver, disc_kernel, fit_silhouette


def _scene(shape, seed, texture=0.004):
    """A smooth disc-like scene with a faint small-scale texture (rms ``texture``)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    base = 3000.0 * (1.0 + 0.1 * (yy / shape[0]) - 0.05 * (xx / shape[1]))
    grain = ndimage.gaussian_filter(rng.normal(0, 1, shape), 1.2)
    return base * (1.0 + texture * grain / grain.std())


def _shadow(shape, grains, diameter):
    """1 - (binary silhouette * pupil disc): grains as (y, x, radius) in px."""
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    sil = np.zeros(shape)
    for gy, gx, r in grains:
        sil[(yy - gy) ** 2 + (xx - gx) ** 2 <= r * r] = 1.0
    return 1.0 - np.clip(_Convolver(shape, disc_kernel(diameter))(sil), 0.0, 1.0)


def _residual(flat, t):
    inside = t < 0.999
    return np.sqrt(np.mean((t[inside] / flat[inside] - 1) ** 2) / np.mean((1 - t[inside]) ** 2))


def test_disc_kernel_is_a_unit_disc():
    k = disc_kernel(7.0)
    assert k.shape == (9, 9) and k.sum() == pytest.approx(1.0)
    assert k[4, 4] == k.max() and k[0, 0] == 0.0


def test_fit_silhouette_recovers_a_clump_shadow():
    shape = (61, 61)
    t = _shadow(shape, [(30, 24, 3.0), (30, 35, 2.5), (38, 30, 2.0)], 12.0)
    core = t < 1 - 0.2 * (1 - t.min())
    out = fit_silhouette(t, np.ones(shape, bool), ndimage.binary_dilation(core, iterations=3), core,
                         sigma=0.002)
    assert np.sqrt(np.mean((out["model"] - t) ** 2)) < 0.2 * np.sqrt(np.mean((1 - t) ** 2))
    assert 6.0 <= out["diameter"] <= 16.0


def test_clump_gets_the_silhouette_and_a_smaller_residual():
    shape = (96, 96)
    t = _shadow(shape, [(48, 40, 3.5), (46, 53, 3.0), (57, 46, 2.5)], 14.0)
    median = (_scene(shape, 1) * t).astype(np.float32)
    mask = t < 1 - 0.2 * (1 - t.min())
    radial = make_flat(median, mask, profile="radial")
    sil = make_flat(median, mask, profile="radial", silhouette=True)
    (rec,) = json.loads(sil.meta["PROVJSON"])["shadows"]
    assert rec["profile"] == "silhouette" and rec["footprint_px"] > 0
    assert _residual(sil.data, t) < 0.7 * _residual(radial.data, t)
    # nothing outside the mask's weight changes
    assert np.all(sil.data[radial.data == 1.0] == 1.0)


def test_round_speck_keeps_the_radial_profile():
    shape = (72, 72)
    t = _shadow(shape, [(36, 36, 3.0)], 12.0)
    median = (_scene(shape, 2) * t).astype(np.float32)
    mask = t < 1 - 0.2 * (1 - t.min())
    radial = make_flat(median, mask, profile="radial")
    sil = make_flat(median, mask, profile="radial", silhouette=True)
    (rec,) = json.loads(sil.meta["PROVJSON"])["shadows"]
    assert rec["profile"] == "radial"
    np.testing.assert_array_equal(sil.data, radial.data)


def test_option_is_off_by_default():
    assert FlatOptions().silhouette is False
    assert FlatOptions(silhouette=True).silhouette is True
