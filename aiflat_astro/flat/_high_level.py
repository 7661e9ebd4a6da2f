"""Synthetic dust flats: exactly 1.0 outside the dust, ``median / clean`` inside.

The flat is built from three ingredients: the temporal median, the dust mask
(DQ bits and a soft weight ``w``, from a detector) and a clean estimate of
the median without dust (`aiflat_astro.flat.estimators.local`)::

    flat = 1 - w + w * T,        T = transmission estimated from median / clean

* ``flat`` is exactly 1.0 (bit-exact float32) wherever ``w == 0``, so that
  ``ccdproc.flat_correct(frame, flat, norm_value=1)`` leaves those pixels
  bit-identical.
* ``T`` is not clipped at 1.0: bright Fresnel rims around a shadow are real.
* Where ``T`` falls below ``floor`` the pixel cannot be corrected reliably:
  the flat is set to ``floor`` (as ``ccdproc.flat_correct(min_value=floor)``
  would do) and the ``LOW_TRANS`` DQ bit is set.

Transmission model (``profile``)
--------------------------------
The ratio ``median / clean`` also contains the part of the scene's texture
(granulation, stars, noise) that no interpolation can predict.  With
``profile='radial'`` (the default for local and generative estimates) the
transmission of each shadow is the robust *radial profile* of the ratio
about the shadow's centre: dust shadows are pupil footprints (discs, or
annuli behind a central obstruction) convolved with the grain, hence round,
and the azimuthal median removes the texture while keeping the shape,
including the donut hole and bright rims.  Pixels far off the profile (a
pore or a sunspot inside the shadow) are dropped and the profile made
again; the centre is the detection's centre moved half-way to the one that
minimises the azimuthal scatter.  A shadow whose ratio does not
follow its radial profile (an elongated fibre, a vignetted footprint) keeps
its radial model and is flagged ``REVIEW``.  ``profile='none'`` uses the plain
ratio everywhere (right for measured estimates, which carry the true
texture).

With ``frames``, the scene's motion decides shadow by shadow
(``scene_motion='auto'``): where the scene moved by more than a shadow (a
drift set), the median has averaged the scene under it and what stays in
the ratio is fixed on the sensor (the dust's real shape, the sensor's own
pattern): that shadow gets the plain ratio.  Where the scene stays (a
jitter video) the radial profile is kept.
"""

import logging

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.nddata import CCDData, StdDevUncertainty

from ..dq import DustDQ, expand_mask
from ..provenance import params_hash, sha256_array
from ..utils._colour import cfa_normalise, to_mono
from ..utils.exceptions import InputError, renamed_keyword, warn_user
from ._header import _AI_KEYS, PROV_KEY, _flat_header, _json_safe, _median_inputs  # noqa: F401
from ._options import FLAT_PROFILES, FlatOptions, _flat_options
from ._transmission import _min_signal, dust_flat_from_clean

__all__ = ["make_flat", "FlatOptions", "multiply_master_flat", "evaluate_flat", "FLAT_PROFILES"]

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------
def _as_median(median):
    if isinstance(median, CCDData):
        data, header = median.data, fits.Header(median.meta) if median.meta else fits.Header()
    else:
        data, header = median, fits.Header()
    # RGB: the channel mean; a raw colour mosaic: its phases divided by their gains (dust is achromatic)
    data = cfa_normalise(to_mono(np.asarray(data)), header.get("BAYERPAT"))
    if data.ndim != 2:
        raise InputError(f"make_flat needs a 2-D median (or RGB, ny x nx x 3), got shape {data.shape}")
    if not np.isfinite(data).any():
        raise InputError("the median has no finite pixel")
    return np.array(data, dtype=np.float32), header


def _checked_weight(weight, shape):
    weight = np.asarray(weight, dtype=np.float32)
    if weight.shape != shape:
        raise InputError(f"weight shape {weight.shape} does not match the median shape {shape}")
    return weight


def _halo_where_weighted(dq, weight):
    """DQ with DUST_HALO wherever a given weight lets the flat differ from 1 outside DUST.

    The contract: a pixel with no DQ bit has a flat of exactly 1.0, so a
    user's weight reaching beyond the dust must be flagged there.
    """
    outside = (weight > 0) & ((dq & DustDQ.DUST) == 0)
    return dq | np.where(outside, np.uint8(DustDQ.DUST_HALO), np.uint8(0))


