"""Google Gemini as the eye (dust masks) and as a generative hand (inpainting).

The temporal median is divided by its own smooth large-scale background and
stretched with a known affine map around 1.0, so that a 1 % shadow is about
16 grey levels darker than its surroundings; the 8-bit greyscale PNG is
padded to the nearest aspect ratio the model supports (and tiled with overlap
when the frame is larger than the model's output).  The answer is resampled
exactly back onto the sensor grid: area-weighted, padding cropped off, tiles
blended.

`GeminiDustDetector` asks for a black-and-white dust mask, checks it (blank,
inverted, all-white, not a mask, wrong aspect ratio) and thresholds it to the
DUST bit.  `inpaint_gemini` sends the image and the expanded mask and uses
the answer only inside the mask, after undoing the stretch and matching its
photometry locally; those pixels get the GENERATED bit in the flat.

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
from dataclasses import dataclass
from dataclasses import fields as dataclass_fields
from dataclasses import replace as dataclass_replace

import numpy as np
from astropy.table import Table
from scipy import ndimage

from .._constants import DEFAULT_GEMINI_MODEL  # re-exported: default "Nano Banana Pro" image model
from .._gemini.client import API_VERSION, default_cache_dir
from .._gemini.prompts import INPAINT_PROMPT, MASK_PROMPT, PROMPT_VERSION, prompt_sha256
from .._gemini.render import (Stretch, blend_weights, decode_image, normalise, place, resample, smooth_background,
                              unplace)
from .._gemini.settings import GeminiSettings, summarise_answers
from ..dq import DustDQ
from ..products import DustDetection, empty_catalog
from ..provenance import sha256_array
from ..utils.exceptions import GeminiError, InputError
from ._protocol import DustDetector

__all__ = ["GeminiDustDetector", "inpaint_gemini", "gemini_cache_dir", "DEFAULT_GEMINI_MODEL"]

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

    def render(self, median, *, mask=None):
        """Return the 8-bit image sent to the model (unpadded), the ratio image and the stretch.

        Pixels in ``mask``, non-finite pixels and pixels without light (the
        sky beyond a solar or lunar limb, where no dust can show) are sent as
        neutral grey, like the padding.
        """
        return self._render(median, mask=mask)[:3]

    def _render(self, median, *, mask=None):
        data = np.asarray(median, dtype=np.float64)
        ignore = ~np.isfinite(data)
        if mask is not None:
            ignore |= np.asarray(mask, bool)
        background = smooth_background(np.where(np.isfinite(data), data, np.nan), mask=ignore,
                                       scale=self.background_scale)
        ratio = normalise(np.where(np.isfinite(data), data, background), background)
        light = ndimage.uniform_filter(np.where(np.isfinite(data), data, 0.0), size=5)
        ignore |= light < _UNLIT_FRACTION * float(np.percentile(light, 90))
        stretch = Stretch.around_one(self.stretch)
        image = stretch.forward(ratio)
        image[ignore] = _NEUTRAL
        return image, ratio, stretch, ignore

    def __call__(self, median, *, frames=None, mask=None, f_ratio=None, pixel_size=None):
        data = np.array(getattr(median, "data", median), dtype=np.float32)
        if data.ndim != 2:
            raise InputError(f"the median must be a 2-D image, got shape {data.shape}")
        if mask is not None and np.shape(mask) != data.shape:
            raise InputError(f"mask shape {np.shape(mask)} differs from the median's {data.shape}")
        requests = self.settings.plan(data.shape)
        image, ratio, stretch, ignored = self._render(data, mask=mask)
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


def _inpaint_stretch(ratio, ring, *, min_half_width):
    """Symmetric stretch around 1.0 wide enough for the clean texture next to the dust."""
    values = ratio[ring]
    values = values[np.isfinite(values)]
    spread = float(np.percentile(np.abs(values - 1.0), 95)) if values.size else 0.0
    return Stretch.around_one(float(np.clip(2.0 * spread, min_half_width, 1.0)))


def _fit_blur(answer, bases, usable, *, sigmas=tuple(np.arange(0.0, 2.01, 0.25))):
    """Blur model (base image, extra Gaussian sigma) that best maps the input onto the answer.

    ``bases`` maps names to candidate images (the input, the input put through
    the same resampling round trip as the answer); the fit minimises the
    mean absolute difference on the ``usable`` ring pixels.
    """
    rows, cols = np.nonzero(usable)
    pad = 12
    win = (slice(max(0, rows.min() - pad), rows.max() + pad + 1),
           slice(max(0, cols.min() - pad), cols.max() + pad + 1))
    use = usable[win]
    target = answer[win][use]
    best = (np.inf, "none", 0.0)
    for name, base in bases.items():
        ref = np.where(np.isfinite(base[win]), base[win], 1.0)
        for sigma in sigmas:
            model = ndimage.gaussian_filter(ref, sigma, mode="nearest") if sigma else ref
            cost = float(np.mean(np.abs(target - model[use])))
            if cost < best[0]:
                best = (cost, name, float(sigma))
    return best[1], best[2]


def _check_agreement(answer, reference, stretch, min_correlation):
    """Raise `GeminiError` unless the answer reproduces the input where nothing was to change."""
    prefix = "the model's image differs from the input around the dust"
    if np.std(reference) > 3 * stretch.step:
        corr = float(np.corrcoef(answer, reference)[0, 1]) if np.std(answer) > 0 else 0.0
        if not corr >= min_correlation:
            raise GeminiError(f"{prefix} (correlation {corr:.2f}, minimum {min_correlation}): "
                              "it was altered or re-framed; refusing to use it")
        return {"correlation": corr}
    offset = float(np.median(answer - reference))
    if abs(offset) > 0.25 * (stretch.hi - stretch.lo):
        raise GeminiError(f"{prefix} (brightness offset {offset:+.4f} of the background): "
                          "it was altered; refusing to use it")
    return {"offset": offset}


def _match(answer, reference, usable, stretch, method):
    """Photometric map of an answer onto the input, learnt on the ``usable`` pixels."""
    from ..flat.estimators.local import match_photometry

    est, ref = answer[usable], reference[usable]
    if np.std(ref) > 2 * stretch.step and np.std(est) > 2 * stretch.step:
        return match_photometry(np.where(np.isfinite(answer), answer, 1.0),
                                np.where(usable, reference, 1.0), (~usable).astype(np.uint8),
                                method=method)
    # a featureless surrounding: only an offset can be measured
    return answer + float(np.median(ref - est))


class _Blend:
    """Accumulates per-request arrays on the sensor grid with the tile blending weights."""

    def __init__(self, shape, overlap):
        self.shape = shape
        self.overlap = overlap
        self.weight = np.zeros(shape)
        self.sums = {}

    def add(self, request, **arrays):
        w = blend_weights(request.tile, self.shape, self.overlap)
        self.weight[request.slices] += w
        for name, value in arrays.items():
            self.sums.setdefault(name, np.zeros(self.shape))[request.slices] += w * value

    @property
    def covered(self):
        return self.weight > 0

    def mean(self, name, fill=np.nan):
        out = np.full(self.shape, fill, dtype=float)
        covered = self.covered
        out[covered] = self.sums[name][covered] / self.weight[covered]
        return out


def _ask_for_inpainting(session, requests, image, mask_image, ratio, *, shape, overlap, deblur,
                        **generate):
    """Send every request; return the blended answers, clipped pixels and the provenance records."""
    blend = _Blend(shape, overlap)
    clipped = np.zeros(shape, bool)
    answers, records = [], []
    for request in requests:
        answer = session.generate(images=[place(image, request, _NEUTRAL),
                                          place(mask_image, request, 0)],
                                  aspect_ratio=request.aspect_ratio, **generate)
        raw = decode_image(answer.image)
        arrays = {"answer": unplace(raw, request)}
        if deblur:  # the input put through the same resampling round trip as the answer
            arrays["roundtrip"] = unplace(resample(place(ratio, request, 1.0), raw.shape), request)
        blend.add(request, **arrays)
        saturated = (raw <= 0.5 / 255) | (raw >= 254.5 / 255)
        clipped[request.slices] |= unplace(saturated.astype(float), request) > 0
        answers.append(answer)
        records.append({**request.as_dict(), **answer.record()})
    return blend, clipped, answers, records


@dataclass(frozen=True)
class GeminiInpaintOptions:
    """The round-trip options of `inpaint_gemini` (see there): ``background_scale``,
    ``ring_width`` (12), ``min_half_width`` (0.01), ``match`` ('linear'),
    ``min_correlation`` (0.5), ``deblur`` (True) and ``prompt``
    (`~aiflat_astro._gemini.prompts.INPAINT_PROMPT`)."""

    background_scale: int = None
    ring_width: int = 12
    min_half_width: float = 0.01
    match: str = "linear"
    min_correlation: float = 0.5
    deblur: bool = True
    prompt: str = None

    @property
    def prompt_text(self):
        return INPAINT_PROMPT if self.prompt is None else str(self.prompt)


def _split_options(settings, options, keywords):
    """``(GeminiSettings, GeminiInpaintOptions)`` from the objects and the one-by-one keywords."""
    round_trip = {f.name for f in dataclass_fields(GeminiInpaintOptions)}
    unknown = set(keywords) - round_trip - set(GeminiSettings.names())
    if unknown:
        raise TypeError(f"inpaint_gemini() got unexpected keyword argument(s): {', '.join(sorted(unknown))}")
    mine = {k: v for k, v in keywords.items() if k in round_trip}
    theirs = {k: v for k, v in keywords.items() if k not in round_trip}
    settings = GeminiSettings(**theirs) if settings is None else dataclass_replace(settings, **theirs)
    options = GeminiInpaintOptions(**mine) if options is None else dataclass_replace(options, **mine)
    return settings, options


@dataclass
class _Sent:
    """What is sent: the median as a ratio to its background, stretched to 8 bits, and the ring."""

    data: np.ndarray
    region: np.ndarray
    ring: np.ndarray
    background: np.ndarray
    ratio: np.ndarray
    stretch: Stretch
    image: np.ndarray


def _prepare(data, region, options):
    finite = np.isfinite(data)
    distance = ndimage.distance_transform_edt(~region)
    ring = (distance > 0) & (distance <= options.ring_width) & finite
    background = smooth_background(np.where(finite, data, np.nan), mask=region | ~finite,
                                   scale=options.background_scale)
    ratio = normalise(np.where(finite, data, background), background)
    stretch = _inpaint_stretch(ratio, ring, min_half_width=options.min_half_width)
    return _Sent(data, region, ring, background, ratio, stretch, stretch.forward(ratio))


def _deblurred_reference(sent, blend, answer_ratio, usable, deblur):
    """The input blurred like the answer: ``(reference, blur base name, sigma)``.

    The model (and the resampling) blurs a little: that blur is estimated where
    the answer must equal the input, so that like is compared with like and the
    median's own sharp texture kept (``flat = B(ratio) / answer``).
    """
    if not deblur:
        return sent.ratio, "none", 0.0
    roundtrip = np.where(blend.covered, blend.mean("roundtrip"), sent.ratio)
    blur, sigma = _fit_blur(answer_ratio, {"none": sent.ratio, "resample": roundtrip}, usable)
    base = roundtrip if blur == "resample" else sent.ratio
    return (ndimage.gaussian_filter(base, sigma, mode="nearest") if sigma else base), blur, sigma


def _matched_ratio(answer_ratio, blurred, usable, sent, requests, overlap, match):
    """One photometric map per request (a model may change the brightness or contrast of its
    whole answer), learnt on the ring pixels of that tile and blended like the answers."""
    if not match:
        return answer_ratio
    matched = _Blend(sent.data.shape, overlap)
    for request in requests:
        sl = request.slices
        if usable[sl].sum() < 10:
            raise GeminiError(f"too few usable pixels around the dust in tile {request.tile} "
                              "to match the model's photometry")
        matched.add(request, value=_match(answer_ratio[sl], blurred[sl], usable[sl], sent.stretch, match))
    return matched.mean("value")


def _inpaint_info(info, settings, options, sent, answers, records, n_calls, checks):
    prompt = options.prompt_text
    response_sha, params = summarise_answers(answers)
    params.update({"PRMTVER": PROMPT_VERSION, "AISIZE": settings.image_size,
                   "AIHALFW": round(sent.stretch.hi - 1.0, 6)})
    info["params"] = params
    info["provenance"] = {"ai_model": settings.model, "ai_prompt": prompt,
                          "prompt_sha256": prompt_sha256(prompt), "response_sha256": response_sha}
    info["gemini"] = {
        "role": "inpaint", "model": settings.model, "api_version": API_VERSION,
        "prompt_version": PROMPT_VERSION, "image_size": settings.image_size,
        "stretch": sent.stretch.as_dict(), "grey_level_step": sent.stretch.step,
        "background_scale": options.background_scale, "ring_width": options.ring_width,
        "match": options.match, **checks, "seed": settings.seed, "temperature": settings.temperature,
        "requests_made": n_calls, "requests": records,
    }
    return info


def inpaint_gemini(median, detection, *, frames=None, settings=None, options=None, **keywords):
    """Clean estimate inside the dust mask from a Gemini inpainting.

    The round trip is designed so that the 8-bit encoding does not limit the
    flat (see :ref:`gemini`):

    1. the median is divided by a smooth background fitted *outside* the
       mask, and the ratio ``r`` is mapped to 8 bits with a symmetric affine
       stretch ``[1 - h, 1 + h]`` just wide enough for the texture next to
       the dust (``h`` = twice the 95th percentile of ``|r - 1|`` in a ring
       around the mask, at least ``min_half_width``): one grey level is
       ``2 h / 255`` in ``r`` (0.008 % for ``h = 0.01``);
    2. the answer is resampled onto the sensor grid (area average), the
       stretch is undone exactly and the photometry matched to the input on
       the ring, one linear map per request;
    3. the blur of the round trip is fitted on the ring and the median's own
       texture kept: ``flat = B(r) / answer``;
    4. where the answer is clipped (stars, umbrae, sky) the transmission is
       interpolated from the good pixels around.

    Parameters
    ----------
    median : `numpy.ndarray`
        2-D temporal median.
    detection : `~aiflat_astro.detection.DustDetection`
        Its ``weight > 0`` is the region to reconstruct (sent as the mask).
    frames : ignored
        Accepted for the clean-estimate protocol.
    settings : `~aiflat_astro._gemini.settings.GeminiSettings`, optional
        Connection, cache and tiling options, all at once.
    options : `GeminiInpaintOptions`, optional
        The round-trip options below, all at once.
    **keywords
        Either of them one by one, as before: ``model``, ``image_size``,
        ``client``, ``api_key``, ``env_file``, ``base_url``, ``timeout``,
        ``retries``, ``initial_delay``, ``max_delay``, ``cache``,
        ``cache_dir``, ``tile_size``, ``tile_overlap``, ``max_tiles``,
        ``seed``, ``temperature`` (as for `GeminiDustDetector`; only tiles
        that contain masked pixels are sent) and the options that follow.
    background_scale : int, optional
        As for `GeminiDustDetector`.
    ring_width : int, optional
        Width (pixels) of the ring around the mask used for the stretch, the
        checks and the photometric match (default 12).
    min_half_width : float, optional
        Smallest stretch half-width ``h`` (default 0.01).
    match : {'linear', 'histogram', None}, optional
        Photometric matching of the answer to the median on the ring
        (`~aiflat_astro.inpaint.match_photometry`); None to skip.
    min_correlation : float, optional
        Smallest accepted correlation between the answer and the input on
        the ring (default 0.5); below it (or, on a featureless ring, with an
        offset of more than a quarter of the stretch) the model has altered
        or re-framed the image and `GeminiError` is raised.
    deblur : bool, optional
        Fit the blur of the round trip and compare like with like (default True).
    prompt : str, optional
        Replace `~aiflat_astro._gemini.prompts.INPAINT_PROMPT`.

    Returns
    -------
    clean : `numpy.ndarray`
        float32 clean estimate, equal to ``median`` where the weight is 0.
    info : dict
        ``generated`` (bool array: the weight > 0 pixels), ``provenance``
        (AI model, prompt, hashes), ``params`` and ``gemini`` (per-request
        geometry, response ids, token usage, stretch, checks).
    """
    settings, options = _split_options(settings, options, keywords)
    data = np.array(getattr(median, "data", median), dtype=np.float64)
    weight = np.asarray(getattr(detection, "weight", detection), dtype=np.float32)
    if weight.shape != data.shape:
        raise InputError(f"the mask shape {weight.shape} differs from the median's {data.shape}")
    region = weight > 0
    info = {"method": "gemini", "generated": region.copy(), "params": {}, "provenance": {}}
    if not region.any():
        log.info("empty dust mask: nothing to inpaint, no Gemini request made")
        return data.astype(np.float32), info
    sent = _prepare(data, region, options)
    requests = [r for r in settings.plan(data.shape) if region[r.slices].any()]
    with settings.session() as session:
        blend, clipped_answer, answers, records = _ask_for_inpainting(
            session, requests, sent.image, np.where(region, 255, 0).astype(np.uint8), sent.ratio,
            shape=data.shape, overlap=settings.overlap, deblur=options.deblur,
            **settings.generation(options.prompt_text))
        n_calls = session.n_calls
    answer_ratio = sent.stretch.inverse(blend.mean("answer"))
    # Ring pixels clipped in either 8-bit image carry no photometric information.
    usable = sent.ring & blend.covered & (sent.image > 0) & (sent.image < 255) & ~clipped_answer
    if usable.sum() < 10:
        raise GeminiError("too few usable pixels around the dust to check and match the "
                          "model's answer")
    agreement = _check_agreement(answer_ratio[usable], sent.ratio[usable], sent.stretch, options.min_correlation)
    blurred, blur, sigma = _deblurred_reference(sent, blend, answer_ratio, usable, options.deblur)
    clean_ratio = _matched_ratio(answer_ratio, blurred, usable, sent, requests, settings.overlap, options.match)
    with np.errstate(divide="ignore", invalid="ignore"):
        clean = np.where(region, clean_ratio * sent.background * (sent.ratio / blurred), data)
    clean, n_clipped = _fill_clipped(clean, data, region, clipped_answer, blur, sigma)
    checks = {"agreement": agreement, "clipped_pixels": n_clipped, "blur": {"base": blur, "sigma": sigma}}
    _inpaint_info(info, settings, options, sent, answers, records, n_calls, checks)
    log.info("Gemini inpainted %d px in %d request(s) (%d made); stretch half-width %.4f",
             int(region.sum()), len(requests), n_calls, sent.stretch.hi - 1.0)
    return clean, info


def _fill_clipped(clean, data, region, clipped_answer, blur, sigma):
    """Replace the clean estimate where the answer was clipped at black or white.

    There (a star, a sunspot umbra, the sky beyond the limb) the answer's
    value is unknown: the transmission ``median / clean`` is interpolated from
    the good pixels around (the flat is smooth; the scene need not be) and
    the clean value follows from it.  The blur spreads a clipped value over
    its neighbours, so the clipped area is widened accordingly.
    """
    from ..flat.estimators.local import inpaint_local

    reach = int(np.ceil(2 * sigma)) + (2 if blur == "resample" else 1)
    if clipped_answer.any():
        clipped_answer = ndimage.binary_dilation(clipped_answer, iterations=reach)
    clipped = region & (clipped_answer | ~np.isfinite(clean) | (clean <= 0))
    n_clipped = int(clipped.sum())
    if n_clipped:
        if n_clipped == int(region.sum()):
            raise GeminiError("the model's answer is black or white everywhere inside the dust "
                              "mask")
        with np.errstate(divide="ignore", invalid="ignore"):
            transmission = np.where(region & ~clipped, data / clean, 1.0)
        transmission = inpaint_local(transmission, clipped, method="harmonic", normalize=False)
        clean[clipped] = data[clipped] / np.clip(transmission[clipped], 1e-3, None)
    clean = clean.astype(np.float32)
    if not np.all(np.isfinite(clean[region])):
        raise GeminiError("the model's answer does not cover the whole dust mask")
    return clean, n_clipped
