"""Tests of the solar clean estimate and the radial transmission model (flat.py, inpaint.py).

What they guard: a scene feature inside a shadow (a pore, a sunspot) must not
enter the shadow's radial profile; the level of the scene under a shadow on
the disc is the median of the ring around it; the centre of a shadow is
the detection's centre moved half-way to the refined one; and the solar
residual on small simulated videos that were not used to design any of it.
"""

import json
import warnings

import numpy as np
import pytest
from astropy.table import Table
from scipy import ndimage

import aiflat_astro.flat._radial as flat_module
from aiflat_astro.detection._base import DustDetection
from aiflat_astro.dq import DustDQ, expand_mask
from aiflat_astro.flat import make_flat
from aiflat_astro.flat.estimators.local import inpaint_local
from aiflat_astro.utils.exceptions import AiflatUserWarning


def _granulation(shape, seed, contrast=0.03, scale=2.0):
    rng = np.random.default_rng(seed)
    tex = ndimage.gaussian_filter(rng.normal(size=shape), scale)
    return 1 + contrast * tex / tex.std()


def _shadow(shape, cy, cx, diameter, depth):
    y, x = np.mgrid[0:shape[0], 0:shape[1]]
    r = np.hypot(y - cy, x - cx)
    return 1 - depth * np.clip((diameter / 2 - r) / 2.0 + 0.5, 0, 1)


def _residual(flat, t, inside):
    return float(np.sqrt(np.mean((t[inside] / flat[inside] - 1) ** 2) / np.mean((1 - t[inside]) ** 2)))


def test_dark_feature_inside_a_shadow_does_not_enter_its_profile(monkeypatch):
    """A pore near the centre of a shadow covers much of the small annuli and drags their medians."""
    shape = (112, 112)
    t = _shadow(shape, 56, 56, 44, 0.2)
    y, x = np.mgrid[0:shape[0], 0:shape[1]]
    pore = 1 - 0.4 * np.exp(-((y - 56) ** 2 + (x - 63) ** 2) / (2 * 4.0**2))
    median = (2000 * _granulation(shape, 1, contrast=0.01) * pore * t).astype(np.float32)
    inside = t < 1
    away = inside & (np.hypot(y - 56, x - 63) > 12)   # the shadow where the pore is not

    def error():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AiflatUserWarning)
            flat = make_flat(median, inside)
        return float(np.sqrt(np.mean((t[away] / flat.data[away] - 1) ** 2)))

    with_rejection = error()                          # 0.0072 measured
    monkeypatch.setattr(flat_module, "_REJECT_SIGMA", 0.0)
    without = error()                                 # 0.0092 measured
    assert with_rejection < 0.0085
    assert with_rejection < 0.85 * without


def test_ring_median_level_ignores_a_spot_in_the_ring():
    """Degree 0 of the ring fit is the median: a spot over a quarter of the ring does not pull it."""
    shape = (64, 64)
    y, x = np.mgrid[0:shape[0], 0:shape[1]]
    scene = 1000 * _granulation(shape, 2, contrast=0.005, scale=1.0)
    mask = np.hypot(y - 32, x - 32) < 8
    theta = np.arctan2(y - 32, x - 32)
    spot = (np.abs(theta) < np.pi / 4) & ~mask       # a quarter of the ring, 40 % dark
    image = np.where(spot, 0.6, 1.0) * np.where(mask, 0.8, 1.0) * scene
    clean = inpaint_local(image, mask, method="poly", poly_degree=0)
    # the ring's mean would be 10 % low; its median moves by a third of the texture's sigma
    assert abs(np.mean(clean[mask]) / np.mean(scene[mask]) - 1) < 0.005
    assert np.array_equal(clean[~mask], image[~mask].astype(np.float32))


def test_shadow_centre_moves_half_way_from_the_detection_to_the_refined_centre():
    shape = (80, 80)
    t = _shadow(shape, 40.0, 40.0, 24, 0.3)
    median = (1500 * t).astype(np.float32)
    dust = t < 1
    weight, halo = expand_mask(dust)
    dq = np.where(dust, np.uint8(DustDQ.DUST), np.uint8(0))
    dq |= np.where(halo, np.uint8(DustDQ.DUST_HALO), np.uint8(0))
    catalog = Table({"id": [1], "x_centroid": [41.0], "y_centroid": [40.0]})   # one pixel off in x
    det = DustDetection(dq=dq.astype(np.uint8), weight=weight, catalog=catalog, detector="test",
                        provenance={}, labels=dust.astype(np.int32))
    flat = make_flat(median, det)
    (rec,) = json.loads(flat.meta["PROVJSON"])["shadows"]
    # without texture the refinement finds the true centre (x = 40); half of its step is taken
    assert rec["x_centroid"] == pytest.approx(40.5, abs=0.1)
    assert rec["y_centroid"] == pytest.approx(40.0, abs=0.1)


def _simulated_residual(tmp_path, seed):
    from aiflat_astro.combine import median_combine
    from aiflat_astro.datasets import make_dusty_video

    path = tmp_path / f"sun{seed}.ser"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        truth = make_dusty_video(path, shape=(192, 224), n_frames=24, regime="solar-soft", n_dust=6, seed=seed)
    median = median_combine(path)
    inside = truth.labels > 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AiflatUserWarning)
        flat = make_flat(median, inside)
    assert np.all(flat.data[flat.flags == 0] == 1.0)
    return _residual(flat.data, truth.transmission, inside)


def test_solar_residual_target_on_a_held_out_video(tmp_path):
    """Seed 11 was not used to design the solar estimate: the 0.1 target is met (0.075 measured)."""
    assert _simulated_residual(tmp_path, 11) <= 0.1


@pytest.mark.slow
def test_solar_residual_on_held_out_videos(tmp_path):
    """Four more held-out small videos: rms of their residuals 0.134 (0.18 before the ring median,
    the rejection of scene features and the centre half-step).  Small videos hold six shadows
    each, so single videos range from 0.08 to 0.17 and the 0.1 target holds only on average over
    larger sets (docs/flat.rst)."""
    res = [_simulated_residual(tmp_path, seed) for seed in (100, 101, 102, 103)]
    assert np.sqrt(np.mean(np.square(res))) < 0.15
