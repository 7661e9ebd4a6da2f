"""The model chosen from the scene's motion; make_flat's option object (issues 11, 15)."""

import json
import warnings

import numpy as np
import pytest
from astropy.nddata import CCDData
from ccdproc import flat_correct

from aiflat_astro.combine import median_combine
from aiflat_astro.datasets import make_dusty_video
from aiflat_astro.flat import FlatOptions, make_flat
from aiflat_astro.utils.exceptions import AiflatUserWarning, InputError


def _textured(shape, seed=0, contrast=0.05):
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    tex = ndimage.gaussian_filter(rng.normal(size=shape), 1.5)
    return 1000.0 * (1 + contrast * tex / tex.std())


def _residual(flat, truth):
    t = truth.transmission.astype(np.float64)
    inside = truth.labels > 0
    res = np.mean((t[inside] / flat[inside] - 1) ** 2)
    return float(np.sqrt(res / np.mean((1 - t[inside]) ** 2)))


def test_options_object_and_keywords_give_the_same_flat():
    shape = (64, 64)
    y, x = np.mgrid[0:64, 0:64]
    dust = np.hypot(y - 30, x - 33) < 7
    median = (_textured(shape) * np.where(dust, 0.8, 1.0)).astype(np.float32)
    a = make_flat(median, dust, floor=0.1, profile="radial")
    b = make_flat(median, dust, options=FlatOptions(floor=0.1, profile="radial"))
    # keywords win over the options object
    c = make_flat(median, dust, options=FlatOptions(floor=0.3), floor=0.1, profile="radial")
    assert np.array_equal(a.data, b.data) and np.array_equal(a.data, c.data)
    assert a.meta["PARAMSHA"] == b.meta["PARAMSHA"] == c.meta["PARAMSHA"]


@pytest.mark.parametrize("kwargs, match", [
    ({"flor": 0.1}, "unknown option"),
    ({"scene_motion": -3}, "scene_motion"),
    ({"scene_motion": "fast"}, "scene_motion"),
    ({"profile": "spline"}, "unknown flat profile"),
    ({"floor": "low"}, "floor"),
    ({"options": {"floor": 0.1}}, "FlatOptions"),
])
def test_bad_options_are_one_clear_error(kwargs, match):
    with pytest.raises(InputError, match=match):
        make_flat(np.ones((16, 16), np.float32), np.zeros((16, 16), bool), **kwargs)


def test_shadow_smaller_than_the_scene_motion_gets_the_plain_ratio():
    # two shadows; the scene moved by 30 px: the 12 px one keeps what is fixed on the sensor
    # (the plain ratio), the 50 px one (larger than the motion) its radial profile
    shape = (128, 128)
    y, x = np.mgrid[0:128, 0:128]
    small = np.hypot(y - 30, x - 30) < 6
    big = np.hypot(y - 80, x - 80) < 25
    median = (_textured(shape) * np.where(small | big, 0.75, 1.0)).astype(np.float32)
    moved = make_flat(median, small | big, scene_motion=30.0)
    radial = make_flat(median, small | big, scene_motion=None)
    plain = make_flat(median, small | big, profile="none")
    recs = {r["id"]: r for r in json.loads(moved.meta["PROVJSON"])["shadows"]}
    by_size = sorted(recs.values(), key=lambda r: r["n_pixels"])
    assert by_size[0]["profile"] == "none" and "scene moved" in by_size[0]["reason"]
    assert by_size[1]["profile"] == "radial"
    assert np.array_equal(moved.data[small], plain.data[small])
    assert np.array_equal(moved.data[big], radial.data[big])
    assert not np.array_equal(radial.data[small], plain.data[small])
    assert np.all(moved.data[moved.flags == 0] == 1.0)


@pytest.mark.slow
def test_drift_video_frames_choose_the_plain_ratio_and_beat_the_radial_model(tmp_path):
    # a drift set (Lissajous drift 100 px peak to peak, regime and seed pinned): the scene moves
    # by more than every shadow, the median's ratio is the sensor's; measured 0.089 vs 0.210
    path = tmp_path / "drift.ser"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AiflatUserWarning)
        truth = make_dusty_video(path, regime="solar", seed=3, drift=100.0)
    median = median_combine(path).data
    mask = truth.labels > 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AiflatUserWarning)
        auto = make_flat(median, mask, frames=path)
        radial = make_flat(median, mask, scene_motion=None)
    prov = json.loads(auto.meta["PROVJSON"])
    assert 40 < prov["scene_motion_px"] < 80
    assert all(r["profile"] == "none" for r in prov["shadows"])
    assert _residual(auto.data, truth) < min(0.15, 0.6 * _residual(radial.data, truth))
    # nothing outside the mask changes: ccdproc leaves those pixels bit-identical
    frame = CCDData(median.astype(np.float32), unit="adu")
    out = flat_correct(frame, auto, norm_value=1)
    outside = auto.flags == 0
    assert np.all(auto.data[outside] == 1.0)
    assert np.array_equal(out.data[outside], frame.data[outside])


@pytest.mark.slow
def test_jitter_video_frames_keep_the_radial_model(tmp_path):
    # a jitter video (1 px rms, no drift): the scene stays, its texture is in the median's ratio
    path = tmp_path / "jitter.ser"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AiflatUserWarning)
        truth = make_dusty_video(path, regime="solar", seed=2, n_frames=20)
    median = median_combine(path).data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AiflatUserWarning)
        auto = make_flat(median, truth.labels > 0, frames=path)
    prov = json.loads(auto.meta["PROVJSON"])
    assert prov["scene_motion_px"] < 4
    assert all(r["profile"] == "radial" for r in prov["shadows"] if "x_centroid" in r)


def test_low_transmission_warning_points_at_the_caller():
    y, x = np.mgrid[0:48, 0:48]
    dust = np.hypot(y - 24, x - 24) < 8
    median = (_textured((48, 48)) * np.where(dust, 0.02, 1.0)).astype(np.float32)
    with pytest.warns(AiflatUserWarning, match="below the floor") as rec:
        make_flat(median, dust)
    assert rec[0].filename == __file__


def test_the_detectors_measured_motion_is_reused_instead_of_registering_again(tmp_path):
    # the local detector's motion test already measured the scene's shifts on these frames
    # (provenance motion.pair_px): the flat takes that figure instead of registering again
    from aiflat_astro.detection import detection_from_mask

    y, x = np.mgrid[0:96, 0:96]
    small = np.hypot(y - 40, x - 40) < 6
    median = (_textured((96, 96)) * np.where(small, 0.75, 1.0)).astype(np.float32)
    det = detection_from_mask(small, median)
    det.provenance["motion"] = {"n_frames_used": 24, "method": "registration", "rms_px": 20.0,
                                "pair_px": 28.5}
    # the frames do not move (a fresh registration would measure 0 px)
    from aiflat_astro.io import write_ser

    video = tmp_path / "still.ser"
    write_ser(video, np.repeat(np.round(median)[None].astype(np.uint16), 6, axis=0))
    flat = make_flat(median, det, frames=video)
    prov = json.loads(flat.meta["PROVJSON"])
    assert prov["scene_motion_px"] == 28.5
    assert all(r["profile"] == "none" for r in prov["shadows"])


def test_median_pair_distance():
    from aiflat_astro.registration import median_pair_distance

    assert median_pair_distance([[0.0, 0.0]]) == 0.0
    assert median_pair_distance(np.array([[0, 0], [0, 3], [4, 0]])) == 4.0
