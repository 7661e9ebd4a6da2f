"""Gemini inpainting (``inpaint='gemini'``) through the real SDK against a local fake server.

The key test sends the simulator's dusty median and answers with the TRUE
clean image, put through the same 8-bit encoding and resized to the model's
output size: whatever error remains in the flat is what the round trip adds.
"""

import numpy as np
import pytest

from aiflat_astro.datasets import make_dusty_video
from aiflat_astro.products import DustDetection, empty_catalog
from aiflat_astro._gemini.fake_server import FakeGeminiServer, echo, image_reply
from aiflat_astro.flat.estimators.gemini import clean_image_responder, inpaint_gemini
from aiflat_astro._gemini.prompts import INPAINT_PROMPT, prompt_sha256
from aiflat_astro.dq import DustDQ
from aiflat_astro.utils.exceptions import GeminiError

KEY = "AIzaSy-TEST-inpaint-key-000"
FAST = {"retries": 2, "initial_delay": 0.001, "max_delay": 0.002, "timeout": 30, "image_size": "1K"}


pytestmark = pytest.mark.usefixtures("offline_gemini")


def detection_from_truth(labels):
    dq = (labels > 0).astype(np.uint8) * np.uint8(DustDQ.DUST)
    return DustDetection(dq=dq, weight=dq.astype(np.float32), catalog=empty_catalog(), detector="truth").expanded()


def make_case(regime, seed=1):
    truth = make_dusty_video(None, shape=(256, 320), n_frames=2, regime={"solar": "solar-soft"}.get(regime, regime),
                             seed=seed)
    clean = (truth.scene * truth.vignetting * 3000).astype(np.float64)
    median = (clean * truth.transmission).astype(np.float32)
    return median, clean, truth.transmission, detection_from_truth(truth.labels)


def truth_answers(median, detection, clean, server_url, **kw):
    """Answers holding the true clean image, in the geometry and stretch the requests use."""
    return clean_image_responder(median, detection, clean, api_key=KEY, **FAST, **kw)[0]


@pytest.fixture(scope="module", params=["deepsky", "solar"])
def case(request):
    return request.param, *make_case(request.param)


def test_round_trip_error(case):
    """The flat error added by the 8-bit round trip (see docs/gemini.rst for the figures)."""
    regime, median, clean, transmission, detection = case
    region = detection.weight > 0
    with FakeGeminiServer() as server:
        server.responder = truth_answers(median, detection, clean, server.url)
        estimate, info = inpaint_gemini(median, detection, api_key=KEY, base_url=server.url, cache=False, **FAST)
    flat = median / estimate
    error = (flat - transmission)[region]
    rms, worst = np.sqrt(np.mean(error ** 2)), np.abs(error).max()
    limits = {"deepsky": (3e-4, 1e-2), "solar": (2.5e-3, 4e-2)}[regime]
    assert rms < limits[0] and worst < limits[1], (rms, worst)
    # one 8-bit grey level is far finer than 1/255 of the data range
    assert info["gemini"]["grey_level_step"] < (2e-4 if regime == "deepsky" else 2e-3)
    # nothing outside the weight changes
    np.testing.assert_array_equal(estimate[~region], median[~region])
    np.testing.assert_array_equal(info["generated"], region)


def test_request_format(case):
    regime, median, clean, transmission, detection = case
    with FakeGeminiServer(echo) as server:
        inpaint_gemini(median, detection, api_key=KEY, base_url=server.url, **FAST)
    (req,) = server.requests
    assert req.text == INPAINT_PROMPT
    assert len(req.images) == 2
    image, mask = req.images_u8
    assert image.shape == mask.shape == (256, 320)
    assert set(np.unique(mask)) == {0, 255}
    np.testing.assert_array_equal(mask == 255, detection.weight > 0)


def test_provenance_and_cache(case):
    regime, median, clean, transmission, detection = case
    with FakeGeminiServer(echo) as server:
        first, info = inpaint_gemini(median, detection, api_key=KEY, base_url=server.url, **FAST)
        again, info2 = inpaint_gemini(median, detection, base_url=server.url, **FAST)  # no key needed
        assert len(server.requests) == 1
    np.testing.assert_array_equal(first, again)
    prov = info["provenance"]
    assert prov["ai_prompt"] == INPAINT_PROMPT
    assert prov["prompt_sha256"] == prompt_sha256(INPAINT_PROMPT)
    assert prov["response_sha256"] == info2["provenance"]["response_sha256"]
    assert info["params"]["AICACHED"] is False and info2["params"]["AICACHED"] is True
    assert all(len(k) <= 8 for k in info["params"])


