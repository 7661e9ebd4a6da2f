"""Google Gemini as the eye: dust masks (the hand, inpainting, is `aiflat_astro.flat.estimators.gemini`).

The temporal median is divided by its own smooth large-scale background and
stretched with a known affine map around 1.0, so that a 1 % shadow is about
16 grey levels darker than its surroundings; the 8-bit greyscale PNG is
padded to the nearest aspect ratio the model supports (and tiled with overlap
when the frame is larger than the model's output).  The answer is resampled
exactly back onto the sensor grid: area-weighted, padding cropped off, tiles
blended.

`GeminiDustDetector` asks for a black-and-white dust mask, checks it (blank,
inverted, all-white, not a mask, wrong aspect ratio) and thresholds it to the
DUST bit.  The client, the rendering and the settings are shared with the
Gemini clean estimate (`~aiflat_astro.flat.estimators.gemini.inpaint_gemini`)
through `aiflat_astro._gemini`.

Every answer is stored in a content-addressed cache (model, prompt hash,
pixels sent, settings), so that a rerun with unchanged inputs makes no call
and reproduces the product bit for bit.  The API key is resolved by aiflat
(``GEMINI_API_KEY``, ``GOOGLE_API_KEY``, or a ``.env`` file) and is never
written, logged or cached.

Examples
--------
An offline round trip through the real SDK against a local stand-in server
that marks dark pixels as dust:

>>> import tempfile
>>> import numpy as np
>>> from aiflat_astro._gemini.fake_server import FakeGeminiServer, dark_pixel_mask
>>> y, x = np.mgrid[:128, :160]
>>> median = 1000.0 * (1 - 0.05 * (np.hypot(y - 60, x - 70) < 8))
>>> with FakeGeminiServer(dark_pixel_mask()) as server:
...     detector = GeminiDustDetector(api_key="test-key", base_url=server.url, image_size="1K",
...                                   cache_dir=tempfile.mkdtemp())
...     detection = detector(median)
>>> len(detection.catalog), round(float(detection.catalog["x_centroid"][0]))
(1, 70)
"""

import logging

import numpy as np
from astropy.table import Table
from scipy import ndimage

from .._constants import DEFAULT_GEMINI_MODEL  # re-exported: default "Nano Banana Pro" image model
from .._gemini.client import API_VERSION, default_cache_dir
from .._gemini.prompts import MASK_PROMPT, PROMPT_VERSION, prompt_sha256
from .._gemini.render import Stretch, blend_weights, decode_image, normalise, place, smooth_background, unplace
from .._gemini.settings import GeminiSettings, summarise_answers
from ..dq import DustDQ
from ..products import DustDetection, empty_catalog
from ..provenance import sha256_array
from ..utils.exceptions import GeminiError, InputError, renamed_keyword
from ._protocol import DustDetector

__all__ = ["GeminiDustDetector", "gemini_cache_dir", "DEFAULT_GEMINI_MODEL"]

log = logging.getLogger(__name__)

#: Grey level of a pixel at exactly the background (ratio 1.0) in a symmetric stretch.
_NEUTRAL = 128

#: Pixels (5-px mean) below this fraction of the 90th percentile have no light (sky beyond a limb).
_UNLIT_FRACTION = 0.05

#: More separate marks than this in one mask is noise, not dust.
_MAX_COMPONENTS = 2000


def gemini_cache_dir():
    """Return the folder of the Gemini response cache.

    ``$AIFLAT_CACHE_DIR`` when set, else the user cache folder
    (``~/.cache/aiflat_astro`` on Linux).  Delete it to forget every answer.

    Examples
    --------
    >>> gemini_cache_dir().name != ""
    True
    """
    return default_cache_dir()


