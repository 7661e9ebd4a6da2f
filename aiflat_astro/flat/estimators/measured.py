"""Dust transmission measured from the drift of the scene across the sensor.

Dust on the sensor window stays fixed to the pixels while the scene drifts
(mount tracking, dither, seeing).  Every part of the scene that passes under
a shadow was also recorded, clean, by pixels outside it: the transmission of
the shadow can therefore be *measured* instead of interpolated.

The method is the "two-median" form of the Kuhn, Lin & Loranz (1991) self
flat, restricted to boxes around the shadows so that it is cheap and runs in
bounded memory:

1. register the frames (`aiflat_astro.registration.register_frames`, with the
   dust masked) to get the shift ``s_k`` of the scene in frame ``k``;
2. stream the frames once, in order, keeping for each shadow only a box
   ``B`` around it (sensor coordinates) and the matching scene box (the
   frame resampled at ``u + s_k``), for a bounded number of frames spread
   over the video;
3. scene ``O(u)`` = median over the frames in which the scene point ``u``
   fell *outside* the (dilated) dust mask;
4. per frame and box, a level ``c_k`` = median of ``frame_k / O(x - s_k)``
   over the clean pixels of the box (transparency, exposure, vignetting);
5. transmission ``T(x)`` = median over frames of
   ``frame_k(x) / (c_k O(x - s_k))``, with a robust plane fitted to the clean
   pixels of the box divided out (the vignetting gradient across the box);
6. a scene point is usable only if at least ``n_min`` frames saw it clean
   and a shadow pixel only if at least ``n_min`` frames see a usable scene
   point: this *coverage test* decides per shadow whether the drift
   constrains it.  Shadows that fail it are filled by local interpolation
   (`aiflat_astro.flat.estimators.local.inpaint_local`), and the catalog says so.

The transmission is exactly what the flat needs inside the shadow, and 1.0
outside, so nothing outside the dust mask is touched.
"""

import logging
from dataclasses import InitVar, dataclass

import numpy as np
from scipy import ndimage as ndi

from ...io.frames import opened_frames
from ...registration import register_frames
from ...utils._atomic import parse_size
from ...utils.exceptions import DetectorFallbackWarning, InputError, renamed_keyword, warn_user
from ._measured_catalog import MeasuredTransmission, _shadow_table, add_flat_method, write_measured_catalog
from ._measured_regions import _exclusion_maps, _memory_plan, _stream_boxes
from ._measured_solve import _default_min_frames, _solve_batch
from ._measured_survey import _survey_static_dust
from .local import _local_inpainter

__all__ = [
    "MeasuredTransmission",
    "measure_transmission",
    "inpaint_measured",
    "add_flat_method",
    "write_measured_catalog",
    "MeasureOptions",
]

log = logging.getLogger(__name__)


def _checked_inputs(dust_mask, weight, labels):
    """`measure_transmission`'s masks as arrays of the same shape."""
    dust_mask = np.asarray(dust_mask, dtype=bool)
    if dust_mask.ndim != 2:
        raise InputError(f"dust_mask must be 2-D, got shape {dust_mask.shape}")
    shape = dust_mask.shape
    weight = dust_mask.astype(np.float32) if weight is None else np.asarray(weight, np.float32)
    if weight.shape != shape:
        raise InputError(f"weight shape {weight.shape} differs from the dust mask {shape}")
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != shape:
            raise InputError(f"labels shape {labels.shape} differs from the dust mask {shape}")
    return dust_mask, weight, labels


