"""A shadow under a measured scene: the flat keeps the dust's own shape beyond the estimate's errors
(``_radial._wiener_shape``; ``_radial._keep_measured_shape`` where the noise is unknown)."""

import json
import warnings

import numpy as np
import pytest
from scipy import ndimage

from aiflat_astro import make_flat
from aiflat_astro.dq import expand_mask
from aiflat_astro.flat import _radial


def _video(trans, n_frames=40, seed=0, texture=0.03, jitter=1.0):
    """Granulation-like frames moved by a seeing jitter (Fourier shift), the dust ``trans`` fixed on the sensor."""
    rng = np.random.default_rng(seed)
    h, w = trans.shape
    base = ndimage.gaussian_filter(rng.normal(size=(h + 16, w + 16)), 2.0)
    base = 1 + texture * base / base.std()
    spec = np.fft.fft2(base)
    frames = np.empty((n_frames, h, w))
    for k, s in enumerate(rng.normal(0, jitter, (n_frames, 2))):
        moved = np.fft.ifft2(ndimage.fourier_shift(spec, s)).real[8:8 + h, 8:8 + w]
        frames[k] = 2000 * moved * trans + rng.normal(0, 20, (h, w))
    return frames


def _clump(shape=(96, 120)):
    """Two touching specks of different depth (one shadow, not round about any centre)."""
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    big = 1 - 0.5 * np.clip(6.5 - np.hypot(yy - 48, xx - 54), 0, 1)
    small = 1 - 0.3 * np.clip(4.5 - np.hypot(yy - 47, xx - 64), 0, 1)
    return big * small


def _residual(flat, trans, inside):
    return float(np.sqrt(np.mean((trans[inside] / flat[inside] - 1) ** 2) / np.mean((1 - trans[inside]) ** 2)))


def _flat(median, mask, frames):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return make_flat(median.astype(np.float32), mask, frames=frames)


def _weighted_flat(median, mask, weight, frames):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return make_flat(median.astype(np.float32), mask, weight=weight, frames=frames)


def _radial_only(monkeypatch):
    """The radial model alone under a measured scene (neither way of keeping the shape)."""
    monkeypatch.setattr(_radial, "_wiener_shape", lambda noise, slope, mine, good, vals, model, *a, **k: model)
    monkeypatch.setattr(_radial, "_keep_measured_shape", lambda measured, w, mine, core, good, vals, model, rec: model)


def test_a_clump_under_a_measured_scene_keeps_its_shape(monkeypatch):
    trans = _clump()
    frames = _video(trans)
    median = np.median(frames, axis=0)
    mask = trans < 0.98
    shaped = _flat(median, mask, frames)
    rec = json.loads(shaped.meta["PROVJSON"])["shadows"][0]
    assert rec["profile"] == "radial" and rec["shape_gain"] > 0.5 and rec["measured_noise"] < 0.01
    _radial_only(monkeypatch)
    radial = _flat(median, mask, frames)
    inside = trans < 0.999
    r_shaped, r_radial = _residual(shaped.data, trans, inside), _residual(radial.data, trans, inside)
    assert r_shaped < 0.6 * r_radial, (r_shaped, r_radial, rec)
    region = shaped.flags == 0
    assert np.all(shaped.data[region] == np.float32(1.0))   # nothing outside the mask changes


def test_a_round_speck_is_not_made_worse(monkeypatch):
    """A sharp round speck: the pixels of its edge are not round either (sampling); keeping them helps."""
    yy, xx = np.mgrid[0:96, 0:120]
    trans = 1 - 0.4 * np.clip(6.5 - np.hypot(yy - 48, xx - 60), 0, 1)
    frames = _video(trans, seed=3)
    median = np.median(frames, axis=0)
    inside = trans < 0.999
    shaped = _residual(_flat(median, trans < 0.98, frames).data, trans, inside)
    _radial_only(monkeypatch)
    radial = _residual(_flat(median, trans < 0.98, frames).data, trans, inside)
    assert shaped < 0.05 and shaped <= radial, (shaped, radial)


