"""Colour (RGB) videos: dust located and corrected on the channel mean, one 2-D flat for the three channels."""

import warnings

import numpy as np
import pytest

from aiflat_astro.flat import evaluate_flat, make_flat
from aiflat_astro.io import SERReader, write_ser
from aiflat_astro.pipeline import run_pipeline
from aiflat_astro.utils._colour import cfa_normalise, is_colour, to_mono
from aiflat_astro.utils.exceptions import InputError

GAINS = (1.0, 0.75, 0.45)  # a solar continuum seen through a colour camera


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """The same simulated dusty video as mono and as RGB (channels = gains x mono)."""
    from aiflat_astro.datasets import make_dusty_video

    d = tmp_path_factory.mktemp("colour")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        truth = make_dusty_video(d / "mono.ser", shape=(160, 200), n_frames=20, n_dust=5, seed=21,
                                 regime="solar-soft")
    with SERReader(d / "mono.ser") as reader:
        mono = np.stack([reader.read(i) for i in range(reader.n_frames)]).astype(np.float64)
    rgb = np.clip(np.rint(np.stack([g * mono for g in GAINS], axis=-1)), 0, 4095).astype(np.uint16)
    write_ser(d / "rgb.ser", rgb, pixel_depth=12, color_id=100)
    cfa = np.empty(mono.shape[1:])  # RGGB filter gains
    cfa[0::2, 0::2], cfa[0::2, 1::2], cfa[1::2, 0::2], cfa[1::2, 1::2] = GAINS[0], GAINS[1], GAINS[1], GAINS[2]
    write_ser(d / "bayer.ser", np.clip(np.rint(mono * cfa), 0, 4095).astype(np.uint16), pixel_depth=12, color_id=8)
    return d, truth, rgb


def test_to_mono():
    rgb = np.random.default_rng(0).uniform(1, 2, (6, 7, 3))
    assert is_colour(rgb) and not is_colour(rgb[..., 0]) and not is_colour(np.zeros((3, 6, 7)))
    np.testing.assert_allclose(to_mono(rgb), rgb.mean(axis=-1), rtol=1e-6)
    plane = rgb[..., 0]
    assert to_mono(plane) is plane


def test_cfa_normalise_removes_the_filter_pattern():
    rng = np.random.default_rng(1)
    scene = 1000 + 50 * rng.standard_normal((40, 60))
    mosaic = scene.copy()
    mosaic[0::2, 0::2] *= 1.4
    mosaic[1::2, 1::2] *= 0.5
    out = cfa_normalise(mosaic, "RGGB")
    ratio = out / scene
    assert np.ptp(ratio) < 0.02  # one common scale left: the pattern is gone
    assert cfa_normalise(mosaic, None) is mosaic


def test_make_flat_accepts_an_rgb_median(videos):
    _, truth, _ = videos
    clean = np.full(truth.transmission.shape, 1000.0)
    rgb = np.stack([g * clean * truth.transmission for g in GAINS], axis=-1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from_rgb = make_flat(rgb, truth.labels > 0)
        from_mono = make_flat(rgb.mean(axis=-1), truth.labels > 0)
    assert from_rgb.data.shape == truth.transmission.shape
    np.testing.assert_allclose(from_rgb.data, from_mono.data, rtol=1e-5)  # float32 vs float64 channel mean
    np.testing.assert_array_equal(from_rgb.data == 1.0, from_mono.data == 1.0)
    with pytest.raises(InputError, match="RGB"):
        make_flat(np.zeros((4, 16, 16)), np.zeros((4, 16, 16), bool))


@pytest.mark.slow
def test_rgb_video_end_to_end(videos):
    """`run` on an RGB SER: a 2-D flat as good as the mono video's, an RGB SER calibrated alike in 3 channels."""
    d, truth, rgb = videos
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mono_result = run_pipeline(d / "mono.ser", d / "out_mono")
        rgb_result = run_pipeline(d / "rgb.ser", d / "out_rgb")
    from aiflat_astro.io.fits import read_flat

    flat_mono = read_flat(d / "out_mono" / "flat.fits")
    flat_rgb = read_flat(d / "out_rgb" / "flat.fits")
    assert flat_rgb.data.shape == rgb.shape[1:3]
    score_mono = evaluate_flat(flat_mono, truth)["residual_ratio"]
    score_rgb = evaluate_flat(flat_rgb, truth)["residual_ratio"]
    assert abs(score_rgb - score_mono) < 0.03  # the channel mean holds the same dust as the mono video

    calibrated = [p for p in (d / "out_rgb").glob("*_aiflat.ser")]
    assert len(calibrated) == 1, rgb_result
    assert mono_result is not None
    with SERReader(calibrated[0]) as out:
        assert out.frame_shape == rgb.shape[1:] and out.header.color_id == 100
        frame = out.read(7)
    outside = flat_rgb.data == 1.0
    np.testing.assert_array_equal(frame[outside], rgb[7][outside])
    expected = np.clip(np.rint(rgb[7] / flat_rgb.data.astype(np.float64)[..., None]), 0, 4095)
    np.testing.assert_array_equal(frame, expected.astype(np.uint16))


@pytest.mark.slow
def test_raw_bayer_video_end_to_end(videos):
    """A raw RGGB mosaic: the filter pattern is divided out to find and measure the dust; the flat fits the mosaic."""
    d, truth, _ = videos
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_pipeline(d / "mono.ser", d / "out_mono_b")
        run_pipeline(d / "bayer.ser", d / "out_bayer")
    from aiflat_astro.io.fits import read_flat

    flat_mono = read_flat(d / "out_mono_b" / "flat.fits")
    flat_bayer = read_flat(d / "out_bayer" / "flat.fits")
    assert flat_bayer.meta["BAYERPAT"] == "RGGB"
    score_mono = evaluate_flat(flat_mono, truth)["residual_ratio"]
    score_bayer = evaluate_flat(flat_bayer, truth)["residual_ratio"]
    assert abs(score_bayer - score_mono) < 0.03
    # the uncertainty is relative: the same scale as the mono video's, whatever the filter gains
    inside = (flat_mono.data != 1.0) & (flat_bayer.data != 1.0)
    u_mono = np.median(flat_mono.uncertainty.array[inside])
    u_bayer = np.median(flat_bayer.uncertainty.array[inside])
    assert 0.7 < u_bayer / u_mono < 1.4


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="issue-11 detector under-covers the large soft shadows of the old "
                                       "(solar-soft) scenario: end-to-end residual 0.75 here, was < 0.25")
def test_mono_end_to_end_residual_old_scenario(videos):
    """The end-to-end flat of the mono video (the products of the tests above are reused)."""
    d, truth, rgb = videos
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_pipeline(d / "mono.ser", d / "out_mono")
    from aiflat_astro.io.fits import read_flat

    assert evaluate_flat(read_flat(d / "out_mono" / "flat.fits"), truth)["residual_ratio"] < 0.25
