"""GeminiDustDetector through the real google-genai SDK against a local fake server.

The server (`aiflat_astro._gemini.fake_server`) speaks the generateContent
wire format on 127.0.0.1; nothing in the SDK is mocked.  Masks come either
from simulator truth placed in the geometry of each request, or from an
oracle that only sees the pixels it was sent (so that aiflat's own padding,
tiling and resampling are checked independently).
"""

import json
import logging

import numpy as np
import pytest
from astropy.io import fits

from aiflat_astro.datasets import make_dusty_video
from aiflat_astro._gemini.fake_server import (FakeGeminiServer, blocked_reply, dark_pixel_mask, echo,
                                              error_reply, finish_reply, image_reply, lookup_responder,
                                              text_reply, Reply)
from aiflat_astro._gemini.render import place, plan_requests
from aiflat_astro.detection.gemini import DEFAULT_GEMINI_MODEL, GeminiDustDetector
from aiflat_astro._gemini.prompts import MASK_PROMPT, PROMPT_VERSION, prompt_sha256
from aiflat_astro.dq import DustDQ
from aiflat_astro.provenance import add_provenance_cards, provjson_hdu, read_provjson
from aiflat_astro.utils.exceptions import AiflatDeprecationWarning, GeminiError, InputError

KEY = "AIzaSy-TEST-secret-key-0123456789"
FAST = {"retries": 3, "initial_delay": 0.001, "max_delay": 0.002, "timeout": 30}


pytestmark = pytest.mark.usefixtures("offline_gemini")


@pytest.fixture
def server():
    with FakeGeminiServer(echo) as fake:
        yield fake


def discs(shape, centres, radii, depths, *, level=1000.0, vignetting=0.1):
    """A smooth vignetted field with dark discs (soft 1-px edges); returns (median, truth mask)."""
    y, x = np.indices(shape, dtype=float)
    cy, cx = (shape[0] - 1) / 2, (shape[1] - 1) / 2
    r2 = ((y - cy) ** 2 + (x - cx) ** 2) / (cy ** 2 + cx ** 2)
    transmission = np.ones(shape)
    truth = np.zeros(shape, bool)
    for (yc, xc), rad, depth in zip(centres, radii, depths):
        d = np.hypot(y - yc, x - xc)
        transmission *= 1 - depth * np.clip(rad + 0.5 - d, 0, 1)
        truth |= d < rad
    return (level * (1 - vignetting * r2) * transmission).astype(np.float32), truth


def detector(server, **kw):
    options = {"api_key": KEY, "base_url": server.url, "image_size": "1K", **FAST}
    options.update(kw)
    return GeminiDustDetector(**options)


def truth_responder(det, median, truth):
    """Answer every request of ``det`` on ``median`` with the truth mask in that request's geometry."""
    sent = det.render(median)[0]
    table = {}
    for request in plan_requests(median.shape, image_size=det.image_size, tile_size=det.tile_size,
                                 overlap=det.tile_overlap):
        table[place(sent, request, 128).tobytes()] = place(truth.astype(float), request, 0.0)
    return lookup_responder(table)


@pytest.fixture(scope="module")
def dusty():
    truth = make_dusty_video(None, shape=(256, 320), n_frames=2, regime="solar-soft", n_dust=8, seed=3)
    median = (truth.scene * truth.vignetting * truth.transmission * 3000).astype(np.float32)
    return median, truth