def test_without_frames_nothing_changes(monkeypatch):
    """From the median alone the ratio holds the scene's texture: the radial model stays, bit for bit."""
    trans = _clump()
    median = np.median(_video(trans, n_frames=12), axis=0)
    before = _flat(median, trans < 0.98, None).data
    monkeypatch.setattr(_radial, "_keep_measured_shape", lambda *args: pytest.fail("used without frames"))
    monkeypatch.setattr(_radial, "_wiener_shape", lambda *args, **kw: pytest.fail("used without frames"))
    assert np.array_equal(_flat(median, trans < 0.98, None).data, before)


@pytest.mark.parametrize("noise, shape, expected", [(0.01, 0.0, 0.0), (0.01, 0.03, 0.9)])
def test_shape_gain_is_a_wiener_gain(noise, shape, expected):
    rng = np.random.default_rng(1)
    n = 4000
    resid = rng.normal(0, noise, n)
    near = np.zeros(n, bool)
    near[:2000] = True
    resid[near] += shape * np.sign(rng.normal(size=2000))
    gain, measured_noise = _radial._shape_gain(resid, near, ~near)
    assert gain == pytest.approx(expected, abs=0.05)
    assert measured_noise == pytest.approx(noise, rel=0.1)
    assert _radial._shape_gain(resid, near, np.zeros(n, bool))[0] == 0.0   # no halo: radial


def test_a_soft_shallow_shadow_is_not_made_worse(monkeypatch):
    """A large, 4 %-deep soft shadow: its smooth misfit is the clean estimate's error, not a shape."""
    yy, xx = np.mgrid[0:128, 0:144]
    trans = 1 - 0.04 * np.clip((16 - np.hypot(yy - 64, xx - 72)) / 6.0, 0, 1)
    frames = _video(trans, seed=5)
    median = np.median(frames, axis=0)
    inside = trans < 0.999
    shaped = _residual(_flat(median, trans < 0.999, frames).data, trans, inside)
    _radial_only(monkeypatch)
    radial = _residual(_flat(median, trans < 0.999, frames).data, trans, inside)
    assert shaped <= 1.1 * radial + 0.005, (shaped, radial)


def _ring_profile(n=60):
    """A sharp radial profile on a grid of pixels: radius, model, slope and a shadow mask."""
    yy, xx = np.mgrid[0:n, 0:n]
    r = np.hypot(yy - n / 2, xx - n / 2)
    model = 1 - 0.4 * np.clip(10.5 - r, 0, 1)
    slope = np.where(np.abs(r - 10) < 0.5, 0.4, 0.0) + 1e-6
    return r, model, slope, r < 18


def test_contour_gain_keeps_a_displaced_edge_and_not_noise():
    rng = np.random.default_rng(2)
    r, model, slope, mine = _ring_profile()
    good = np.ones(int(mine.sum()), bool)
    noise2 = np.full(good.size, 0.005 ** 2)
    resid = rng.normal(0, 0.005, good.size)
    gain, delta = _radial._contour_gain(resid, noise2, slope[mine], good)
    assert delta < 0.02 and gain.max() < 0.1           # noise alone: the radial profile stays
    theta = np.arctan2(*np.nonzero(mine) - np.array([[30], [30]]))
    shifted = resid + 0.3 * np.cos(2 * theta) * slope[mine]   # the edge moved by +-0.3 px (an ellipse)
    gain, delta = _radial._contour_gain(shifted, noise2, slope[mine], good)
    edge = slope[mine] > 0.1
    assert 0.15 < delta < 0.3 and gain[edge].mean() > 0.8 and gain[~edge].max() < 1e-3


