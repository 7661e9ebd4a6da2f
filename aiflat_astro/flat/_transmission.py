"""The dust flat's pixels from a clean estimate: ``flat = 1 - w + w T``, ``T`` from ``median / clean``.

Everything `~aiflat_astro.flat.make_flat` does after the clean-estimate method
has answered: the valid pixels, the per-shadow transmission model
(`aiflat_astro.flat._radial`, or the plain ratio where the scene moved), the
floor and ``LOW_TRANS``, the ``GENERATED`` bit and the ``UNCERT`` plane.  It sits
below the estimators' registry so that an estimator (``measured``) can make the
``local`` transmission of some shadows without calling `make_flat` back.
"""

import logging

import numpy as np
from astropy.nddata import StdDevUncertainty

from ..dq import DustDQ
from ..utils.exceptions import InputError
from ._options import FlatOptions
from ._radial import _partition, _radial_transmission
from ._uncertainty import _temporal_sigma

log = logging.getLogger(__name__)


def _min_signal(med, min_signal):
    if min_signal is None:
        finite = med[np.isfinite(med)]
        return 0.01 * float(np.percentile(finite, 99.5)) if finite.size else 0.0
    return float(min_signal)


def _catalog_centres(det):
    """Shadow centres ``{id: (y, x)}`` from the detection's catalog (empty for a plain mask)."""
    cat = det.catalog
    if cat is None or not len(cat) or not {"id", "x_centroid", "y_centroid"} <= set(cat.colnames):
        return {}
    rows = zip(cat["id"], cat["y_centroid"], cat["x_centroid"])
    return {int(i): (float(yc), float(xc)) for i, yc, xc in rows
            if np.isfinite(yc) and np.isfinite(xc)}


def _scene_motion(frames, region, opts, det=None):
    """How far the scene moves between frames, px: median distance between two frames' positions.

    ``None`` when unknown (no frames, ``scene_motion=None``).  With
    ``'auto'`` the shifts of up to 9 frames spread over the video are
    measured (`~aiflat_astro.registration.register_frames`, dust masked),
    unless the detection already measured them on these frames (its
    provenance ``motion["pair_px"]``, from the local detector's motion test).
    """
    motion = opts.scene_motion
    if motion is None or (motion == "auto" and frames is None):
        return None
    if motion != "auto":
        return float(motion)
    measured = (getattr(det, "provenance", None) or {}).get("motion") or {}
    if measured.get("pair_px") is not None:
        return float(measured["pair_px"])
    from ..registration import median_pair_distance, register_frames

    try:
        shifts = register_frames(frames, dust_mask=region, max_frames=9).shifts
    except InputError as exc:  # frames the registration cannot use: the radial model stays
        log.warning("scene motion not measured (%s); the radial model stays", exc)
        return None
    return median_pair_distance(shifts)


def _transmission_model(med, det, w, valid, ratio, chosen, motion, silhouette=False, measured=None,
                        measured_noise=None):
    """The transmission ``T`` inside the weight: per-shadow radial profiles or the plain ratio.

    Returns ``T`` (NaN where unusable), the pixels that keep the plain
    ratio, the model's uncertainty, the per-shadow records and the map of
    shadow ids (`_partition`; None for the plain ratio).
    """
    region = w > 0
    trans = np.where(valid, ratio, np.nan)
    if chosen != "radial":
        return trans, region, np.zeros(med.shape), [], None
    assign = _partition(w, det.labels)
    radial, model_err, records = _radial_transmission(med, ratio, valid, w, assign, det.labels,
                                                      _catalog_centres(det), motion=motion,
                                                      silhouette=silhouette, measured=measured,
                                                      measured_noise=measured_noise)
    modelled = np.isfinite(radial)
    return np.where(modelled, radial, trans), region & ~modelled, model_err, records, assign


def _flag_records(dq, records, assign_of, region):
    for rec in records:
        if rec.get("review"):
            dq[(assign_of == rec["id"]) & region] |= np.uint8(DustDQ.REVIEW)


def _compose(w, trans, region, dq, floor):
    """``flat = 1 - w + w T`` inside the weight, exactly 1.0 outside; the floor, ``LOW_TRANS``."""
    unusable = region & ~np.isfinite(trans)
    if unusable.any():
        dq[unusable] |= np.uint8(DustDQ.REVIEW)
        log.info("%d masked pixel(s) have no usable signal; the flat stays 1.0 there",
                 int(unusable.sum()))
    value = 1.0 - w.astype(np.float64) + w * np.where(np.isfinite(trans), trans, 1.0)
    low = region & (value < floor)
    value[low] = floor
    dq[low] |= np.uint8(DustDQ.LOW_TRANS)
    flat = np.ones(w.shape, np.float32)
    flat[region] = value[region].astype(np.float32)
    return flat, low


def _uncertainty(frames, valid, region, fallback, trans, model_err, w, low, opts):
    """``UNCERT``: the plain ratio carries the median's noise, a radial model its bin's error."""
    rel = np.where(valid, _temporal_sigma(frames, region, mem_limit=opts.mem_limit,
                                          progress_bar=opts.progress_bar), 0.0)
    noise = np.where(fallback, np.where(np.isfinite(trans), trans, 1.0) * rel, 0.0)
    sigma = w * np.sqrt(noise**2 + model_err**2)
    sigma[low] = 0.0
    return StdDevUncertainty(np.where(region, sigma, 0.0).astype(np.float32))


def dust_flat_from_clean(med, det, clean, info, *, frames=None, opts=None, min_signal=None):
    """The flat's pixels, DQ and uncertainty from a clean estimate (the dust weight not empty).

    ``T = median / clean`` inside the weight, modelled per shadow (`_transmission_model`), then
    ``flat = 1 - w + w T`` (`_compose`); ``info`` is the clean-estimate method's record
    (``profile``, ``generated``).  Returns ``(flat, dq, uncertainty, result)``.
    """
    opts = opts or FlatOptions()
    min_signal = _min_signal(med, None) if min_signal is None else min_signal
    w = np.asarray(det.weight, dtype=np.float32)
    region, dq = w > 0, det.dq.copy()
    chosen = info.get("profile", "radial") if opts.profile == "auto" else opts.profile
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = med.astype(np.float64) / clean.astype(np.float64)
    defects = (dq & (DustDQ.HOT | DustDQ.COLD | DustDQ.SATURATED)) > 0
    valid = region & np.isfinite(ratio) & (clean > min_signal) & np.isfinite(med) & ~defects
    motion = _scene_motion(frames, region, opts, det) if chosen == "radial" else None
    trans, fallback, model_err, records, assign = _transmission_model(
        med, det, w, valid, ratio, chosen, motion, opts.silhouette, info.get("scene_measured"),
        info.get("scene_noise"))
    if records:
        _flag_records(dq, records, assign, region)
    flat, low = _compose(w, trans, region, dq, opts.floor)
    generated = info.get("generated", False)
    if np.any(generated):
        gen = np.broadcast_to(np.asarray(generated, dtype=bool), med.shape) & region
        dq[gen] |= np.uint8(DustDQ.GENERATED)
    uncertainty = None
    if frames is not None:
        uncertainty = _uncertainty(frames, valid, region, fallback, trans, model_err, w, low, opts)
    result = {"info": info, "profile": chosen, "records": records, "n_low": int(low.sum()),
              "motion": motion}
    return flat, dq, uncertainty, result
