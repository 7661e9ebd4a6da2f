"""The measured dust flat on KLL-class inputs: a few frames with large offsets (real and simulated)."""

import json
import warnings

import numpy as np
import pytest
from scipy import ndimage

from aiflat_astro.detection.review import detection_from_mask
from aiflat_astro.flat import make_flat
from aiflat_astro.flat.estimators.measured import measure_transmission
from aiflat_astro.utils.exceptions import DetectorFallbackWarning


def spot_mask(paper_flat, spots, half=30, drop=0.85, grow=2):
    """User mask of the paper flat's dust spots: the connected dip (< drop x local median) at each."""
    mask = np.zeros(paper_flat.shape, bool)
    for y, x in np.round(spots).astype(int):
        sl = (slice(y - half, y + half + 1), slice(x - half, x + half + 1))
        box = ndimage.gaussian_filter(paper_flat[sl], 1.0)
        lab, _ = ndimage.label(box < drop * np.median(paper_flat[sl]))
        core = lab[half - 5:half + 6, half - 5:half + 6]
        ids = np.bincount(core[core > 0])
        assert ids.size > 1, f"no dip in the paper flat at {(y, x)}"
        mask[sl] |= ndimage.binary_dilation(lab == ids.argmax(), iterations=grow)
    return mask


@pytest.fixture(scope="module")
def xu_measured(xu2016):
    """make_flat(inpaint='measured') on xu2016 with a user mask of its three spots."""
    mask = spot_mask(xu2016.paper_flat, xu2016.spots)
    median = np.median(xu2016.frames, axis=0)
    det = detection_from_mask(mask, median)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DetectorFallbackWarning)  # a spot may fall back
        flat = make_flat(median, det, inpaint="measured", frames=xu2016.frames)
    return flat, det, json.loads(flat.meta["PROVJSON"])["inpaint_info"]


@pytest.mark.slow
class TestXu2016Measured:

    def test_spots_measured(self, xu_measured, xu2016):
        flat, det, info = xu_measured
        methods = {r["id"]: r["flat_method"] for r in info["shadows"]}
        assert len(methods) == 3
        assert sum(m == "measured" for m in methods.values()) >= 2
        assert info["drift"]["params"]["mode"] == "large offsets"

    def test_spots_are_dark_and_outside_is_one(self, xu_measured, xu2016):
        flat, det, info = xu_measured
        data = np.asarray(flat.data)
        for y, x in xu2016.spots.astype(int):
            assert data[y - 4:y + 5, x - 4:x + 5].min() < 0.9  # 10-35 % deep on the frames
        assert np.all(data[det.weight == 0] == 1.0)


def test_few_frames_big_boxes_never_raise(tmp_path):
    """A small memory limit with large offsets: several passes, never an exception."""
    from aiflat_astro.datasets.kll import make_kll_set

    s = make_kll_set(shape=(256, 256), n_frames=9, max_offset=90, n_dust=4, seed=11)
    mask = s.dust_labels > 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DetectorFallbackWarning)
        mt = measure_transmission(s.frames, mask, labels=s.dust_labels, mem_limit="3MB",
                                  survey=False)
    assert len(mt.shadows) >= 1
    assert mt.params["min_frames"] == 3  # 9 frames: a KLL-class set
    ok = mt.measured
    if ok.any():
        assert np.median(np.abs(mt.transmission[ok] - s.transmission[ok])) < 0.03