def test_beyond_texture_gain_only_beyond_the_texture():
    rng = np.random.default_rng(3)
    _, _, _, mine = _ring_profile()
    good = np.ones(int(mine.sum()), bool)
    noise2 = np.full(good.size, 0.003 ** 2)
    texture = rng.normal(0, 0.02, good.size)             # an error as large as the scene's texture
    gain = _radial._beyond_texture_gain(texture, noise2, mine, good, 0.03)
    assert gain.mean() < 0.02 and gain.max() < 0.5
    clump = texture + np.where(np.arange(good.size) % 7 < 3, 0.3, 0.0)
    gain = _radial._beyond_texture_gain(clump, noise2, mine, good, 0.03)
    assert np.median(gain) > 0.8


def test_a_detection_core_off_the_shadow_is_replaced_by_the_measured_one(monkeypatch):
    """A detector's core that holds a small, off-centre part of the shadow (its mask's halo covers the
    rest): under a measured scene the core and centre come from the ratio, and the flat follows the dust."""
    yy, xx = np.mgrid[0:96, 0:120]
    trans = 1 - 0.3 * np.clip(6.5 - np.hypot(yy - 48, xx - 60), 0, 1)
    frames = _video(trans, seed=4)
    median = np.median(frames, axis=0)
    core = np.hypot(yy - 51, xx - 62) < 2.5                 # 3.6 px off, 19 px of a 130 px shadow
    weight, _ = expand_mask(core, dilate=7, soft_edge=1.5)      # the halo covers the whole shadow
    flat = _weighted_flat(median, core, weight, frames)
    rec = json.loads(flat.meta["PROVJSON"])["shadows"][0]
    assert rec.get("core") == "measured" and abs(rec["y_centroid"] - 48) < 1 and abs(rec["x_centroid"] - 60) < 1
    inside = trans < 0.999
    monkeypatch.setattr(_radial, "_measured_core", lambda *args: (None, None))
    given = _weighted_flat(median, core, weight, frames)
    assert _residual(flat.data, trans, inside) < 0.7 * _residual(given.data, trans, inside)
    assert np.all(flat.data[weight == 0] == np.float32(1.0))   # nothing outside the weight changes


def _core_ctx(dark):
    """`_measured_core`'s inputs for one shadow whose ratio is ``1 - 0.3 dark``; the detection's core
    is a 3 x 3 px patch at one end of it."""
    labels = np.zeros(dark.shape, np.int32)
    ys, xs = np.nonzero(dark)
    labels[ys[0]:ys[0] + 3, xs[0]:xs[0] + 3] = 1
    mine = ndimage.binary_dilation(dark, iterations=4)
    ctx = {"noise": np.full(dark.shape, 0.01), "labels": labels}
    vals = (1 - 0.3 * dark)[mine]
    ys, xs = np.nonzero(mine)
    return ctx, (slice(None), slice(None)), mine, ys, xs, np.ones(vals.size, bool), vals


def test_a_measured_core_must_look_like_a_speck():
    """The core from the ratio replaces the detection's only if it is a speck's shape: elongated beyond
    `_ELONG_MAX` (real specks: 1.15 median, 1.8 at the 95th percentile) it is an error along a scene
    edge, and the detection's core stays."""
    yy, xx = np.mgrid[0:40, 0:60]
    round_ = np.hypot(yy - 20, xx - 30) < 5
    core_y, _ = _radial._measured_core(*_core_ctx(round_)[:3], 1, *_core_ctx(round_)[3:])
    assert core_y is not None and core_y.size == round_.sum()
    streak = (np.abs(yy - 20) < 1.5) & (np.abs(xx - 30) < 12)   # 3 x 23 px: elongation about 7
    assert _radial._shape_matrix(*np.nonzero(streak))[1] > _radial._ELONG_MAX
    core_y, core_x = _radial._measured_core(*_core_ctx(streak)[:3], 1, *_core_ctx(streak)[3:])
    assert core_y is None and core_x is None