class TestMasks:
    def test_truth_mask_round_trip(self, server, dusty):
        """A mask from simulator truth comes back exactly onto the sensor grid."""
        median, truth = dusty
        det = detector(server)
        server.responder = truth_responder(det, median, truth.labels > 0)
        result = det(median, f_ratio=30, pixel_size=3.75)
        want = truth.labels > 0
        iou = (result.dust_mask & want).sum() / (result.dust_mask | want).sum()
        assert iou > 0.97
        assert len(result.catalog) == len(np.unique(truth.labels)) - 1
        for row in truth.shadows:
            d = np.hypot(result.catalog["x_centroid"] - row["x_centroid"],
                         result.catalog["y_centroid"] - row["y_centroid"])
            assert d.min() < 1.0
        assert "distance_mm" in result.catalog.colnames
        assert set(result.catalog["method"]) == {"gemini"}
        # the weight is the expanded mask: 1 on the dust, soft outside, halo flagged
        assert np.all(result.weight[result.dust_mask] == 1)
        assert np.any((result.dq & DustDQ.DUST_HALO) > 0)

    def test_request_wire_format(self, server, dusty):
        median, truth = dusty
        det = detector(server)
        server.responder = truth_responder(det, median, truth.labels > 0)
        det(median)
        (req,) = server.requests
        assert req.model == DEFAULT_GEMINI_MODEL
        assert req.api_version == "v1beta"
        assert req.headers["x-goog-api-key"] == KEY
        assert req.aspect_ratio == "5:4" and req.image_size == "1K"
        assert req.text == MASK_PROMPT
        assert req.body["generationConfig"]["responseModalities"] == ["TEXT", "IMAGE"]
        assert req.body["generationConfig"]["seed"] == 0
        (image,) = req.images_u8
        assert image.shape == (256, 320)
        # background-normalised and stretched: the solar disc sits at mid-grey; the unlit sky
        # beyond the limb is sent as neutral grey, like padding
        disc = truth.scene > 0.5 * truth.scene.max()
        assert abs(np.median(image[disc]) - 128) < 5
        sky = truth.scene < 0.02 * truth.scene.max()
        assert sky.sum() > 1000 and np.mean(image[sky] == 128) > 0.99
        # a 3 % shadow is at least 40 grey levels darker than the disc
        deep = truth.shadows[truth.shadows["depth"] > 0.03][0]
        yc, xc = int(round(deep["y_centroid"])), int(round(deep["x_centroid"]))
        assert np.median(image[disc]) - image[yc, xc] > 40

    def test_padding_oracle(self, server):
        """An oracle that sees only the sent pixels: padding to 16:9 and cropping back are exact."""
        centres = [(40.3, 60.7), (150.2, 250.4), (100.0, 180.0), (20.5, 310.5)]
        median, truth = discs((200, 333), centres, [6, 9, 5, 7], [0.06, 0.04, 0.1, 0.05])
        server.responder = dark_pixel_mask(0.4)
        result = detector(server)(median)
        (req,) = server.requests
        assert req.aspect_ratio == "16:9"
        assert req.images_u8[0].shape == (200, 356)
        assert np.all(req.images_u8[0][:, :11] == 128) and np.all(req.images_u8[0][:, -12:] == 128)
        assert len(result.catalog) == 4
        for yc, xc in centres:
            d = np.hypot(result.catalog["x_centroid"] - xc, result.catalog["y_centroid"] - yc)
            assert d.min() < 0.5
        iou = (result.dust_mask & truth).sum() / (result.dust_mask | truth).sum()
        assert iou > 0.85

    @pytest.mark.slow
    def test_tiling_large_frame(self, server):
        """A frame larger than the model output is tiled; shadows in overlaps are found once."""
        shape = (1100, 1900)
        requests = plan_requests(shape, image_size="1K")
        assert len(requests) == 4
        # one disc in the middle of the overlap of all four tiles, others inside single tiles
        centres = [(550.0, 950.0), (100.0, 100.0), (1000.0, 1800.0), (300.0, 1500.0)]
        median, truth = discs(shape, centres, [10, 8, 12, 6], [0.05, 0.05, 0.05, 0.08])
        server.responder = dark_pixel_mask(0.4)
        result = detector(server)(median)
        assert len(server.requests) == 4
        assert {r.aspect_ratio for r in server.requests} == {"1:1"}
        assert all(r.images_u8[0].shape == (1024, 1024) for r in server.requests)
        assert len(result.catalog) == 4
        for yc, xc in centres:
            d = np.hypot(result.catalog["x_centroid"] - xc, result.catalog["y_centroid"] - yc)
            assert d.min() < 0.5
        assert result.provenance["params"]["AITILES"] == 4
        assert len(result.provenance["gemini"]["requests"]) == 4

    def test_max_tiles(self, server):
        median, _ = discs((1100, 1900), [(500, 500)], [8], [0.1])
        with pytest.raises(InputError, match="needs 4 Gemini requests"):
            detector(server, max_tiles=2)(median)
        assert server.requests == []

    def test_ignored_pixels(self, server):
        median, truth = discs((128, 160), [(40, 40), (90, 120)], [6, 6], [0.1, 0.1])
        server.responder = dark_pixel_mask(0.4)
        ignore = np.zeros(median.shape, bool)
        ignore[70:110, 100:140] = True
        result = detector(server)(median, ignore=ignore)
        assert len(result.catalog) == 1
        assert not result.dust_mask[ignore].any()
        # ignored pixels are sent as neutral grey
        assert np.all(server.requests[0].images_u8[0][80:100, 110:130] == 128)

    def test_mask_is_deprecated_for_ignore(self, server):
        median, _ = discs((128, 160), [(40, 40), (90, 120)], [6, 6], [0.1, 0.1])
        server.responder = dark_pixel_mask(0.4)
        ignore = np.zeros(median.shape, bool)
        ignore[70:110, 100:140] = True
        det = detector(server)
        new = det(median, ignore=ignore)
        with pytest.warns(AiflatDeprecationWarning, match=r"GeminiDustDetector\(mask=\.\.\.\).*ignore") as rec:
            old = det(median, mask=ignore)
        assert rec[0].filename == __file__
        np.testing.assert_array_equal(new.dq, old.dq)
        with pytest.warns(AiflatDeprecationWarning, match=r"render\(mask=") as rec:
            sent = det.render(median, mask=ignore)[0]
        assert rec[0].filename == __file__
        np.testing.assert_array_equal(sent, det.render(median, ignore=ignore)[0])
        with pytest.raises(InputError, match="not both"):
            det(median, ignore=ignore, mask=ignore)

    def test_faint_sky_is_not_unlit(self, server):
        """A deep-sky field with a bright nebula: dust on the faint sky is still shown and found."""
        median, truth = discs((160, 200), [(120, 150)], [8], [0.05], vignetting=0.0)
        median = median * 0.1  # sky at 100
        median[20:60, 20:60] += 5000.0  # 5 % of the frame, 50 times the sky
        server.responder = dark_pixel_mask(0.4)
        det = detector(server)
        image = det.render(median)[0]
        assert image[120, 150] < 60 and np.median(image[100:140, 100:140]) > 100
        result = det(median)
        d = np.hypot(result.catalog["x_centroid"] - 150, result.catalog["y_centroid"] - 120)
        assert d.min() < 0.5

    def test_thought_images_are_skipped(self, server):
        median, truth = discs((128, 160), [(64, 80)], [8], [0.1])
        wrong = np.ones((1024, 1280))  # an interim 'thought' image, all white

        def responder(request):
            mask = (request.images[0] < 0.4).astype(float)
            from aiflat_astro._gemini.render import resample
            return image_reply(resample(mask, request.output_shape) >= 0.5, thought_images=[wrong])

        server.responder = responder
        result = detector(server)(median)
        assert len(result.catalog) == 1