def measure_transmission(frames, dust_mask, *, weight=None, labels=None, ignore=None,
                         drift=None, options=None, invalid=None, **option_values):
    """Measure the transmission of the dust shadows from the drift of a video.

    Parameters
    ----------
    frames : str, path, list, `~numpy.ndarray` or frame source
        The video: anything `aiflat_astro.io.open_frames` accepts.  Frames
        are streamed; only small boxes around the shadows are kept.
    dust_mask : `~numpy.ndarray` of bool
        (H, W) dust pixels.
    weight : `~numpy.ndarray`, optional
        (H, W) soft weight of the flat; every pixel with weight > 0 gets a
        measured value.  Default: ``dust_mask``.
    labels : `~numpy.ndarray`, optional
        (H, W) int map of catalog ids on the dust pixels
        (`~aiflat_astro.detection.DustDetection.labels`).  Default: connected
        components of ``dust_mask`` (ids reported negative).
    ignore : `~numpy.ndarray` of bool, optional
        (H, W) defective pixels (hot, cold, saturated): never used as clean
        samples.  Non-finite frame values are always left out.
    drift : `~aiflat_astro.registration.DriftPath`, optional
        A registration of this video; computed when not given.
    options : `MeasureOptions`, optional
        The measurement's options (see there); default ``MeasureOptions()``.
    **option_values
        Any field of `MeasureOptions` by name (``max_frames=200``,
        ``estimator='median'``...), replacing that of ``options``.
        ``exclude=`` is the deprecated name of ``margin=``.
    invalid : `~numpy.ndarray` of bool, optional
        Deprecated name of ``ignore``.

    Returns
    -------
    `MeasuredTransmission`

    Raises
    ------
    InputError
        Bad shapes or options, or an unreadable video.
    TypeError
        A keyword that is not a field of `MeasureOptions`.

    Examples
    --------
    >>> import numpy as np
    >>> from aiflat_astro.flat.estimators.measured import MeasureOptions
    >>> opts = MeasureOptions(max_frames=100, estimator="median")
    >>> (opts.max_frames, opts.n_iter)
    (100, 2)
    """
    if invalid is not None:
        ignore = renamed_keyword("measure_transmission", "invalid", "ignore", invalid, given=ignore)
    if "exclude" in option_values:
        exclude = option_values.pop("exclude")
        option_values["margin"] = renamed_keyword("measure_transmission", "exclude", "margin", exclude,
                                                  given=option_values.get("margin"))
    opts = MeasureOptions.from_keywords(options, option_values)
    dust_mask, weight, labels = _checked_inputs(dust_mask, weight, labels)
    maps = _exclusion_maps(dust_mask, weight, labels, ignore, opts)
    with opened_frames(frames) as source:
        if tuple(source.frame_shape)[:2] != dust_mask.shape:
            raise InputError(f"frames of shape {tuple(source.frame_shape)[:2]} do not match "
                             f"the dust mask {dust_mask.shape}")
        if drift is None:
            drift = _register_for_measurement(source, dust_mask, opts)
        static_features = _survey_static_dust(source, drift, maps, opts)
        result, rows, n, n_min = _measure_regions(source, drift, maps, opts)
    shadows = _shadow_table(rows)
    shadows.meta["drift"] = drift.summary()
    major, minor, _ = drift.extent
    log.info("measured transmission: %d of %d shadows measured (drift %.1f x %.1f px)",
             int(np.sum(shadows["method"] == "measured")) if rows else 0, len(rows), major, minor)
    return MeasuredTransmission(transmission=result[0], uncertainty=result[1],
                                measured=result[2], shadows=shadows, drift=drift,
                                params=opts.params(n, n_min, static_features))


#: The default of `MeasureOptions.margin` (px).
_DEFAULT_MARGIN = 3.0


