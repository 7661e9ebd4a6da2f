"""Tests of the solar-disc background model used by the local clean estimate."""

import warnings

import numpy as np
import pytest

from aiflat_astro.combine import median_combine
from aiflat_astro.datasets import make_dusty_video
from aiflat_astro.flat import make_flat
from aiflat_astro.flat.estimators.local import inpaint_local, solar_disc_background
from aiflat_astro.utils.exceptions import AiflatDeprecationWarning, InputError


def _limb_image(shape=(96, 128), cy=260.0, cx=-130.0, radius=330.0, u=0.6):
    y, x = np.mgrid[0:shape[0], 0:shape[1]]
    r = np.hypot(y - cy, x - cx)
    mu = np.sqrt(np.clip(1 - (r / radius) ** 2, 0, 1))
    vignetting = 1 - 0.04 * ((y - shape[0] / 2) ** 2 + (x - shape[1] / 2) ** 2) / (shape[1] / 2) ** 2
    return np.where(r < radius, 1000 * (1 - u * (1 - mu)) * vignetting, 20.0), r, radius


def test_disc_model_follows_limb_darkening():
    image, r, radius = _limb_image()
    model = solar_disc_background(image)
    ok = np.isfinite(model)
    assert ok.sum() > 0.4 * image.size
    assert not ok[r > radius - 2].any()          # nothing modelled at or beyond the limb
    assert np.abs(model[ok] / image[ok] - 1).max() < 0.01


@pytest.mark.parametrize("image", [np.full((64, 80), 1000.0),
                                   1000 + np.random.default_rng(0).normal(0, 5, (64, 80))])
def test_no_limb_no_disc_model(image):
    assert solar_disc_background(image) is None


def test_background_divides_and_keeps_unmasked_pixels():
    image, r, radius = _limb_image()
    y, x = np.mgrid[0:image.shape[0], 0:image.shape[1]]
    mask = np.hypot(y - 60, x - 60) < 12           # a shadow on the disc, 40 px from the limb
    dusty = np.where(mask, 0.8 * image, image).astype(np.float32)
    model = solar_disc_background(dusty, ignore=mask)
    clean = inpaint_local(dusty, mask, method="poly", poly_degree=1, background=model)
    assert np.all(clean[~mask] == dusty[~mask])    # bit for bit outside the mask
    assert np.abs(clean[mask] / image[mask] - 1).max() < 0.01
    with pytest.raises(InputError, match="finite and positive"):
        inpaint_local(dusty, r > radius - 5, background=model)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [101, 102])
def test_disc_model_improves_solar_flat_near_limb(tmp_path, seed):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        truth = make_dusty_video(tmp_path / "v.ser", shape=(128, 160), n_frames=12, regime="solar-soft", seed=seed)
    median = median_combine(tmp_path / "v.ser")
    inside = truth.labels > 0
    t = truth.transmission.astype(float)
    residual = {}
    for disc in ("auto", False):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            flat = make_flat(median, inside, inpaint_options={"disc": disc})
        assert np.all(flat.data[flat.flags == 0] == np.float32(1.0))
        residual[disc] = np.sqrt(np.mean((t[inside] / flat.data[inside] - 1) ** 2) / np.mean((1 - t[inside]) ** 2))
        assert flat.meta.get("LOCDISC") is (True if disc == "auto" else None)
    assert residual["auto"] < 0.7 * residual[False]


def test_deepsky_keeps_the_ring_path(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        truth = make_dusty_video(tmp_path / "v.ser", shape=(128, 160), n_frames=10, regime="deepsky", seed=3)
    median = median_combine(tmp_path / "v.ser")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        flat = make_flat(median, truth.labels > 0)
    assert flat.meta["LOCDISC"] is False


def test_exclude_is_deprecated_for_ignore():
    image, _, _ = _limb_image()
    y, x = np.mgrid[0:image.shape[0], 0:image.shape[1]]
    mask = np.hypot(y - 60, x - 60) < 12
    dusty = np.where(mask, 0.5 * image, image)
    new = solar_disc_background(dusty, ignore=mask)
    with pytest.warns(AiflatDeprecationWarning, match=r"solar_disc_background\(exclude=") as record:
        old = solar_disc_background(dusty, exclude=mask)
    assert record[0].filename == __file__
    np.testing.assert_array_equal(new, old)
    assert not np.array_equal(new, solar_disc_background(dusty), equal_nan=True)   # ignore is used
    with pytest.raises(InputError, match="not both"):
        solar_disc_background(dusty, ignore=mask, exclude=mask)
    with pytest.raises(InputError, match="ignore mask shape"):
        solar_disc_background(dusty, ignore=mask[:-1])