def _as_detection(dust_mask, weight, shape):
    from ..products import DustDetection, empty_catalog

    if dust_mask is None:
        raise InputError("make_flat needs the dust: a DustDetection, a boolean dust mask or a uint8 DQ array")
    if isinstance(dust_mask, DustDetection):
        det = dust_mask
        if det.shape != shape:
            raise InputError(f"dust mask shape {det.shape} does not match the median shape {shape}")
        if weight is not None:
            weight = _checked_weight(weight, shape)
            det = DustDetection(dq=_halo_where_weighted(det.dq, weight), weight=weight, catalog=det.catalog,
                                detector=det.detector, provenance=det.provenance, labels=det.labels)
        return det
    arr = np.asarray(dust_mask)
    if arr.shape != shape:
        raise InputError(f"dust mask shape {arr.shape} does not match the median shape {shape}")
    if arr.dtype == bool:
        dq = np.where(arr, np.uint8(DustDQ.DUST), np.uint8(0)).astype(np.uint8)
    elif np.issubdtype(arr.dtype, np.integer):
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            raise InputError("a DQ dust mask must hold uint8 DustDQ bits (0..255)")
        dq = arr.astype(np.uint8)
    else:
        raise InputError(f"dust_mask must be a DustDetection, a boolean mask or a uint8 DQ array, got {arr.dtype}")
    dust = (dq & DustDQ.DUST) > 0
    if weight is None:
        weight, halo = expand_mask(dust)
        dq = dq | np.where(halo, np.uint8(DustDQ.DUST_HALO), np.uint8(0))
    else:
        weight = _checked_weight(weight, shape)
        dq = _halo_where_weighted(dq, weight)
    return DustDetection(dq=dq, weight=weight, catalog=empty_catalog(), detector="user",
                         provenance={"detector": "user"})


def _dust_flat(med, det, inpaint, frames, opts, min_signal):
    """Clean estimate, transmission model, the flat's pixels, DQ and uncertainty (mask not empty)."""
    from .estimators.registry import run_inpainter

    clean, info = run_inpainter(inpaint, med, det, frames=frames, **(opts.inpaint_options or {}))
    return dust_flat_from_clean(med, det, clean, info, frames=frames, opts=opts, min_signal=min_signal)


def _provenance(med, median_header, det, inpaint, opts, min_signal, result):
    """The flat's header: provenance cards and the full record (``PROVJSON``)."""
    info, records = result["info"], result["records"]
    params = {"FLOOR": opts.floor, "PROFILE": result["profile"], "MINSIG": round(min_signal, 6)}
    params.update({k: v for k, v in (info.get("params") or {}).items() if len(k) <= 8})
    det_prov = _json_safe(det.provenance or {})
    # AI cards: the inpainter's if it used a model, else the detector's (an AI eye made the mask)
    prov = {k: det_prov[k] for k in _AI_KEYS if det_prov.get(k) is not None}
    prov.update(_json_safe(info.get("provenance") or {}))
    w = np.asarray(det.weight, dtype=np.float32)
    prov.update(inputs=_median_inputs(median_header), mask=det_prov, detector=det.detector,
                inpaint=str(inpaint), input_sha256=sha256_array(med),
                mask_sha256=sha256_array(det.dq), weight_sha256=sha256_array(w),
                params=params, scene_motion_px=result["motion"])
    hashed = {"input": prov["input_sha256"], "mask": prov["mask_sha256"],
              "weight": prov["weight_sha256"],
              "inpaint": str(inpaint), "inpaint_options": _json_safe(opts.inpaint_options or {}),
              "floor": opts.floor, "profile": opts.profile, "min_signal": min_signal}
    if opts.scene_motion != "auto":
        hashed["scene_motion"] = opts.scene_motion
    params["PARAMSHA"] = params_hash(hashed)
    prov["shadows"] = _json_safe(records)
    prov["inpaint_info"] = _json_safe({k: v for k, v in info.items()
                                       if k not in ("provenance", "params")})
    prov["n_low_transmission"] = result["n_low"]
    prov["history"] = [f"synthetic dust flat: inpaint={inpaint}, profile={result['profile']}, "
                       f"floor={opts.floor:g}",
                       f"{int((w > 0).sum())} px inside the dust weight; flat = 1.0 elsewhere"]
    return _flat_header(median_header, prov)