class TestProvenance:
    def test_provenance_record(self, server, dusty):
        median, truth = dusty
        det = detector(server)
        server.responder = truth_responder(det, median, truth.labels > 0)
        prov = det(median).provenance
        assert prov["detector"] == "gemini"
        assert prov["ai_model"] == DEFAULT_GEMINI_MODEL
        assert prov["ai_prompt"] == MASK_PROMPT
        assert prov["prompt_sha256"] == prompt_sha256(MASK_PROMPT)
        assert len(prov["input_sha256"]) == 64 and len(prov["response_sha256"]) == 64
        params = prov["params"]
        assert params["PRMTVER"] == PROMPT_VERSION
        assert params["AIRESPID"] == "fake-response"
        assert params["AITOKENS"] == 1590
        assert params["AICACHED"] is False
        record = prov["gemini"]["requests"][0]
        assert record["usage"]["total_token_count"] == 1590
        assert record["text"] == "Here it is."
        assert record["aspect_ratio"] == "5:4"

    def test_header_cards_and_provjson(self, server, dusty):
        median, truth = dusty
        det = detector(server)
        server.responder = truth_responder(det, median, truth.labels > 0)
        prov = det(median).provenance
        header = fits.Header()
        add_provenance_cards(header, prov)  # no VerifyWarning (warnings are errors)
        assert header["AIMODEL"] == DEFAULT_GEMINI_MODEL
        assert header["PRMTSHA"] == prompt_sha256(MASK_PROMPT)
        assert header["RESPSHA"] == prov["response_sha256"]
        assert header["AIPROMPT"].startswith("You are helping to calibrate")
        assert all(len(k) <= 8 for k in header)
        hdul = fits.HDUList([fits.PrimaryHDU(), provjson_hdu(prov)])
        back = read_provjson(hdul)
        assert back["ai_prompt"] == MASK_PROMPT
        assert back["gemini"]["requests"][0]["response_id"] == "fake-response"