@dataclass(frozen=True)
class MeasureOptions:
    """The options of `measure_transmission`, checked when made.

    Parameters
    ----------
    step, max_frames : int, optional
        Use every ``step``-th frame, at most ``max_frames`` frames spread over
        the video (default 400; the memory limit may lower it).
    min_frames : int, optional
        ``n_min``: frames that must see a scene point clean, and usable frames
        a shadow pixel needs.  Default ``max(5, n_used // 10)`` on 13 frames or
        more; ``max(3, int(0.4 n_used))`` on smaller (KLL-class) sets.
    min_coverage : float, optional
        Fraction of a shadow's pixels that must reach ``n_min`` for the drift
        to count as constraining it.  Default 0.98 (the few missing pixels
        are interpolated from their measured neighbours).
    min_signal : float, optional
        Scene points darker than this fraction of the box level (sky beyond
        the limb) are not used.  Default 0.1.
    n_iter : int, optional
        1: plain two-median estimate; 2 (default): the scene is re-estimated
        from every frame with the first transmission divided out.
    surface_degree : int, optional
        Degree of the robust polynomial fitted to the clean pixels of each
        box and divided out (vignetting and level across the box; the dust
        flat carries only the dust).  Default 2.
    estimator : {'mean', 'median'}, optional
        How frames are combined, for the scene and the transmission:
        ``'mean'`` (default) a mean clipped at 3 robust sigmas around the
        median, ``'median'`` the plain median (the classic two-median method;
        1.25x noisier).
    radial : {'auto', True, False}, optional
        Shadows are round pupil footprints: ``'auto'`` (default) replaces a
        shadow's measured values by their radial profile about a fitted
        centre (averaging the noise over rings) when the measured values are
        consistent with it (reduced chi^2 <= ``chi2_max``); True always,
        False never.  The ``profile`` column says which was used.
    chi2_max : float, optional
        Roundness test of ``radial='auto'``.  Default 1.5.
    margin : float, optional
        The distance (px) around the dust kept out of the clean samples;
        grows as ``max(margin, 0.1 * diameter)`` for large shadows.  Default 3.
    ring_gap : float, optional
        The level of each box (per frame, and the polynomial surface) is set
        by pixels farther than ``ring_gap * diameter`` from the shadow, to
        miss its bright Fresnel rim.  Default 0.35.
    survey : bool, optional
        Survey the whole frame (coarsely, on up to 40 frames) for static
        dark features outside the dust mask -- dust the detector missed --
        and keep them out of the clean samples of the scene.  Default `True`.
    mem_limit : str or int, optional
        Memory for the boxes (e.g. ``'256MB'``).  When the boxes of all
        shadows with at least 20 frames (or all frames) do not fit (large
        offsets make large scene boxes), the frames are read once per batch
        of shadows that fits; beyond that fewer frames are used.  Default
        ``'1GB'``.
    registration : dict, optional
        Options for `~aiflat_astro.registration.register_frames` (default here:
        ``max_size=512``, a central region of at most 512 px a side).
    progress_bar : bool, optional
        Show tqdm progress bars.  Default `False`.
    exclude : float, optional
        Deprecated name of ``margin`` (an init-only argument: it sets
        ``margin`` with a warning; there is no ``exclude`` attribute).

    Raises
    ------
    InputError
        An option out of its range.

    Examples
    --------
    >>> MeasureOptions(min_coverage=0.9).level_gap(40.0)
    14.0
    """

    step: int = 1
    max_frames: int = 400
    min_frames: int = None
    min_coverage: float = 0.98
    min_signal: float = 0.1
    n_iter: int = 2
    surface_degree: int = 2
    estimator: str = "mean"
    radial: object = "auto"
    chi2_max: float = 1.5
    margin: float = _DEFAULT_MARGIN
    ring_gap: float = 0.35
    survey: bool = True
    mem_limit: object = "1GB"
    registration: dict = None
    progress_bar: bool = False
    exclude: InitVar[float] = None

    def __post_init__(self, exclude):
        if exclude is not None:
            given = None if self.margin == _DEFAULT_MARGIN else self.margin
            object.__setattr__(self, "margin", renamed_keyword("MeasureOptions", "exclude", "margin", exclude,
                                                               given=given, stacklevel=2))
        if self.estimator not in ("mean", "median"):
            raise InputError(f"estimator must be 'mean' or 'median', got {self.estimator!r}")
        if self.radial not in ("auto", True, False):
            raise InputError(f"radial must be 'auto', True or False, got {self.radial!r}")
        if not 0 < float(self.min_coverage) <= 1:
            raise InputError(f"min_coverage must be in (0, 1], got {self.min_coverage}")
        parse_size(self.mem_limit)  # a bad limit fails before the work

    @classmethod
    def from_keywords(cls, options, values):
        """``options`` (default: the defaults) with the fields named in ``values`` replaced."""
        from dataclasses import fields, replace

        unknown = sorted(set(values) - {f.name for f in fields(cls)})
        if unknown:
            raise TypeError(f"measure_transmission() got unexpected keyword argument(s) "
                            f"{', '.join(unknown)}")
        options = cls() if options is None else options
        if not isinstance(options, cls):
            raise InputError(f"options must be a MeasureOptions, got {type(options).__name__}")
        return replace(options, **values) if values else options

    def exclude_extra(self, diameter):
        """Dust dilation (px) kept out of the clean samples around a shadow of ``diameter``."""
        return max(float(self.margin), 0.1 * diameter)

    def level_gap(self, diameter):
        """Distance (px) beyond which a box's level is measured: past the bright Fresnel rim."""
        return max(float(self.margin), float(self.ring_gap) * diameter)

    def params(self, n_used, n_min, static_features):
        """`MeasuredTransmission.params`."""
        return {
            "method": "two-median (registered scene median, per-frame box level, robust plane)",
            "n_frames_used": int(n_used), "min_frames": int(n_min),
            "min_coverage": float(self.min_coverage), "min_signal": float(self.min_signal),
            "n_iter": int(self.n_iter), "estimator": self.estimator, "radial": self.radial,
            "chi2_max": float(self.chi2_max), "surface_degree": int(self.surface_degree),
            "exclude_px": float(self.margin), "ring_gap": float(self.ring_gap),
            "survey": bool(self.survey), "static_features": static_features,
            "mem_limit": str(self.mem_limit),
        }


