"""Rendering and geometry helpers for generative image models."""

import numpy as np
import pytest

from aiflat_astro._gemini.render import (ASPECT_RATIOS, Request, Stretch, blend_weights, check_answer_shape,
                                         decode_image, encode_png, nearest_aspect_ratio, normalise,
                                         pad_to_ratio, place, plan_requests, ratio_value, resample,
                                         smooth_background, tile_layout, unplace)
from aiflat_astro.utils.exceptions import GeminiError, InputError


@pytest.mark.parametrize("shape", [(256, 320), (480, 640), (1080, 1920), (100, 100), (300, 97), (50, 400)])
def test_padding_reaches_the_ratio(shape):
    ratio = nearest_aspect_ratio(*shape)
    (t, b), (left, right) = pad_to_ratio(*shape, ratio)
    assert min(t, b, left, right) >= 0 and (t + b == 0 or left + right == 0)
    assert abs(t - b) <= 1 and abs(left - right) <= 1
    h, w = shape[0] + t + b, shape[1] + left + right
    assert abs(w / h - ratio_value(ratio)) < 1.0 / min(h, w) + 1e-9


def test_nearest_ratio_is_nearest():
    for w in range(50, 500, 7):
        best = nearest_aspect_ratio(100, w)
        d = abs(np.log(w / 100) - np.log(ratio_value(best)))
        assert all(d <= abs(np.log(w / 100) - np.log(ratio_value(r))) + 1e-12 for r in ASPECT_RATIOS)


def test_stretch_inverse_within_half_a_step():
    s = Stretch.around_one(0.05)
    r = np.linspace(0.95, 1.05, 1001)
    back = s.inverse(s.forward(r) / 255.0)
    assert np.abs(back - r).max() <= s.step / 2 + 1e-12
    assert s.forward([0.5, 2.0, np.nan]).tolist() == [0, 255, 128]


def test_png_round_trip_and_colour_answers():
    a = np.arange(256, dtype=np.uint8).reshape(16, 16)
    png = encode_png(a)
    assert png == encode_png(a)  # deterministic bytes
    np.testing.assert_array_equal(np.rint(decode_image(png) * 255), a)
    from io import BytesIO

    from PIL import Image

    buf = BytesIO()
    Image.fromarray(np.stack([a, a, a], axis=-1)).save(buf, format="PNG")
    np.testing.assert_allclose(decode_image(buf.getvalue()) * 255, a, atol=1)
    buf = BytesIO()
    Image.fromarray((a.astype(np.uint16) * 257)).save(buf, format="PNG")
    np.testing.assert_allclose(decode_image(buf.getvalue()), a / 255.0, atol=1e-6)
    with pytest.raises(GeminiError, match="cannot be decoded"):
        decode_image(b"\x89PNG garbage")


def test_resample_conserves_mean_and_is_exact_for_blocks():
    rng = np.random.default_rng(0)
    a = rng.random((30, 40))
    for shape in [(15, 20), (7, 9), (45, 61), (30, 40)]:
        b = resample(a, shape)
        assert b.shape == shape
        if shape[0] <= 30:
            assert abs(b.mean() - a.mean()) < 1e-12
    up = np.repeat(np.repeat(a, 4, axis=0), 4, axis=1)
    np.testing.assert_allclose(resample(up, a.shape), a, atol=1e-12)


def test_tiles_cover_with_overlap():
    shape = (1100, 1900)
    tiles = tile_layout(shape, 1024, 128)
    cover = np.zeros(shape, int)
    for y0, x0, h, w in tiles:
        assert (h, w) == (1024, 1024)
        cover[y0:y0 + h, x0:x0 + w] += 1
    assert cover.min() >= 1
    xs = sorted({t[1] for t in tiles})
    assert xs[1] - xs[0] <= 1024 - 128
    total = sum(blend_weights(t, shape, 128)[..., None].sum() for t in tiles)
    assert total > 0


def test_blend_weights_partition_of_unity_shape():
    shape = (300, 500)
    tiles = tile_layout(shape, 256, 64)
    acc = np.zeros(shape)
    for t in tiles:
        acc[t[0]:t[0] + t[2], t[1]:t[1] + t[3]] += blend_weights(t, shape, 64)
    assert acc.min() > 0.4


def test_place_unplace_round_trip():
    y, x = np.indices((200, 333))
    full = 0.5 + 0.3 * np.sin(x / 9.0) * np.cos(y / 7.0)
    (req,) = plan_requests(full.shape, image_size="1K")
    sent = place(full, req, 0.5)
    assert sent.shape == req.padded_shape == (200, 356)
    back = unplace(resample(sent, (576, 1024)), req)
    # enlarging then area-averaging back is close to the identity on smooth data
    assert back.shape == full.shape
    assert np.abs(back - full)[2:-2, 2:-2].max() < 0.01
    np.testing.assert_allclose(unplace(sent, req), full)


def test_check_answer_shape():
    req = Request(tile=(0, 0, 256, 320), aspect_ratio="5:4", pad=((0, 0), (0, 0)))
    check_answer_shape((928, 1152), req)
    with pytest.raises(GeminiError, match="aspect ratio"):
        check_answer_shape((1024, 1024), req)
    with pytest.raises(GeminiError, match="too small"):
        check_answer_shape((8, 10), req)


def test_plan_requests_options():
    assert len(plan_requests((4096, 4096), image_size="4K")) == 1
    assert len(plan_requests((4096, 4096), image_size="2K")) == 9
    assert len(plan_requests((600, 600), image_size="1K", tile_size=256, overlap=32)) == 9
    with pytest.raises(InputError, match="image_size"):
        plan_requests((10, 10), image_size="8K")
    with pytest.raises(InputError, match="overlap"):
        plan_requests((10, 10), image_size="1K", tile_size=100, overlap=60)


def test_background_ignores_shadows_and_follows_vignetting():
    y, x = np.indices((256, 320), dtype=float)
    vignetting = 1 - 0.15 * (((y - 128) / 128) ** 2 + ((x - 160) / 160) ** 2)
    dust = 1 - 0.1 * (np.hypot(y - 100, x - 100) < 12)
    image = 1000 * vignetting * dust
    bg = smooth_background(image)
    ratio = normalise(image, bg)
    clean = np.hypot(y - 100, x - 100) > 20
    assert np.abs(ratio[clean] - 1).max() < 0.01  # corners included
    assert abs(ratio[100, 100] - 0.9) < 0.01
    masked = smooth_background(image, ignore=~clean)
    assert abs(normalise(image, masked)[100, 100] - 0.9) < 0.005


def test_background_mask_is_deprecated_for_ignore():
    from aiflat_astro.utils.exceptions import AiflatDeprecationWarning

    y, x = np.indices((128, 160), dtype=float)
    image = 1000 * (1 - 0.1 * (np.hypot(y - 60, x - 60) < 10))
    ignore = np.hypot(y - 60, x - 60) < 16
    with pytest.warns(AiflatDeprecationWarning, match=r"smooth_background\(mask=") as record:
        old = smooth_background(image, mask=ignore)
    assert record[0].filename == __file__
    np.testing.assert_array_equal(old, smooth_background(image, ignore=ignore))