def test_star_inside_the_shadow():
    """A star clipped in the 8-bit answer gets the transmission of its surroundings."""
    y, x = np.indices((128, 160), dtype=float)
    transmission = 1 - 0.05 * np.clip(15.5 - np.hypot(y - 64, x - 80), 0, 1)
    clean = 1000 * (1 + 0.01 * np.sin(x / 5)) + 30000 * np.exp(-((y - 60) ** 2 + (x - 83) ** 2) / 4.0)
    median = (clean * transmission).astype(np.float32)
    labels = (np.hypot(y - 64, x - 80) < 16).astype(np.int32)
    detection = detection_from_truth(labels)
    with FakeGeminiServer() as server:
        server.responder = truth_answers(median, detection, clean, server.url)
        estimate, info = inpaint_gemini(median, detection, api_key=KEY, base_url=server.url, cache=False, **FAST)
    assert info["gemini"]["clipped_pixels"] > 0
    flat = median / estimate
    star = np.hypot(y - 60, x - 83) < 3
    assert np.abs(flat - transmission)[star].max() < 5e-3


def test_only_tiles_with_dust_are_sent():
    shape = (300, 500)  # six 256-px tiles
    y, x = np.indices(shape, dtype=float)
    labels = (np.hypot(y - 280, x - 480) < 8).astype(np.int32)  # in the last tile only
    median = (1000 * (1 - 0.1 * labels) * (1 + 0.01 * np.sin(x / 4))).astype(np.float32)
    detection = detection_from_truth(labels)
    with FakeGeminiServer(echo) as server:
        clean, info = inpaint_gemini(median, detection, api_key=KEY, base_url=server.url, tile_size=256,
                                     tile_overlap=32, **FAST)
    (req,) = server.requests
    assert req.aspect_ratio == "1:1" and req.images_u8[0].shape == (256, 256)
    assert info["gemini"]["requests"][0]["tile"] == [44, 244, 256, 256]
    assert (req.images_u8[1] == 255).sum() == (detection.weight > 0).sum()


def test_empty_mask_makes_no_request():
    median = np.full((64, 64), 100.0, np.float32)
    with FakeGeminiServer(echo) as server:
        clean, info = inpaint_gemini(median, detection_from_truth(np.zeros((64, 64), int)),
                                     api_key=KEY, base_url=server.url, **FAST)
    assert server.requests == []
    np.testing.assert_array_equal(clean, median)
    assert not info["generated"].any()


def test_altered_answer_is_refused(case):
    regime, median, clean, transmission, detection = case
    with FakeGeminiServer(lambda req: image_reply(1.0 - np.full(req.output_shape, 0.2))) as server:
        with pytest.raises(GeminiError, match="differs from the input around the dust"):
            inpaint_gemini(median, detection, api_key=KEY, base_url=server.url, **FAST)


def test_make_flat_sets_generated(case):
    """inpaint='gemini' through make_flat: GENERATED on every weighted pixel, AI provenance kept."""
    make_flat = pytest.importorskip("aiflat_astro.flat").make_flat
    regime, median, clean, transmission, detection = case
    region = detection.weight > 0
    with FakeGeminiServer() as server:
        server.responder = truth_answers(median, detection, clean, server.url)
        flat = make_flat(median, detection, inpaint="gemini", profile="none",
                         inpaint_options={"api_key": KEY, "base_url": server.url, "cache": False, **FAST})
    dq = np.asarray(flat.flags)
    np.testing.assert_array_equal((dq & DustDQ.GENERATED) > 0, region)
    assert np.all(flat.data[~region] == 1.0)
    assert flat.meta["INPAINT"] == "gemini"
    assert flat.meta["AIMODEL"] == "gemini-3-pro-image-preview"
    assert flat.meta["PRMTSHA"] == prompt_sha256(INPAINT_PROMPT)
    good = region & ((dq & DustDQ.LOW_TRANS) == 0)
    assert np.sqrt(np.mean((flat.data - transmission)[good] ** 2)) < (3e-4 if regime == "deepsky" else 2.5e-3)