def make_flat(median, detection=None, *, weight=None, inpaint="local", frames=None, options=None,
              dust_mask=None, **keywords):
    """Make a synthetic dust flat from a temporal median and a dust mask.

    Parameters
    ----------
    median : `~astropy.nddata.CCDData` or `~numpy.ndarray`
        2-D temporal median (``median_combine``), bias/dark subtracted if the
        frames carry a pedestal (a pedestal makes the shadows look shallower).
    detection : `~aiflat_astro.detection.DustDetection`, or array
        The dust: a detection (DQ, weight, catalog), a uint8 DQ array with
        `~aiflat_astro.dq.DustDQ` bits, or a boolean dust mask (True = dust).
    weight : `~numpy.ndarray`, optional
        Soft weight 0..1 replacing the detection's; for a plain mask the
        default is `~aiflat_astro.dq.expand_mask` (dilate 2 px, soft edge 1.5 px).
    inpaint : str, optional
        Clean-estimate method registered in `aiflat_astro.flat.estimators.local`:
        ``'local'`` (default, offline, deterministic), ``'measured'`` (from
        the drift of the scene; needs ``frames``), ``'gemini'`` (generative).
    frames : optional
        The frames the median was made from (anything
        `~aiflat_astro.io.frames.open_frames` accepts).  Used by
        ``inpaint='measured'`` and for the ``UNCERT`` uncertainty (temporal
        scatter of the masked pixels, one streaming pass).
    floor : float, optional
        Lowest transmission that is corrected (default 0.05).  Below it the
        flat is set to ``floor`` and the pixel flagged ``LOW_TRANS``:
        dividing by a smaller number would amplify noise 20-fold or more.
    options : ``aiflat_astro.flat.FlatOptions``, optional
        The options below as one object; keywords given as well override it.
    profile : {'auto', 'radial', 'none'}, optional
        Transmission model (see the module docstring); ``'auto'`` uses the
        inpainter's recommendation, else ``'radial'``, shadow by shadow
        replaced by the plain ratio where the scene moved by more than the
        shadow (``scene_motion``) or where the shadow is not round beyond
        the texture.
    scene_motion : 'auto', float or None, optional
        How far the scene moves between frames, in px (the median distance
        between two frames' positions).  A shadow smaller than that gets the
        plain ratio: the median has averaged the scene under it (a drift
        set), and what stays in the ratio is fixed on the sensor.  ``'auto'``
        (default) measures it from ``frames`` when they are given
        (`~aiflat_astro.registration.register_frames` on 9 frames); `None`
        never.
    silhouette : bool, optional
        Try, on each shadow the radial profile does not fit beyond the
        texture, a model of its silhouette convolved with one pupil
        footprint (`~aiflat_astro.flat.silhouette`; clumps and fibres), kept
        where its BIC is lower and its shadow stays inside the core's halo.
        Default False: measured, it does not beat the radial profile on
        held-out simulated seeds (see the docs' "Which model" section).
    min_signal : float, optional
        Pixels whose clean estimate is below this level carry no usable
        transmission (dark sky next to the solar limb); default 1 % of the
        99.5th percentile of the median.  With ``profile='radial'`` they get
        the shadow's radial model, otherwise the flat stays 1.0 there and
        they are flagged ``REVIEW``.
    inpaint_options : dict, optional
        Keyword options for the inpainter.
    mem_limit : str or int, optional
        Memory bound for reading ``frames`` (default ``'256MB'``).
    progress_bar : bool, optional
        Show a progress bar while reading ``frames``.
    full : bool, optional
        Instead of the dust flat, the whole gain table from the shifted
        ``frames`` (`aiflat_astro.flat.fullflat.make_full_flat`; ``inpaint_options``
        go to `~aiflat_astro.flat.fullflat.full_flat`): NOT 1.0 outside the
        dust, ``FLATTYPE = 'FULL'``.  Default `False`.
    dust_mask : optional
        Deprecated keyword name of ``detection``.

    Returns
    -------
    flat : `~astropy.nddata.CCDData`
        float32, unit dimensionless, exactly 1.0 where the weight is 0;
        ``flags`` = uint8 DQ (the mask's bits plus ``LOW_TRANS``, ``REVIEW``,
        ``GENERATED``); ``uncertainty`` = `~astropy.nddata.StdDevUncertainty`
        when ``frames`` are given; ``meta`` = provenance keywords (``INPAINT``,
        ``INPSHA``, ``MASKSHA``, ``PARAMSHA``, ...) and the full record as
        JSON under ``PROVJSON`` (moved to its own extension by
        `~aiflat_astro.io.fits.write_flat`).

    Examples
    --------
    >>> import numpy as np
    >>> y, x = np.mgrid[0:64, 0:64]
    >>> shadow = np.hypot(y - 32, x - 30) < 8
    >>> median = np.where(shadow, 0.8, 1.0).astype(np.float32) * 1000
    >>> flat = make_flat(median, shadow)
    >>> round(float(flat.data[32, 30]), 3), float(flat.data[0, 0]), flat.unit
    (0.8, 1.0, Unit(dimensionless))
    >>> bool(np.all(flat.data[flat.flags == 0] == 1.0))
    True
    """
    if dust_mask is not None:
        detection = renamed_keyword("make_flat", "dust_mask", "detection", dust_mask, given=detection)
    opts = _flat_options(options, keywords)
    if opts.full:  # the whole gain table from shifted images: aiflat_astro.flat.fullflat (owner: kll)
        from .fullflat import make_full_flat

        return make_full_flat(median, frames, detection=detection, progress_bar=opts.progress_bar,
                              **(opts.inpaint_options or {}))
    from .estimators.registry import get_inpainter

    get_inpainter(inpaint)  # an unknown method is an error even when the mask is empty
    med, median_header = _as_median(median)
    det = _as_detection(detection, weight, med.shape)
    min_signal = _min_signal(med, opts.min_signal)
    if np.any(np.asarray(det.weight) > 0):
        flat, dq, uncertainty, result = _dust_flat(med, det, inpaint, frames, opts, min_signal)
    else:
        log.info("empty dust mask: the flat is 1.0 everywhere")
        flat, dq, uncertainty = np.ones(med.shape, np.float32), det.dq.copy(), None
        result = {"info": {"method": inpaint}, "profile": "none", "records": [], "n_low": 0, "motion": None}
    if result["n_low"]:
        warn_user(f"{result['n_low']} pixel(s) have a transmission below the floor {opts.floor:g}: flat set to "
                  "the floor there and flagged LOW_TRANS (exclude them from science)")
    header = _provenance(med, median_header, det, inpaint, opts, min_signal, result)
    return CCDData(flat, unit=u.dimensionless_unscaled, flags=dq, uncertainty=uncertainty, meta=header)