def _component_catalog(dust, ratio, prob, *, f_ratio, pixel_size, method):
    """Catalog rows (standard columns) of the connected DUST components."""
    comp, n = ndimage.label(dust, structure=np.ones((3, 3), bool))
    rows = []
    if n > _MAX_COMPONENTS:
        raise GeminiError(f"the mask has {n} separate marks, more than {_MAX_COMPONENTS}: "
                          "it is noise, not dust")
    for k, sl in enumerate(ndimage.find_objects(comp), start=1):
        region = comp[sl] == k
        filled = ndimage.binary_fill_holes(region)
        yy, xx = np.nonzero(filled)
        inside = ratio[sl][region]
        inside = inside[np.isfinite(inside)]
        depth = float(np.clip(1.0 - np.percentile(inside, 5), 0.0, 1.0)) if inside.size else np.nan
        diameter = float(2.0 * np.sqrt(filled.sum() / np.pi))
        row = {"id": k, "x_centroid": float(xx.mean() + sl[1].start),
               "y_centroid": float(yy.mean() + sl[0].start), "area": float(region.sum()),
               "equivalent_diameter": diameter, "depth": depth,
               "confidence": float(np.mean(prob[sl][region])), "review": False, "method": method}
        if f_ratio and pixel_size:
            row["distance_mm"] = diameter * pixel_size * 1e-3 * f_ratio
        rows.append(row)
    return comp.astype(np.int32), _rows_to_catalog(rows, with_distance=bool(f_ratio and pixel_size))


def _rows_to_catalog(rows, *, with_distance):
    """Standard catalog (columns, units, descriptions of `empty_catalog`) built column-wise."""
    template = empty_catalog(with_distance=with_distance)
    if not rows:
        return template
    columns = []
    for name in template.colnames:
        col = template[name]
        values = np.array([row.get(name) for row in rows], dtype=col.dtype)
        columns.append(col.__class__(values, name=name, unit=col.unit, description=col.description))
    return Table(columns)


def _check_mask_answer(raw, tile_prob, index):
    """Raise `GeminiError` if a mask answer is not a plausible black-and-white dust mask."""
    where = f" (request {index + 1})" if index is not None else ""
    midtone = float(np.mean((raw > 0.25) & (raw < 0.75)))
    if midtone > 0.2:
        raise GeminiError(f"the model's answer is not a black-and-white mask{where}: "
                          f"{midtone:.0%} of it is mid-grey (it looks like a photograph, perhaps "
                          "the input returned)")
    white = float(np.mean(tile_prob >= 0.5))
    if white > 0.99:
        raise GeminiError(f"the model returned an all-white mask{where}; refusing to flag the "
                          "whole frame")
    if white > 0.5:
        raise GeminiError(f"the model's mask is {white:.0%} white{where}: it looks inverted "
                          "(dust should be white on black)")
    return white