_REGISTRATION_SIZE = 512   # px a side of the central region registered (register_frames' max_size)


def _register_for_measurement(source, dust_mask, opts):
    """`register_frames` of the video with the dust (dilated by one pixel) masked."""
    reg = dict(opts.registration or {})
    reg.setdefault("step", opts.step)
    reg.setdefault("max_frames", opts.max_frames)
    reg.setdefault("progress_bar", opts.progress_bar)
    # a central 512 px region: the shifts as precise as on 1024 px (docs/performance.rst)
    reg.setdefault("max_size", _REGISTRATION_SIZE)
    # the dust itself, not the wider exclusion zone: masking more costs signal
    reg_mask = ndi.binary_dilation(dust_mask, iterations=1) if dust_mask.any() else None
    return register_frames(source, dust_mask=reg_mask, **reg)


def _measure_regions(source, drift, maps, opts):
    """Stream the boxes and solve every region, batch by batch within the memory limit.

    Returns ``((transmission, uncertainty, measured), rows, n_used, n_min)``.
    """
    shifts_all = np.asarray(drift.shifts)
    idx = np.asarray(drift.frame_index)
    batches, pick = _memory_plan(maps.regions, shifts_all, idx.size, parse_size(opts.mem_limit),
                                 opts.mem_limit)
    use_idx, shifts = idx[pick], shifts_all[pick]
    n = use_idx.size
    n_min = int(opts.min_frames) if opts.min_frames is not None else _default_min_frames(n)
    if n_min < 1:
        raise InputError(f"min_frames must be >= 1, got {opts.min_frames}")
    major, minor, _ = drift.extent
    shape = maps.excl.shape
    result = (np.ones(shape, np.float32), np.zeros(shape, np.float32), np.zeros(shape, bool))
    rows = []
    for batch in batches:
        _stream_boxes(source, batch, use_idx, shifts, maps.excl, maps.near, maps.excl_any,
                      opts.progress_bar)
        rows += _solve_batch(batch, shifts, result, n_min=n_min, opts=opts,
                             extent=(major, minor))
    return result, rows, n, n_min


