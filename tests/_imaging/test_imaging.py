"""The shared array cores: ``_imaging`` (robust scatter, block means, limb circle) and the frame selection."""

import numpy as np
import pytest

from aiflat_astro._imaging.disc import fit_circle
from aiflat_astro._imaging.robust import block_mean, robust_sigma
from aiflat_astro.io.frames import open_frames, opened_frames, select_frames, spread_indices
from aiflat_astro.utils._colour import mono_frame
from aiflat_astro.utils.exceptions import InputError


def test_robust_sigma_is_the_scaled_mad_of_the_finite_values():
    rng = np.random.default_rng(3)
    values = rng.normal(5.0, 2.0, 20_000)
    values[:50] = np.nan
    values[50:100] = 1e6  # outliers
    finite = values[np.isfinite(values)]
    expected = 1.482602218505602 * np.median(np.abs(finite - np.median(finite)))
    assert robust_sigma(values) == pytest.approx(expected, rel=1e-12)
    assert robust_sigma(values) == pytest.approx(2.0, rel=0.03)
    assert robust_sigma(np.full(4, np.inf)) == 0.0


@pytest.mark.parametrize("shape, factor", [((37, 50), 4), ((16, 16), 2), ((9, 7), 3)])
def test_block_mean_matches_reshape_mean_and_trims(shape, factor):
    rng = np.random.default_rng(0)
    image = rng.normal(size=shape)
    h, w = shape[0] // factor * factor, shape[1] // factor * factor
    expected = image[:h, :w].reshape(h // factor, factor, w // factor, factor).mean(axis=(1, 3))
    np.testing.assert_allclose(block_mean(image, factor), expected, rtol=1e-12)
    assert block_mean(image, 1) is image


def test_fit_circle_on_an_arc_with_outliers():
    t = np.linspace(0.2, 1.4, 200)
    y, x = 500 + 400 * np.sin(t), -100 + 400 * np.cos(t)
    np.testing.assert_allclose(fit_circle(y, x), (500, -100, 400), atol=1e-6)
    y[::20] += 30  # a prominence every 20 points
    plain, robust = fit_circle(y, x), fit_circle(y, x, refine=True)
    assert abs(robust[2] - 400) < abs(plain[2] - 400)
    assert abs(robust[2] - 400) < 1.0
    assert fit_circle([0.0, 1.0, 2.0], [0.0, 2.0, 4.0]) is None


def test_spread_and_select_frames():
    np.testing.assert_array_equal(spread_indices(100, 5), [0, 25, 50, 74, 99])
    assert spread_indices(4, 10).tolist() == [0, 1, 2, 3]
    sel = select_frames(1000, step=3, max_frames=7)
    assert sel[0] == 0 and sel[-1] == 999 and len(sel) == 7 and np.all(sel % 3 == 0)
    assert select_frames(1000, step=3, max_frames=7, spread=False).tolist() == [0, 3, 6, 9, 12, 15, 18]
    assert select_frames(5).tolist() == [0, 1, 2, 3, 4]
    for bad in ({"step": 0}, {"max_frames": 0}, {"step": True}, {"max_frames": 2.5}):
        with pytest.raises(InputError, match="must be a positive integer"):
            select_frames(10, **bad)
    with pytest.raises(InputError, match="no frames"):
        select_frames(0)


def test_opened_frames_closes_only_what_it_opened(tmp_path):
    from aiflat_astro.io import write_ser

    path = tmp_path / "v.ser"
    write_ser(path, np.arange(3 * 8 * 9, dtype=np.uint16).reshape(3, 8, 9))
    with opened_frames(path) as src:
        assert src.n_frames == 3
        first = src.read(0)
    with pytest.raises(Exception):
        src.read(0)  # closed on exit
    mine = open_frames(path)
    with opened_frames(mine) as src:
        assert src is mine
    np.testing.assert_array_equal(mine.read(0), first)  # left open for its owner
    mine.close()


def test_mono_frame_copies_and_averages():
    rgb = np.stack([np.full((2, 3), v, np.uint8) for v in (10, 20, 60)], axis=-1)
    assert mono_frame(rgb).tolist() == [[30.0] * 3] * 2
    grey = np.ones((2, 3), np.float64)
    out = mono_frame(grey)
    out[0, 0] = 5
    assert grey[0, 0] == 1  # a new array: the input is never modified
    assert mono_frame(grey, dtype=np.float32).dtype == np.float32


@pytest.mark.parametrize("shift", [(0.3, -1.7), (2.0, 3.0), (-5.5, 0.25), (0.0, 0.0), (45.0, 0.0)])
def test_bilinear_shift_is_ndimage_order_1(shift):
    from scipy import ndimage

    from aiflat_astro._imaging.shift import bilinear_shift

    image = np.random.default_rng(0).normal(size=(40, 50))
    expected = ndimage.shift(image, shift, order=1, mode="grid-constant", cval=0.0)
    np.testing.assert_allclose(bilinear_shift(image, shift, dtype=np.float64), expected, atol=1e-12)
    assert bilinear_shift(image, shift).dtype == np.float32
