"""Google Gemini as a generative hand: the ``gemini`` clean estimate (`inpaint_gemini`).

`inpaint_gemini` sends the median (divided by its smooth background and
stretched to 8 bits around 1.0) and the expanded dust mask, and uses the
answer only inside the mask, after undoing the stretch, fitting the blur of
the round trip and matching its photometry locally; those pixels get the
GENERATED bit in the flat.  The client, cache, rendering and tiling are those
of the eye (`aiflat_astro._gemini`); every answer is cached by content, so a
rerun with unchanged inputs makes no call and reproduces the flat bit for bit.
"""

import logging
from dataclasses import dataclass
from dataclasses import fields as dataclass_fields
from dataclasses import replace as dataclass_replace

import numpy as np
from scipy import ndimage

from ..._gemini.client import API_VERSION
from ..._gemini.prompts import INPAINT_PROMPT, PROMPT_VERSION, prompt_sha256
from ..._gemini.render import (Request, Stretch, blend_weights, decode_image, normalise, place, resample,
                               smooth_background, unplace)
from ..._gemini.settings import GeminiSettings, summarise_answers
from ...utils.exceptions import GeminiError, InputError

__all__ = ["inpaint_gemini"]  # GeminiInpaintOptions: see inpaint_gemini (the top-level names are unchanged)

log = logging.getLogger(__name__)

#: Grey level of a pixel at exactly the background (ratio 1.0) in a symmetric stretch.
_NEUTRAL = 128


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
    from .local import match_photometry

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
    background = smooth_background(np.where(finite, data, np.nan), ignore=region | ~finite,
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
        ``seed``, ``temperature`` (as for `~aiflat_astro.detection.GeminiDustDetector`; only tiles
        that contain masked pixels are sent) and the options that follow.
    background_scale : int, optional
        As for `~aiflat_astro.detection.GeminiDustDetector`.
    ring_width : int, optional
        Width (pixels) of the ring around the mask used for the stretch, the
        checks and the photometric match (default 12).
    min_half_width : float, optional
        Smallest stretch half-width ``h`` (default 0.01).
    match : {'linear', 'histogram', None}, optional
        Photometric matching of the answer to the median on the ring
        (`~aiflat_astro.flat.estimators.local.match_photometry`); None to skip.
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
    from .local import inpaint_local

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


# -------------------------------------------------------------------------------------- testing aid

def clean_image_responder(median, detection, clean, *, api_key, **options):
    """Responder answering every inpainting request with the TRUE clean image.

    A first pass against an `echo` server learns the geometry (tiles,
    padding) and the stretch that `inpaint_gemini`
    uses for ``median``; each request is then answered with ``clean`` put
    through the same stretch and geometry (and so the same 8-bit encoding
    and resizing as a model answer).  A flat made from these answers differs
    from the exact one only by what the round trip adds.

    Returns
    -------
    responder : callable
        For `~aiflat_astro._gemini.fake_server.FakeGeminiServer`.
    stretch : `~aiflat_astro._gemini.render.Stretch`
        The stretch the requests use.
    """
    from ..._gemini.fake_server import FakeGeminiServer, echo, lookup_responder

    with FakeGeminiServer(echo) as fake:
        _, info = inpaint_gemini(median, detection, api_key=api_key, base_url=fake.url, cache=False, **options)
    stretch = Stretch(**info["gemini"]["stretch"])
    background = smooth_background(median, ignore=detection.weight > 0)
    sent = stretch.forward(normalise(median, background))
    true = stretch.forward(normalise(clean, background)) / 255.0
    table = {}
    for record in info["gemini"]["requests"]:
        request = Request(tile=tuple(record["tile"]), aspect_ratio=record["aspect_ratio"],
                          pad=tuple(tuple(p) for p in record["pad"]))
        table[place(sent, request, 128).tobytes()] = place(true, request, 0.5)
    return lookup_responder(table), stretch