def evaluate_flat(flat, truth):
    """Compare a flat with the ground truth of a simulated video.

    Parameters
    ----------
    flat : `~astropy.nddata.CCDData`, `~numpy.ndarray` or path
        The flat (a ``flat.fits`` is read with checksum verification).
    truth : `~aiflat_astro.datasets.DustyVideoTruth` or path
        The truth (`~aiflat_astro.datasets.make_dusty_video`, or its truth
        FITS file).  Its ``transmission`` holds the dust only (no
        vignetting), which is what a dust flat should equal.

    Returns
    -------
    dict
        ``flat_error_rms``: rms of ``flat / T - 1`` inside the true shadows;
        ``residual_rms``: rms of ``T / flat - 1`` there, the dust left in a
        calibrated frame; ``uncorrected_rms``: rms of ``1 - T`` there (the
        dust without correction); ``residual_ratio``: their ratio (target
        ≤ 0.1); ``bias``: mean of ``T / flat - 1`` inside; ``outside_rms``:
        rms of ``flat - 1`` outside the true shadows (false corrections);
        ``outside_exact``: fraction of those pixels where the flat is exactly
        1.0; ``n_shadow_pixels``; ``shadows``: per shadow ``id``, ``depth``,
        ``residual_ratio``.

    Examples
    --------
    >>> import numpy as np
    >>> from types import SimpleNamespace
    >>> t = np.ones((8, 8), np.float32); t[2:5, 2:5] = 0.8
    >>> truth = SimpleNamespace(transmission=t, labels=(t < 1).astype(np.int32))
    >>> evaluate_flat(t, truth)["residual_ratio"]
    0.0
    """
    if isinstance(flat, (str, bytes)) or hasattr(flat, "__fspath__"):
        from ..io.fits import read_flat

        flat = read_flat(flat)
    if isinstance(truth, (str, bytes)) or hasattr(truth, "__fspath__"):
        from ..datasets import read_truth

        truth = read_truth(truth)
    f = np.asarray(getattr(flat, "data", flat), dtype=np.float64)
    t = np.asarray(truth.transmission, dtype=np.float64)
    labels = np.asarray(truth.labels)
    if f.shape != t.shape:
        raise InputError(f"flat shape {f.shape} does not match the truth shape {t.shape}")
    inside = labels > 0
    outside = ~inside
    out = {"n_shadow_pixels": int(inside.sum())}
    if inside.any():
        res = t[inside] / f[inside] - 1
        unc = np.sqrt(np.mean((1 - t[inside]) ** 2))
        out.update(flat_error_rms=float(np.sqrt(np.mean((f[inside] / t[inside] - 1) ** 2))),
                   residual_rms=float(np.sqrt(np.mean(res**2))), uncorrected_rms=float(unc),
                   residual_ratio=float(np.sqrt(np.mean(res**2)) / unc) if unc > 0 else 0.0,
                   bias=float(np.mean(res)))
    shadows = []
    for k in np.unique(labels[inside]):
        px = labels == k
        unc = np.sqrt(np.mean((1 - t[px]) ** 2))
        res = np.sqrt(np.mean((t[px] / f[px] - 1) ** 2))
        shadows.append({"id": int(k), "depth": float(1 - t[px].min()),
                        "residual_ratio": float(res / unc) if unc > 0 else 0.0})
    out["shadows"] = shadows
    out["outside_rms"] = float(np.sqrt(np.mean((f[outside] - 1) ** 2))) if outside.any() else 0.0
    out["outside_exact"] = float(np.mean(f[outside] == 1.0)) if outside.any() else 1.0
    return out


