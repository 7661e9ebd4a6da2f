"""The residual shadow contrast (aiflat_astro.evaluate.shadow_contrast) and small sharp specks with a ring."""

import json

import numpy as np
import pytest
from scipy import ndimage

from aiflat_astro.dq import DustDQ
from aiflat_astro.evaluate import mask_from_flat, residual_contrast, shadow_contrast
from aiflat_astro.flat import make_flat
from aiflat_astro.utils.exceptions import InputError


def _plane(shape=(80, 90)):
    y, x = np.mgrid[0:shape[0], 0:shape[1]]
    return 1500.0 * (1 + 0.003 * x - 0.002 * y)


def _speck(shape, cy, cx, diameter, depth, ring=0.0, edge=0.4):
    """A sharp speck (logistic edge) with a bright Fresnel ring peaking 1.8 px outside its edge."""
    y, x = np.mgrid[0:shape[0], 0:shape[1]]
    r = np.hypot(y - cy, x - cx)
    t = 1 - depth / (1 + np.exp((r - diameter / 2) / edge))
    return t + ring * np.exp(-0.5 * (r - diameter / 2 - 1.8) ** 2)


def test_contrast_is_zero_on_a_plane_and_the_depth_on_a_flat_bottomed_shadow():
    img = _plane()
    y, x = np.mgrid[0:80, 0:90]
    core = np.hypot(y - 40, x - 45) < 8
    assert shadow_contrast(img, core)["rms"] < 1e-12
    dusty = np.where(core, 0.7 * img, img)
    out = shadow_contrast(dusty, core, ring=0)
    assert out["rms"] == pytest.approx(0.3, rel=1e-6)
    # the 3 px ring dilutes it by the ring's share of the pixels
    with_ring = shadow_contrast(dusty, core)
    n_core, n_all = core.sum(), with_ring["n_pixels"][0]
    assert with_ring["rms"] == pytest.approx(0.3 * np.sqrt(n_core / n_all), rel=1e-6)
    assert with_ring["centres"][0] == pytest.approx((40, 45), abs=1e-9)


def test_contrast_sees_a_bright_ring_outside_the_mask():
    shape = (80, 90)
    t_core = _speck(shape, 40, 45, 12, 0.3)
    t = _speck(shape, 40, 45, 12, 0.3, ring=0.05)
    core = (1 - t_core) > 0.06
    img = _plane(shape) * t
    core_only = residual_contrast(img / t_core, img, core)       # a flat that stops at the dark core
    assert core_only["residual"] > 0.1
    assert residual_contrast(img / t, img, core)["residual"] < 1e-6
    assert residual_contrast(img / t_core, img, core, ring=0)["residual"] < core_only["residual"]


def test_residual_contrast_per_shadow_and_dq_input():
    shape = (80, 120)
    t = _speck(shape, 40, 30, 14, 0.3) * _speck(shape, 40, 90, 8, 0.2)
    img = _plane(shape) * t
    core = (1 - t) > 0.05
    dq = np.where(core, np.uint8(DustDQ.DUST | DustDQ.REVIEW), np.uint8(0))
    full = residual_contrast(img / t, img, dq)
    assert full["residual"] < 1e-6 and np.all(full["per_shadow"] < 1e-6)
    none = residual_contrast(img, img, core)
    assert none["residual"] == pytest.approx(1.0) and none["per_shadow"].shape == (2,)
    # excluding a shadow's surroundings leaves it without a plane: NaN, not counted
    far = np.zeros(shape, bool)
    far[:, 60:] = True
    out = shadow_contrast(img, core, ignore=far)
    assert np.isfinite(out["per_shadow"][0]) and np.isnan(out["per_shadow"][1])


def test_contrast_bad_input():
    with pytest.raises(InputError, match="shape"):
        shadow_contrast(np.ones((10, 10)), np.zeros((10, 11), bool))
    with pytest.raises(InputError, match="2-D"):
        shadow_contrast(np.ones((2, 10, 10)), np.zeros((10, 10), bool))
    with pytest.raises(InputError, match="ring"):
        shadow_contrast(np.ones((10, 10)), np.zeros((10, 10), bool), ring=-1)
    assert np.isnan(shadow_contrast(np.ones((10, 10)), np.zeros((10, 10), bool))["rms"])