class TestCache:
    def test_rerun_makes_no_call_and_is_bit_identical(self, server, dusty, monkeypatch):
        median, truth = dusty
        det = detector(server)
        server.responder = truth_responder(det, median, truth.labels > 0)
        first = det(median)
        assert len(server.requests) == 1
        # no key at all: a cached rerun needs neither the network nor the key
        again = detector(server, api_key=None)(median)
        assert len(server.requests) == 1
        np.testing.assert_array_equal(again.dq, first.dq)
        np.testing.assert_array_equal(again.weight, first.weight)
        assert again.catalog.pformat() == first.catalog.pformat()
        assert again.provenance["response_sha256"] == first.provenance["response_sha256"]
        assert again.provenance["params"]["AICACHED"] is True
        assert again.provenance["params"]["AIRESPID"] == "fake-response"

    def test_changes_miss_the_cache(self, server, dusty):
        median, truth = dusty
        server.responder = dark_pixel_mask(0.4)
        detector(server)(median)
        detector(server, prompt=MASK_PROMPT + " Be careful.")(median)
        detector(server, model="gemini-2.5-flash-image")(median)
        detector(server, stretch=0.05)(median)
        assert len(server.requests) == 4
        detector(server, stretch=0.05)(median)
        assert len(server.requests) == 4

    def test_cache_disabled_and_cache_dir(self, server, dusty, tmp_path):
        median, _ = dusty
        server.responder = dark_pixel_mask(0.4)
        detector(server, cache=False)(median)
        detector(server, cache=False)(median)
        assert len(server.requests) == 2
        assert not (tmp_path / "cache").exists()
        detector(server, cache_dir=tmp_path / "mine")(median)
        entries = list((tmp_path / "mine" / "gemini").rglob("*.json"))
        assert len(entries) == 1
        entry = json.loads(entries[0].read_text())
        assert entry["response_id"] == "fake-response" and "image" in entry

    def test_corrupted_entry_is_ignored(self, server, dusty, tmp_path):
        median, _ = dusty
        server.responder = dark_pixel_mask(0.4)
        first = detector(server)(median)
        (entry,) = (tmp_path / "cache" / "gemini").rglob("*.json")
        data = json.loads(entry.read_text())
        data["response_sha256"] = "0" * 64
        entry.write_text(json.dumps(data))
        again = detector(server)(median)
        assert len(server.requests) == 2
        np.testing.assert_array_equal(again.dq, first.dq)


