"""The extent of accepted shadows from their own radial profile (``refine_extent=True``).

The first measurement of a candidate takes its baseline from an annulus at 1.1-1.8 times the
scale-space diameter.  For a large soft shadow measured from a small off-centre peak that annulus
lies inside the wing (the DUST mask comes out too small and off-centre); in a dense field it lies
on the neighbours.  ``refine_extent`` follows the azimuthal medians out to where they flatten.
"""

import warnings

import numpy as np
import pytest

from aiflat_astro.combine import median_combine
from aiflat_astro.datasets import make_dusty_video
from aiflat_astro.detection import LocalDustDetector, detect_dust
from aiflat_astro.evaluate import evaluate_mask


def _simulate(tmp_path, seed):
    path = tmp_path / f"sim{seed}.ser"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        truth = make_dusty_video(path, seed=seed)
        median = median_combine(path)
    return path, truth, median


def _detect(path, median, refine):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return detect_dust(median, frames=path, f_ratio=30, pixel_size=3.75, refine_extent=refine)


@pytest.mark.slow
def test_refined_extent_covers_large_soft_shadows_and_centres_them(tmp_path):
    """Seed 123: two 52-57 px shadows; first measurement 64 % and 73 % covered, centres 1-2 px off."""
    path, truth, median = _simulate(tmp_path, 123)
    det = _detect(path, median, True)
    dust = (det.dq & 1) > 0
    big = [row for row in truth.shadows if row["diameter"] > 50]
    assert len(big) == 2
    for row in big:
        footprint = truth.labels == row["id"]
        assert dust[footprint].mean() > 0.75
        dist = np.hypot(np.asarray(det.catalog["x_centroid"]) - row["x_centroid"],
                        np.asarray(det.catalog["y_centroid"]) - row["y_centroid"])
        assert dist.min() < 1.0
    assert det.provenance["params"]["EXTPROF"] is True


@pytest.mark.slow
def test_refined_extent_frees_a_neighbour_the_first_outline_swallowed(tmp_path):
    """Seed 180: the first outline of a 52 px shadow also covers a 17 px one 59 px away, whose own
    candidate is then dropped as a duplicate; with the refined outline it is a shadow of its own."""
    path, truth, median = _simulate(tmp_path, 180)
    result = evaluate_mask(_detect(path, median, True), truth)
    assert result["recall"] == 1.0
    assert result["n_false"] == 0
    assert result["n_detected"] == len(truth.shadows)


@pytest.mark.parametrize("refine", [False, True])
def test_refine_extent_keeps_a_small_isolated_disc(refine):
    """On a single clean disc both measurements agree on the centre and the size."""
    rng = np.random.default_rng(3)
    y, x = np.mgrid[:160, :200]
    shadow = 1 - 0.2 / (1 + np.exp((np.hypot(y - 80.3, x - 99.6) - 12) / 1.5))
    img = 2000 * shadow + rng.normal(0, 3, y.shape)
    det = LocalDustDetector(refine_extent=refine)(img)
    assert len(det.catalog) == 1
    row = det.catalog[0]
    assert abs(row["x_centroid"] - 99.6) < 0.3 and abs(row["y_centroid"] - 80.3) < 0.3
    # DUST: darker than 10 % of the depth, i.e. out to r = 12 + 1.5 ln 9 = 15.3 px
    assert abs(np.sqrt(row["area"] / np.pi) - 15.3) < 1.5


def test_refine_extent_is_off_by_default():
    assert LocalDustDetector().refine_extent is False