def multiply_master_flat(dust_flat, master_flat):
    """Multiply a dust flat into an existing master flat.

    For deep-sky users whose master flat is old or whose dust has moved:
    calibrate the lights with the master flat, take their median, make the
    dust flat from that median (it then holds only the *residual* dust), and
    multiply it into the master flat.  Making the dust flat from uncorrected
    frames would correct dust that the master flat already corrects twice.

    Parameters
    ----------
    dust_flat : `~astropy.nddata.CCDData`
        The aiflat flat (dimensionless, 1.0 outside the dust).
    master_flat : `~astropy.nddata.CCDData`
        The existing master flat, any normalisation and unit.

    Returns
    -------
    `~astropy.nddata.CCDData`
        float32 ``master * dust``, the master's unit and header, the dust
        flat's DQ as ``flags``, uncertainties combined, provenance cards of
        the dust flat added.  Outside the dust the master flat's values are
        unchanged, bit for bit.

    Examples
    --------
    >>> import numpy as np
    >>> from astropy.nddata import CCDData
    >>> master = CCDData(np.full((4, 4), 2.0, np.float32), unit="adu")
    >>> dust = CCDData(np.ones((4, 4), np.float32), unit="")
    >>> dust.data[1, 1] = 0.5
    >>> out = multiply_master_flat(dust, master)
    >>> float(out.data[1, 1]), float(out.data[0, 0]), out.unit
    (1.0, 2.0, Unit("adu"))
    """
    for name, obj in (("dust_flat", dust_flat), ("master_flat", master_flat)):
        if not isinstance(obj, CCDData):
            raise InputError(f"{name} must be a CCDData")
    if dust_flat.shape != master_flat.shape:
        raise InputError(f"dust flat shape {dust_flat.shape} does not match the master flat shape {master_flat.shape}")
    if dust_flat.unit is not None and dust_flat.unit != u.dimensionless_unscaled:
        raise InputError(f"the dust flat must be dimensionless, got unit {dust_flat.unit}")
    master = np.asarray(master_flat.data, dtype=np.float32)
    dust = np.asarray(dust_flat.data, dtype=np.float32)
    touched = dust != 1.0
    data = master.copy()
    data[touched] = (master[touched].astype(np.float64) * dust[touched]).astype(np.float32)
    uncertainty = None
    m_unc = master_flat.uncertainty.array if master_flat.uncertainty is not None else None
    d_unc = dust_flat.uncertainty.array if dust_flat.uncertainty is not None else None
    if m_unc is not None or d_unc is not None:
        m_rel = (m_unc / np.abs(master)) if m_unc is not None else 0.0
        d_rel = (d_unc / np.abs(dust)) if d_unc is not None else 0.0
        with np.errstate(divide="ignore", invalid="ignore"):
            sig = np.abs(data) * np.sqrt(np.square(m_rel) + np.square(d_rel))
        uncertainty = StdDevUncertainty(sig.astype(np.float32))
    header = fits.Header(master_flat.meta) if master_flat.meta else fits.Header()
    dust_header = fits.Header(dust_flat.meta) if dust_flat.meta else fits.Header()
    for card in dust_header.cards:
        if card.keyword in ("", "COMMENT", "HISTORY", "BUNIT") or card.keyword in header:
            continue
        header[card.keyword] = (card.value, card.comment)
    for line in dust_header.get("HISTORY", []):
        header.add_history(line)
    header.add_history("aiflat: dust flat multiplied into this master flat")
    flags = None
    if dust_flat.flags is not None:
        flags = np.asarray(dust_flat.flags, dtype=np.uint8)
        if master_flat.flags is not None:
            flags = flags | np.asarray(master_flat.flags, dtype=np.uint8)
    return CCDData(data, unit=master_flat.unit, flags=flags, uncertainty=uncertainty, meta=header)