# ---------------------------------------------------------------------------
# the 'measured' clean-estimate method for make_flat
# ---------------------------------------------------------------------------
def _local_transmission(median, detection, select):
    """Transmission of the selected pixels as ``inpaint='local'`` would make it."""
    from dataclasses import replace

    from .._transmission import dust_flat_from_clean

    weight = np.where(select, detection.weight, 0).astype(np.float32)
    sub = replace(detection, weight=weight)
    median = np.asarray(median, dtype=np.float32)
    clean, info = _local_inpainter(median, sub)
    flat = dust_flat_from_clean(median, sub, np.where(weight > 0, clean, median), info)[0]
    with np.errstate(divide="ignore", invalid="ignore"):
        trans = (flat.astype(np.float64) - (1.0 - weight)) / weight
    return np.where(select & (weight > 0), trans, 1.0)


def inpaint_measured(median, detection, *, frames=None, drift=None, drift_plot=None,
                     overwrite=False, **options):
    """Clean estimate of the median inside the dust, measured from the drift.

    The ``'measured'`` method of `~aiflat_astro.flat.make_flat` (registered
    in `aiflat_astro.flat.estimators.local`).  `measure_transmission` measures the shadows
    the drift constrains; the others, and every shadow of a video without
    usable drift, get exactly what ``inpaint='local'`` would give them.

    Parameters
    ----------
    median : `~numpy.ndarray` or `~astropy.nddata.CCDData`
        2-D temporal median of ``frames``.
    detection : `~aiflat_astro.detection.DustDetection`
        The dust (DUST bits, soft weight, labels, catalog).
    frames : optional
        The video the median was made from (required): anything
        `~aiflat_astro.io.open_frames` accepts, or an open frame source.
    drift : `~aiflat_astro.registration.DriftPath`, optional
        A registration of ``frames``; computed when not given.
    drift_plot : str or path-like, optional
        Write a PNG plot of the drift path there (`~aiflat_astro.registration.plot_drift`,
        with the largest shadow diameter for comparison).
    overwrite : bool, optional
        Replace an existing ``drift_plot``.  Default `False`.
    **options
        Passed to `measure_transmission` (``max_frames``, ``min_frames``,
        ``min_coverage``, ``estimator``, ``mem_limit``, ``progress_bar``...).

    Returns
    -------
    clean : `~numpy.ndarray`
        float32 ``median / transmission`` inside the weight.
    info : dict
        ``method`` ``'measured'``; ``profile`` ``'none'`` (the measured
        ratio carries the true texture; the local method's profile when no
        shadow could be measured); ``shadows`` (per-shadow decision:
        ``flat_method`` ``'measured'`` or ``'local'``, coverage, drift,
        standard error); ``drift`` (the drift path, every frame's shift);
        ``params``; ``n_measured``, ``n_local``; ``fallback`` (why, when some
        or all shadows were interpolated).

    Raises
    ------
    InputError
        Without ``frames``, or if they do not match the median.

    Warns
    -----
    DetectorFallbackWarning
        When the drift does not constrain some (or any) of the shadows and
        local interpolation is used for them.
    """
    if frames is None:
        raise InputError("inpaint='measured' needs the video the median was made from "
                         "(frames=..., or --video VIDEO.ser on the command line)")
    median = np.asarray(getattr(median, "data", median), dtype=np.float32)
    weight = np.asarray(detection.weight, dtype=np.float32)
    if median.shape != weight.shape:
        raise InputError(f"median shape {median.shape} does not match the dust mask {weight.shape}")
    region = weight > 0
    if not region.any():
        return median.copy(), {"method": "measured", "profile": "none", "shadows": [],
                               "n_measured": 0, "n_local": 0, "generated": False}

    mt = _measure_for_flat(frames, detection, weight, drift, drift_plot, overwrite, options)
    by_id = mt.methods_by_id()
    n_meas = sum(m == "measured" for m in by_id.values())
    fallback = None
    if (region & ~mt.measured).any():
        fallback = _fallback_note(mt, by_id)
        warn_user(fallback, DetectorFallbackWarning)
    clean, profile = _clean_estimate(median, detection, region, mt)
    return clean, _inpaint_info(mt, n_meas, len(by_id) - n_meas, fallback, profile)