class GeminiDustDetector(DustDetector):
    """Dust detector that asks a Gemini image model for a dust mask.

    Parameters
    ----------
    model : str, optional
        Model id; default `DEFAULT_GEMINI_MODEL` (``'gemini-3-pro-image-preview'``).
    image_size : {'1K', '2K', '4K'}, optional
        Output size asked of the model (default ``'2K'``).  Frames whose
        longer side exceeds it (1024, 2048, 4096 px) are tiled.
    client : `google.genai.Client`, optional
        A ready client (left open).  Otherwise one is created when the first
        answer is not in the cache, from the options below, and closed after.
    api_key : str, optional
        Explicit key; default ``GEMINI_API_KEY``, ``GOOGLE_API_KEY``, then the
        same names in ``env_file``.
    env_file : path-like, optional
        ``.env`` file with the key; default ``./.env`` if present.
    base_url : str, optional
        API endpoint.  Default: the SDK's (which honours ``GOOGLE_GEMINI_BASE_URL``).
    timeout : float, optional
        Seconds per request (default 300).
    retries : int, optional
        Attempts per request including the first (default 4); HTTP 408, 429,
        5xx, time-outs and connection errors are retried with exponential backoff.
    initial_delay, max_delay : float, optional
        Backoff delays in seconds (default 2 and 30).
    cache : bool, optional
        Use the response cache (default True).
    cache_dir : path-like, optional
        Cache folder; default `gemini_cache_dir`.
    threshold : float, optional
        Mask value (0..1) above which a pixel is DUST (default 0.5).
    stretch : float, optional
        Half-width of the displayed ratio range around 1.0 (default 0.08:
        0.92 → black, 1.08 → white; a 1 % shadow is 16 grey levels).
    background_scale : int, optional
        Median-filter width (pixels) of the large-scale background; default
        ``max(32, min(shape) // 5)``.  Must exceed twice the largest shadow.
    tile_size, tile_overlap : int, optional
        Tile side and overlap in sensor pixels (default: the output side and 1/8 of it).
    max_tiles : int, optional
        Refuse frames needing more requests than this (default 16).
    min_area : int, optional
        Drop marked components smaller than this many pixels (default 4).
    allow_empty : bool, optional
        Accept an all-black answer (no dust) instead of raising (default False).
    seed : int, optional
        Generation seed (default 0).
    temperature : float, optional
        Sampling temperature; default: the model's own.
    prompt : str, optional
        Replace `~aiflat_astro._gemini.prompts.MASK_PROMPT` (recorded in provenance).
    """

    name = "gemini"

    def __init__(self, *, model=DEFAULT_GEMINI_MODEL, image_size="2K", client=None, api_key=None,
                 env_file=None, base_url=None, timeout=300.0, retries=4, initial_delay=2.0,
                 max_delay=30.0, cache=True, cache_dir=None, threshold=0.5, stretch=0.08,
                 background_scale=None, tile_size=None, tile_overlap=None, max_tiles=16,
                 min_area=4, allow_empty=False, seed=0, temperature=None, prompt=None):
        self.settings = GeminiSettings(model=model, image_size=image_size, client=client, api_key=api_key,
                                       env_file=env_file, base_url=base_url, timeout=timeout, retries=retries,
                                       initial_delay=initial_delay, max_delay=max_delay, cache=cache,
                                       cache_dir=cache_dir, tile_size=tile_size, tile_overlap=tile_overlap,
                                       max_tiles=max_tiles, seed=seed, temperature=temperature)
        if not 0 < threshold < 1:
            raise InputError(f"threshold must be between 0 and 1, got {threshold}")
        if not 0 < stretch <= 1:
            raise InputError(f"stretch must be in (0, 1], got {stretch}")
        self.model = model
        self.image_size = image_size
        self.threshold = float(threshold)
        self.stretch = float(stretch)
        self.background_scale = background_scale
        self.min_area = int(min_area)
        self.allow_empty = bool(allow_empty)
        self.prompt = MASK_PROMPT if prompt is None else str(prompt)

    def __getattr__(self, name):
        # the connection and tiling options (``seed``, ``tile_size``, ...) live in ``settings``
        if name != "settings" and name in GeminiSettings.names():
            return getattr(self.settings, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __repr__(self):
        return f"GeminiDustDetector(model={self.model!r}, image_size={self.image_size!r})"

    def render(self, median, *, ignore=None, mask=None):
        """Return the 8-bit image sent to the model (unpadded), the ratio image and the stretch.

        Pixels in ``ignore``, non-finite pixels and pixels without light (the
        sky beyond a solar or lunar limb, where no dust can show) are sent as
        neutral grey, like the padding.  ``mask`` is the deprecated name of
        ``ignore``.
        """
        if mask is not None:
            ignore = renamed_keyword("GeminiDustDetector.render", "mask", "ignore", mask, given=ignore)
        return self._render(median, ignore=ignore)[:3]

    def _render(self, median, *, ignore=None):
        data = np.asarray(median, dtype=np.float64)
        given = ignore
        ignore = ~np.isfinite(data)
        if given is not None:
            ignore |= np.asarray(given, bool)
        background = smooth_background(np.where(np.isfinite(data), data, np.nan), ignore=ignore,
                                       scale=self.background_scale)
        ratio = normalise(np.where(np.isfinite(data), data, background), background)
        light = ndimage.uniform_filter(np.where(np.isfinite(data), data, 0.0), size=5)
        ignore |= light < _UNLIT_FRACTION * float(np.percentile(light, 90))
        stretch = Stretch.around_one(self.stretch)
        image = stretch.forward(ratio)
        image[ignore] = _NEUTRAL
        return image, ratio, stretch, ignore

    def __call__(self, median, *, frames=None, ignore=None, f_ratio=None, pixel_size=None, mask=None):
        if mask is not None:
            ignore = renamed_keyword("GeminiDustDetector", "mask", "ignore", mask, given=ignore)
        data = np.array(getattr(median, "data", median), dtype=np.float32)
        if data.ndim != 2:
            raise InputError(f"the median must be a 2-D image, got shape {data.shape}")
        if ignore is not None and np.shape(ignore) != data.shape:
            raise InputError(f"ignore shape {np.shape(ignore)} differs from the median's {data.shape}")
        requests = self.settings.plan(data.shape)
        image, ratio, stretch, ignored = self._render(data, ignore=ignore)
        prob_sum = np.zeros(data.shape)
        weight_sum = np.zeros(data.shape)
        answers, records = [], []
        overlap = self.settings.overlap

        with self.settings.session() as session:
            for index, request in enumerate(requests):
                answer = session.generate(images=[place(image, request, _NEUTRAL)],
                                          aspect_ratio=request.aspect_ratio,
                                          **self.settings.generation(self.prompt))
                raw = decode_image(answer.image)
                tile_prob = np.clip(unplace(raw, request), 0.0, 1.0)
                white = _check_mask_answer(raw, tile_prob, index if len(requests) > 1 else None)
                w = blend_weights(request.tile, data.shape, overlap)
                prob_sum[request.slices] += w * tile_prob
                weight_sum[request.slices] += w
                answers.append(answer)
                records.append({**request.as_dict(), **answer.record(), "white_fraction": white})
            n_calls = session.n_calls
        prob = prob_sum / np.maximum(weight_sum, 1e-12)
        dust = (prob >= self.threshold) & ~ignored
        if self.min_area > 1 and dust.any():
            comp, n = ndimage.label(dust, structure=np.ones((3, 3), bool))
            sizes = np.bincount(comp.ravel())
            dust = (sizes >= self.min_area)[comp] & dust
        if not dust.any() and not self.allow_empty:
            raise GeminiError("the model returned a blank mask (no dust marked); if the sensor "
                              "is really clean, confirm with the local detector or pass "
                              "allow_empty=True")
        labels, catalog = _component_catalog(dust, ratio, prob, f_ratio=f_ratio,
                                             pixel_size=pixel_size, method="gemini")
        dq = np.where(dust, DustDQ.DUST, 0).astype(np.uint8)
        provenance = self._provenance(data, answers, records, stretch, n_calls)
        log.info("Gemini marked %d shadow(s) in %d request(s), %d made, %d from the cache",
                 len(catalog), len(requests), n_calls, len(requests) - n_calls)
        detection = DustDetection(dq=dq, weight=dust.astype(np.float32), catalog=catalog,
                                  detector=self.name, provenance=provenance, labels=labels)
        return detection.expanded()

    def _provenance(self, data, answers, records, stretch, n_calls):
        response_sha, params = summarise_answers(answers)
        params.update({"PRMTVER": PROMPT_VERSION, "AISIZE": self.image_size,
                       "AITHRESH": self.threshold, "AISTRTCH": self.stretch})
        return {
            "detector": self.name,
            "ai_model": self.model,
            "ai_prompt": self.prompt,
            "prompt_sha256": prompt_sha256(self.prompt),
            "input_sha256": sha256_array(data),
            "response_sha256": response_sha,
            "params": params,
            "gemini": {
                "role": "mask",
                "model": self.model,
                "api_version": API_VERSION,
                "prompt_version": PROMPT_VERSION,
                "image_size": self.image_size,
                "stretch": stretch.as_dict(),
                "background_scale": self.background_scale,
                "threshold": self.threshold,
                "seed": self.seed,
                "temperature": self.temperature,
                "requests_made": n_calls,
                "requests": records,
            },
            "history": [f"dust mask by {self.model} ({len(answers)} request(s), "
                        f"{len(answers) - n_calls} from the response cache)"],
        }