def test_mask_from_flat_finds_each_shadow_and_grows_it():
    y, x = np.mgrid[0:300, 0:300]
    flat = 120 + 0.05 * y - 40 * (np.hypot(y - 100, x - 80) < 12) - 20 * (np.hypot(y - 200, x - 210) < 6)
    m0 = mask_from_flat(flat, [(101, 79), (200, 212)], grow=0)
    m2 = mask_from_flat(flat, [(101, 79), (200, 212)], grow=2)
    lab, n = ndimage.label(m0)
    assert n == 2 and m0[100, 80] and m0[200, 210]
    assert np.array_equal(m0, (np.hypot(y - 100, x - 80) < 12) | (np.hypot(y - 200, x - 210) < 6))
    assert m2.sum() > m0.sum() and np.all(m2[m0])
    with pytest.raises(InputError, match="deeper"):
        mask_from_flat(flat, [(30, 250)])
    with pytest.raises(InputError, match="outside"):
        mask_from_flat(flat, [(400, 10)])


@pytest.mark.parametrize("diameter", [4, 6, 10, 20])
def test_small_sharp_speck_and_its_ring_are_corrected(diameter):
    # real specks: 3-40 px, sharp at f/30-f/40, a faint ring with T > 1 just outside the dark core;
    # the mask given is the core only (darkening > 20 % of the depth), as a reference mask is drawn
    shape = (80, 80)
    t = _speck(shape, 40.3, 39.6, diameter, 0.3, ring=0.04)
    img = (_plane(shape) * t).astype(np.float32)
    core = (1 - t) > 0.2 * 0.3
    flat = make_flat(img, core)
    peak = np.unravel_index(np.argmax(np.where(np.hypot(*(np.mgrid[0:80, 0:80] - np.array([40.3, 39.6])[:, None, None]))
                                               < diameter / 2 + 4, t, 0)), shape)
    assert t[peak] > 1.035
    assert flat.flags[peak] & DustDQ.DUST_HALO                  # the halo reaches the ring ...
    assert flat.data[peak] == pytest.approx(t[peak], abs=0.003)   # ... and the flat follows it above 1.0
    grown = ndimage.distance_transform_edt(~core) <= 3
    residual = np.sqrt(np.mean((t[grown] / flat.data[grown] - 1) ** 2) / np.mean((1 - t[grown]) ** 2))
    assert residual < 0.1
    assert residual_contrast(img / flat.data, img, core)["residual"] < 0.1
    rec = json.loads(flat.meta["PROVJSON"])["shadows"][0]
    assert not rec.get("review"), rec.get("reason")
    assert np.all(flat.data[flat.flags == 0] == 1.0)


def test_exclude_is_deprecated_for_ignore():
    from aiflat_astro.utils.exceptions import AiflatDeprecationWarning

    shape = (80, 120)
    t = _speck(shape, 40, 30, 14, 0.3) * _speck(shape, 40, 90, 8, 0.2)
    img = _plane(shape) * t
    core = (1 - t) > 0.05
    far = np.zeros(shape, bool)
    far[:, 60:] = True
    new = shadow_contrast(img, core, ignore=far)
    with pytest.warns(AiflatDeprecationWarning, match=r"shadow_contrast\(exclude=") as record:
        old = shadow_contrast(img, core, exclude=far)
    assert record[0].filename == __file__
    np.testing.assert_array_equal(new["per_shadow"], old["per_shadow"])
    with pytest.warns(AiflatDeprecationWarning, match=r"residual_contrast\(exclude="):
        old = residual_contrast(img / t, img, core, exclude=far)
    assert np.isnan(old["per_shadow"][1])
    with pytest.raises(InputError, match="not both"):
        shadow_contrast(img, core, ignore=far, exclude=far)