def _measure_for_flat(frames, detection, weight, drift, drift_plot, overwrite, options):
    """`measure_transmission` of the detection's shadows (defects left out), the drift plotted."""
    from ...dq import DustDQ

    if drift_plot is not None:
        from ...utils._atomic import check_output_path

        check_output_path(drift_plot, overwrite=overwrite)  # fail before the work
    defects = (np.asarray(detection.dq) & (DustDQ.HOT | DustDQ.COLD | DustDQ.SATURATED)) > 0
    mt = measure_transmission(frames, detection.dust_mask, weight=weight, labels=detection.labels,
                              ignore=defects if defects.any() else None, drift=drift, **options)
    if drift_plot is not None:
        from ...registration import plot_drift

        plot_drift(mt.drift, drift_plot, diameters=list(mt.shadows["diameter"]),
                   overwrite=overwrite)
    return mt


def _fallback_note(mt, by_id):
    """Why some (or all) shadows were interpolated locally: the drift did not uncover them."""
    major, minor, _ = mt.drift.extent
    n_total = len(by_id)
    local_ids = sorted(i for i, m in by_id.items() if m != "measured")
    if mt.n_measured == 0:
        return (f"no usable drift: the scene moved {major:.1f} x {minor:.1f} px "
                f"(principal axes), not enough to uncover any of the {n_total} shadows; "
                "local interpolation used for all of them")
    return (f"the drift ({major:.1f} x {minor:.1f} px) does not uncover {len(local_ids)} of "
            f"{n_total} shadows (ids {', '.join(map(str, local_ids))}); "
            "local interpolation used for them")


def _clean_estimate(median, detection, region, mt):
    """``median / T`` inside the weight, ``T`` measured or local: ``(clean, profile)``.

    Without any measured shadow, exactly what ``inpaint='local'`` gives (same
    clean estimate, same flat profile).
    """
    if mt.n_measured == 0:
        clean, local_info = _local_inpainter(median, detection)
        return clean, local_info.get("profile", "radial")
    measured = mt.measured & region
    local = region & ~measured
    trans = np.where(measured, mt.transmission.astype(np.float64), 1.0)
    if local.any():
        trans = np.where(local, _local_transmission(median, detection, local), trans)
    with np.errstate(divide="ignore", invalid="ignore"):
        clean = np.where(region & (trans > 0), median / trans, median).astype(np.float32)
    bad = region & ~np.isfinite(clean)
    clean[bad] = median[bad]
    return clean, "none"


def _inpaint_info(mt, n_meas, n_local, fallback, profile):
    """The ``info`` record of `inpaint_measured`."""
    major, minor, _ = mt.drift.extent
    prov = mt.provenance()
    shadows = prov["shadows"]
    for rec in shadows:
        rec["flat_method"] = rec.pop("method")
    return {
        "method": "measured",
        "profile": profile,
        "generated": False,
        "n_measured": int(n_meas),
        "n_local": int(n_local),
        "fallback": fallback,
        "shadows": shadows,
        "static_features": mt.params.get("static_features", []),
        "drift": prov["drift"],
        "measure_params": prov["params"],
        "params": {"NMEASURD": int(n_meas), "NLOCAL": int(n_local),
                   "DRIFTMAJ": round(major, 2), "DRIFTMIN": round(minor, 2),
                   "NFRMUSED": int(mt.params["n_frames_used"])},
    }