class TestFaults:
    def test_429_then_success(self, server, dusty):
        median, _ = dusty
        server.responder = dark_pixel_mask(0.4)
        server.queue(error_reply(429), error_reply(429))
        result = detector(server)(median)
        assert len(server.requests) == 3
        assert len(result.catalog) > 0

    @pytest.mark.parametrize("code, status", [(500, "INTERNAL"), (503, "UNAVAILABLE")])
    def test_server_errors_exhaust_retries(self, server, dusty, code, status):
        median, _ = dusty
        server.queue(*[error_reply(code)] * 3)
        with pytest.raises(GeminiError, match=f"Gemini API error {code} {status}.*server error"):
            detector(server)(median)
        assert len(server.requests) == 3

    def test_client_error_is_not_retried(self, server, dusty):
        median, _ = dusty
        server.queue(error_reply(403, "Permission denied on this model."))
        with pytest.raises(GeminiError, match="403 PERMISSION_DENIED: Permission denied.*not allowed"):
            detector(server)(median)
        assert len(server.requests) == 1

    def test_blocked(self, server, dusty):
        server.queue(blocked_reply("PROHIBITED_CONTENT"))
        with pytest.raises(GeminiError, match="blocked the request.*PROHIBITED_CONTENT"):
            detector(server)(dusty[0])

    def test_finish_reason_without_image(self, server, dusty):
        server.queue(finish_reply("IMAGE_SAFETY", "unsafe"))
        with pytest.raises(GeminiError, match="no image \\(finish reason IMAGE_SAFETY\\)"):
            detector(server)(dusty[0])

    def test_text_only(self, server, dusty):
        server.queue(text_reply("This is a solar image; I cannot draw masks."))
        with pytest.raises(GeminiError, match="text only.*solar image"):
            detector(server)(dusty[0])

    def test_wrong_aspect_ratio(self, server, dusty):
        server.queue(image_reply(np.zeros((1024, 1024))))  # 1:1 although 5:4 was asked
        with pytest.raises(GeminiError, match="1024x1024.*5:4"):
            detector(server)(dusty[0])

    def test_tiny_answer(self, server, dusty):
        server.queue(image_reply(np.zeros((16, 20))))
        with pytest.raises(GeminiError, match="too small"):
            detector(server)(dusty[0])

    def test_undecodable_answer(self, server, dusty):
        server.queue(image_reply(b"not an image at all"))
        with pytest.raises(GeminiError, match="cannot be decoded"):
            detector(server)(dusty[0])

    @pytest.mark.parametrize("answer, message", [
        (lambda m: 1.0 - m, "inverted"),
        (lambda m: np.ones_like(m), "all-white"),
        (lambda m: np.zeros_like(m), "blank mask"),
    ])
    def test_implausible_masks(self, server, answer, message):
        median, truth = discs((128, 160), [(64, 80)], [10], [0.1])
        det = detector(server)
        sent = det.render(median)[0]
        (request,) = plan_requests(median.shape, image_size="1K")
        mask = place(truth.astype(float), request, 0.0)
        server.responder = lookup_responder({place(sent, request, 128).tobytes(): answer(mask)})
        with pytest.raises(GeminiError, match=message):
            det(median)

    def test_blank_allowed(self, server):
        median, _ = discs((128, 160), [(64, 80)], [10], [0.1])
        server.responder = lambda request: image_reply(np.zeros(request.output_shape))
        result = detector(server, allow_empty=True)(median)
        assert len(result.catalog) == 0 and not result.dq.any()

    def test_photo_instead_of_mask(self, server, dusty):
        server.responder = echo  # the model sends the input back
        with pytest.raises(GeminiError, match="not a black-and-white mask"):
            detector(server)(dusty[0])

    def test_timeout(self, server, dusty):
        server.queue(Reply(200, {}, delay=1.5))
        with pytest.raises(GeminiError, match="timed out"):
            detector(server, timeout=0.2, retries=1)(dusty[0])

    def test_unreachable(self, dusty):
        with pytest.raises(GeminiError, match="cannot reach the Gemini API"):
            GeminiDustDetector(api_key=KEY, base_url="http://127.0.0.1:9", image_size="1K", retries=1)(dusty[0])

    def test_bad_options(self):
        with pytest.raises(ValueError, match="image_size"):
            GeminiDustDetector(image_size="3K")
        with pytest.raises(ValueError, match="threshold"):
            GeminiDustDetector(threshold=1.5)
        with pytest.raises(ValueError, match="model id"):
            GeminiDustDetector(model="")


class TestKeyAndEndpoint:
    def test_missing_key(self, server, dusty):
        with pytest.raises(GeminiError, match="no Gemini API key: set GEMINI_API_KEY"):
            GeminiDustDetector(base_url=server.url, image_size="1K")(dusty[0])
        assert server.requests == []

    def test_key_from_environment_and_env_file(self, server, dusty, monkeypatch, tmp_path):
        server.responder = dark_pixel_mask(0.4)
        monkeypatch.setenv("GOOGLE_API_KEY", "google-key-1234")
        GeminiDustDetector(base_url=server.url, image_size="1K", cache=False)(dusty[0])
        monkeypatch.setenv("GEMINI_API_KEY", "gemini-key-1234")
        GeminiDustDetector(base_url=server.url, image_size="1K", cache=False)(dusty[0])
        monkeypatch.delenv("GEMINI_API_KEY")
        monkeypatch.delenv("GOOGLE_API_KEY")
        (tmp_path / ".env").write_text("GEMINI_API_KEY=dotenv-key-1234\n")
        GeminiDustDetector(base_url=server.url, image_size="1K", cache=False)(dusty[0])
        assert [r.headers["x-goog-api-key"] for r in server.requests] == [
            "google-key-1234", "gemini-key-1234", "dotenv-key-1234"]

    def test_base_url_from_sdk_variable(self, server, dusty, monkeypatch):
        """Without base_url the SDK's GOOGLE_GEMINI_BASE_URL decides where requests go."""
        server.responder = dark_pixel_mask(0.4)
        monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", server.url)
        result = GeminiDustDetector(api_key=KEY, image_size="1K", **FAST)(dusty[0])
        assert len(server.requests) == 1 and len(result.catalog) > 0

    def test_explicit_base_url_wins(self, server, dusty, monkeypatch):
        server.responder = dark_pixel_mask(0.4)
        monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", "http://127.0.0.1:9")  # nothing listens there
        detector(server)(dusty[0])
        assert len(server.requests) == 1

    def test_key_never_leaks(self, server, dusty, monkeypatch, tmp_path, caplog):
        """The key is sent in its header and appears nowhere else: logs, errors, cache, products."""
        caplog.set_level(logging.DEBUG)
        monkeypatch.setenv("GEMINI_API_KEY", KEY)
        median = dusty[0]
        server.responder = dark_pixel_mask(0.4)
        texts = []
        result = GeminiDustDetector(base_url=server.url, image_size="1K", **FAST)(median)
        texts.append(json.dumps(result.provenance, default=str))
        header = fits.Header()
        add_provenance_cards(header, result.provenance)
        texts.append(header.tostring())
        for reply in (error_reply(500), error_reply(401, f"API key not valid: {KEY}"), text_reply(KEY)):
            server.queue(*[reply] * 3)
            with pytest.raises(GeminiError) as info:
                GeminiDustDetector(base_url=server.url, image_size="1K", cache=False, **FAST)(median)
            texts.append(str(info.value))
            texts.append(repr(info.value))
        texts.extend(r.getMessage() for r in caplog.records)
        texts.extend(p.read_text() for p in (tmp_path / "cache").rglob("*") if p.is_file())
        assert any("401" in t for t in texts)  # the failures were seen
        for text in texts:
            assert KEY not in text
        assert all(r.headers["x-goog-api-key"] == KEY for r in server.requests)
        assert all(KEY not in json.dumps(r.body) for r in server.requests)
