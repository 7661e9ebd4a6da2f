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

import json
import logging
from dataclasses import dataclass, fields, replace

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.nddata import CCDData, StdDevUncertainty
from scipy import ndimage, optimize

from ..dq import DustDQ, expand_mask
from ..provenance import add_provenance_cards, params_hash, sha256_array
from ..utils._atomic import parse_size
from ..utils._colour import cfa_normalise, to_mono
from ..utils.exceptions import InputError, warn_user

__all__ = ["make_flat", "FlatOptions", "multiply_master_flat", "evaluate_flat", "FLAT_PROFILES"]

log = logging.getLogger(__name__)

#: Transmission models understood by `make_flat` (``'auto'`` lets the inpainter choose).
FLAT_PROFILES = ("auto", "radial", "none")

#: Header keyword under which the full provenance record (JSON, ASCII-escaped)
#: travels with an in-memory flat; `~aiflat_astro.io.fits.write_flat` moves it
#: into the ``PROVJSON`` extension.
PROV_KEY = "PROVJSON"

_RADIAL_HALF_WIDTH = 0.25  # half width of the radial median window on edges, px
_RADIAL_MAX_HALF_WIDTH = 1.5  # ... and on flat parts of the profile, px
_RADIAL_PILOT_HALF_WIDTH = 1.0  # pilot profile that measures the slope, px
_RADIAL_K = 8.0            # widen while the profile changes by < K x the sample scatter across the window
_RADIAL_GRID = 0.1         # radii at which the radial median is evaluated, px
_RADIAL_MIN_COUNT = 8      # pixels per radial median (the window widens near the centre)
_CENTRE_SAMPLE = 20000    # pixels used for the centre refinement of big shadows
_CENTRE_STEP = 0.5        # fraction of the centre refinement's step taken (see _radial_transmission)
_OUTLIER_SIGMA = 3.0      # a pixel is an outlier of the radial model beyond this many texture sigmas
_MAX_OUTLIERS = 0.10      # more outliers than this fraction: the shadow is not round
_EDGE_TOLERANCE = 0.05    # misfit allowed on steep edges, as a fraction of the shadow depth
_REJECT_SIGMA = 3.0       # pixels this many texture sigmas off the radial profile do not enter it
_REJECT_ITER = 2          # rejection passes at most (a third changes nothing measurable)
_REJECT_MAX = 0.5         # never reject more than this fraction of a shadow's pixels
_PIXEL_SLACK = 0.5        # a pixel's value spans +-0.5 px of radius: misfit allowed = this x |profile slope|
_ELONG_MIN = 1.05         # a core elongated by more than this gets an elliptical profile (below: pixel noise)
_ELONG_MAX = 3.0          # ... by at most this (fibres beyond stay elongated 3:1 and get REVIEW)
_ELONG_MIN_PIXELS = 12    # cores smaller than this have no measurable shape: circular profile
_SILHOUETTE_GATE = 1.0    # silhouette model tried where the radial rms misfit exceeds this x sigma


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


def _as_detection(dust_mask, weight, shape):
    from ..products import DustDetection, empty_catalog

    if isinstance(dust_mask, DustDetection):
        det = dust_mask
        if det.shape != shape:
            raise InputError(f"dust mask shape {det.shape} does not match the median shape {shape}")
        if weight is not None:
            weight = np.asarray(weight, dtype=np.float32)
            if weight.shape != shape:
                raise InputError(f"weight shape {weight.shape} does not match the median shape {shape}")
            det = DustDetection(dq=det.dq, weight=weight, catalog=det.catalog, detector=det.detector,
                                provenance=det.provenance, labels=det.labels)
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
    return DustDetection(dq=dq, weight=weight, catalog=empty_catalog(), detector="user",
                         provenance={"detector": "user"})


# --------------------------------------------------------------------------------------
# radial transmission model
# --------------------------------------------------------------------------------------
def _partition(weight, labels):
    """Give every pixel with weight > 0 the id of the nearest shadow core in its region.

    Regions with no DUST core become shadows of their own (ids above the
    largest label).  Returns the int32 map and the list of ids.
    """
    region = weight > 0
    comp, n = ndimage.label(region, structure=np.ones((3, 3), bool))
    assign = np.zeros(weight.shape, np.int32)
    next_id = int(labels.max(initial=0)) + 1
    for k, sl in enumerate(ndimage.find_objects(comp), start=1):
        inside = comp[sl] == k
        lab = np.where(inside, labels[sl], 0)
        if lab.any():
            _, (iy, ix) = ndimage.distance_transform_edt(lab == 0, return_indices=True)
            assign[sl][inside] = lab[iy, ix][inside]
        else:
            assign[sl][inside] = next_id
            next_id += 1
    return assign


def _running_median(rs, vs, at, half_width, n_min):
    """Median of the sorted samples ``(rs, vs)`` within ``at ± half_width`` (≥ ``n_min`` samples)."""
    half_width = np.broadcast_to(half_width, at.shape)
    lo = np.searchsorted(rs, at - half_width)
    hi = np.searchsorted(rs, at + half_width)
    rad = np.empty(at.size)
    med = np.empty(at.size)
    err = np.empty(at.size)
    n_min = min(n_min, rs.size)
    for i in range(at.size):
        a, b = lo[i], hi[i]
        if b - a < n_min:  # widen to the n_min samples nearest in radius
            j = int(np.searchsorted(rs, at[i]))
            b = min(rs.size, max(0, j - n_min // 2) + n_min)
            a = max(0, b - n_min)
        seg = vs[a:b]
        m = np.median(seg)
        rad[i] = rs[a:b].mean()
        med[i] = m
        err[i] = 1.2533 * 1.4826 * np.median(np.abs(seg - m)) / np.sqrt(seg.size)
    return rad, med, err


def _radial_profile(r, v, *, grid=_RADIAL_GRID, n_min=_RADIAL_MIN_COUNT):
    """Adaptive running median of ``v`` against radius ``r``.

    Evaluated every ``grid`` px.  A first pass with a narrow window
    (± `_RADIAL_HALF_WIDTH`) follows steep shadow edges; the window is then
    widened, up to ± `_RADIAL_MAX_HALF_WIDTH`, wherever the profile (from a
    pilot pass) is flat compared with the scatter of the samples (texture,
    noise), so that plateaus average many more pixels while the edges of
    clean, steep shadows stay sharp.  At least ``n_min``
    samples enter each median (the window widens near the centre).

    Returns the mean radius of each window's samples (the abscissa to
    interpolate on), the medians and the standard error of each median.
    """
    order = np.argsort(r, kind="stable")
    rs, vs = r[order], v[order]
    at = np.arange(0.0, rs[-1] + grid, grid)
    rad, med, _ = _running_median(rs, vs, at, _RADIAL_PILOT_HALF_WIDTH, n_min)
    scatter = 1.4826 * float(np.median(np.abs(vs - np.interp(rs, rad, med))))
    slope = np.abs(np.gradient(med, at)) if at.size > 1 else np.zeros(1)
    slope = ndimage.maximum_filter1d(slope, size=max(3, int(2 * _RADIAL_MAX_HALF_WIDTH / grid) + 1))
    # widen while the profile changes by less than _RADIAL_K sample scatters across the window
    # (measured on simulated videos: wide windows on plateaus matter, edges matter less)
    width = np.clip(_RADIAL_K * scatter / np.maximum(slope, 1e-12), _RADIAL_HALF_WIDTH, _RADIAL_MAX_HALF_WIDTH)
    rad, med, err = _running_median(rs, vs, at, width, n_min)
    keep = np.concatenate([[True], np.diff(rad) > 1e-9])  # np.interp needs increasing abscissae
    return rad[keep], med[keep], err[keep]


def _asymmetry(centre, ys, xs, vals):
    r = np.hypot(ys - centre[0], xs - centre[1])
    idx = (r / 1.0).astype(np.int64)
    order = np.lexsort((vals, idx))
    si, sv = idx[order], vals[order]
    starts = np.searchsorted(si, np.arange(si[-1] + 2))
    counts = np.diff(starts)
    mids = starts[:-1] + counts // 2
    has = counts > 0
    med = np.zeros(counts.size)
    med[has] = sv[mids[has]]
    return float(np.mean(np.abs(vals - med[idx])))


def _refine_centre(ys, xs, vals, c0, max_shift):
    if ys.size > _CENTRE_SAMPLE:
        pick = np.random.default_rng(0).choice(ys.size, _CENTRE_SAMPLE, replace=False)
        ys, xs, vals = ys[pick], xs[pick], vals[pick]
    c0 = np.asarray(c0, float)
    simplex = np.array([c0, c0 + (1.0, 0.0), c0 + (0.0, 1.0)])
    res = optimize.minimize(_asymmetry, c0, args=(ys, xs, vals), method="Nelder-Mead",
                            options={"xatol": 0.02, "fatol": 1e-9, "initial_simplex": simplex, "maxiter": 200})
    c = res.x
    if not np.all(np.isfinite(c)) or np.hypot(*(c - c0)) > max_shift:
        return c0
    return c


def _shape_matrix(core_y, core_x):
    """The 2 x 2 map (det 1) that makes an elongated dust core round, from its second moments.

    Real specks are mostly round but not quite (elongation, the square root
    of the moments' eigenvalue ratio: median 1.15, 95th percentile 1.8 on a
    real dusty median): a circular profile about the centre puts a sharp
    speck's edge at the wrong radius all along its long and short axes.  In
    the coordinates ``M @ (y, x)`` the core is round with the same area, so
    the radial profile follows elliptical contours.  The identity for small
    or round cores (`_ELONG_MIN_PIXELS`, `_ELONG_MIN`); the elongation is
    capped at `_ELONG_MAX`.
    """
    if core_y.size < _ELONG_MIN_PIXELS:
        return np.eye(2), 1.0
    cov = np.cov(np.stack([core_y, core_x]).astype(float)) + np.eye(2) / 12.0  # pixels are squares
    evals, evecs = np.linalg.eigh(cov)
    if evals[0] <= 0:
        return np.eye(2), 1.0
    elong = float(np.sqrt(evals[1] / evals[0]))
    if elong < _ELONG_MIN:
        return np.eye(2), elong
    e = min(elong, _ELONG_MAX)
    # shrink the long axis and stretch the short one by sqrt(e): round, same area
    scale = np.diag([np.sqrt(e), 1.0 / np.sqrt(e)])
    return evecs @ scale @ evecs.T, elong


def _texture_sigma(median, clean_bg, ring):
    rel = median[ring] / clean_bg[ring] - 1.0
    rel = rel[np.isfinite(rel)]
    if rel.size < 10:
        return np.nan
    return 1.4826 * float(np.median(np.abs(rel - np.median(rel))))


def _ring_background(median, region, usable, width):
    """Robust plane-plus-quadratic fitted to a ring around ``region`` (for the texture level)."""
    from .estimators.local import _ring_poly

    bg = _ring_poly(np.where(usable, median, 0.0).astype(np.float64), region, usable, 2, width)
    return bg


def _edge_slack(r, rc, prof):
    """Misfit a pixel at radius ``r`` may have on a steep edge: `_PIXEL_SLACK` x |slope| of the profile.

    A pixel integrates the shadow over its area, about ±0.5 px of radius: on
    the sharp edge of a small speck (a 4 px core falls from 1 to 0.7 over
    two pixels) its value departs from the profile at its centre's radius by
    that much, which is sampling, not a scene feature.
    """
    rc, first = np.unique(rc, return_index=True)  # the grid may repeat a radius: no slope across it
    prof = np.asarray(prof)[first]
    slope = np.abs(np.gradient(prof, rc)) if rc.size > 1 else np.zeros(rc.size)
    return _PIXEL_SLACK * np.interp(r, rc, slope)


def _reject_scene_features(r, v, rc, prof, perr, sigma):
    """Radial profile again without the pixels that do not fit it (scene features in the shadow).

    A sunspot, pore or star inside a shadow is not round about the shadow's
    centre: its pixels depart from the radial profile by many texture sigmas
    on one side only, and where it covers half an annulus it drags that
    annulus' median.  Pixels beyond `_REJECT_SIGMA` texture sigmas (plus the
    edge tolerance) are dropped and the profile is made again from the
    others; repeated until the rejected set no longer changes.
    """
    depth = max(0.0, 1.0 - float(prof.min()))
    tol = _REJECT_SIGMA * np.hypot(sigma, _EDGE_TOLERANCE * depth / _REJECT_SIGMA)
    out = np.zeros(r.size, bool)
    for _ in range(_REJECT_ITER):
        model = np.interp(r, rc, prof)
        bad = np.abs(v / model - 1.0) > tol + _edge_slack(r, rc, prof) / model
        if np.array_equal(bad, out):
            break
        if np.count_nonzero(~bad) < max(_RADIAL_MIN_COUNT, 12) or np.mean(bad) > _REJECT_MAX:
            break
        out = bad
        rc, prof, perr = _radial_profile(r[~out], v[~out])
    return rc, prof, perr


def _shadow_window(sl, shape, pad=8):
    y0, y1 = max(sl[0].start - pad, 0), min(sl[0].stop + pad, shape[0])
    x0, x1 = max(sl[1].start - pad, 0), min(sl[1].stop + pad, shape[1])
    return (slice(y0, y1), slice(x0, x1)), np.array([y0, x0])


def _initial_centre(sid, centres_hint, origin, core_y, core_x, ys, xs):
    """The detection's centre, else the geometric centre of the dust core (robust to dark scene features)."""
    if sid in centres_hint:
        return np.array(centres_hint[sid]) - origin
    if core_y.size:
        return np.array([core_y.mean(), core_x.mean()])
    return np.array([ys.mean(), xs.mean()])


def _around_texture(median, mine, region):
    """Texture level (relative rms) in a 6 px ring around a shadow, against a robust quadratic."""
    usable = ~region & np.isfinite(median)
    bg = _ring_background(median, mine, usable, 6.0)
    ring = usable & (ndimage.distance_transform_edt(~region) <= 6.0)
    return _texture_sigma(median, bg, ring) if bg is not None else np.nan


def _roundness(gv, model_good, core_good, r_good, rc, prof, sigma):
    """Fraction of core pixels off the radial model beyond the texture and edge tolerance, residuals."""
    resid = gv[core_good] / model_good[core_good] - 1.0 if core_good.any() else np.array([])
    if not np.isfinite(sigma) or sigma <= 0:
        sigma = 1.4826 * float(np.median(np.abs(resid))) if resid.size else 0.0
    # tolerance: the texture, and 5 % of the depth for the sampling of steep edges
    depth = max(0.0, 1.0 - float(prof.min()))
    tol = _OUTLIER_SIGMA * np.hypot(max(sigma, 1e-4), _EDGE_TOLERANCE * depth / _OUTLIER_SIGMA)
    if not resid.size:
        return 0.0, resid, sigma
    slack = _edge_slack(r_good[core_good], rc, prof) / model_good[core_good]
    return float(np.mean(np.abs(resid) > tol + slack)), resid, sigma


def _fit_radial(ty, tx, good, vals, c0, r_eq, sigma):
    """Centre (half-way to the most symmetric), robust profile, the model at every pixel."""
    gy, gx, gv = ty[good], tx[good], vals[good]
    # The refinement is a noisy estimate (texture biases the azimuthal scatter; on the demo
    # scene 0.47 px median error, the local detector's centroid 0.37 px): combine the two
    # with equal weights, i.e. take half of the refinement's step.
    refined = _refine_centre(gy, gx, gv, c0, max_shift=max(1.0, 0.1 * r_eq))
    centre = c0 + _CENTRE_STEP * (refined - c0)
    r_good = np.hypot(gy - centre[0], gx - centre[1])
    rc, prof, perr = _radial_profile(r_good, gv)
    if np.isfinite(sigma) and sigma > 0 and _REJECT_SIGMA > 0:
        rc, prof, perr = _reject_scene_features(r_good, gv, rc, prof, perr, sigma)
    r_all = np.hypot(ty - centre[0], tx - centre[1])
    return centre, r_good, (rc, prof), np.interp(r_all, rc, prof), np.interp(r_all, rc, perr)


def _one_shadow(sid, win, origin, ctx):
    """Transmission model of one shadow in its window: (model or None, its error, record)."""
    mine = ctx["assign"][win] == sid
    ys, xs = np.nonzero(mine)
    good = ctx["valid"][win][mine]
    vals = ctx["ratio"][win][mine]
    rec = {"id": int(sid), "n_pixels": int(ys.size), "profile": "radial"}
    extent = float(max(np.ptp(ys), np.ptp(xs))) + 1.0
    if ctx["motion"] is not None and ctx["motion"] > extent:
        rec.update(profile="none",
                   reason=f"the scene moved by {ctx['motion']:.0f} px > the shadow's "
                          f"{extent:.0f} px: plain ratio (sensor-fixed)")
        return None, None, rec
    if good.sum() < max(_RADIAL_MIN_COUNT, 12):
        rec.update(profile="none", review=True, reason="too few valid pixels for a radial profile")
        return None, None, rec
    core_y, core_x = np.nonzero(ctx["labels"][win] == sid)
    c0 = _initial_centre(sid, ctx["centres"], origin, core_y, core_x, ys, xs)
    r_eq = np.sqrt(max(core_y.size, 1) / np.pi)
    # elliptical contours for an elongated core: work in coordinates where it is round
    shape_m, elong = _shape_matrix(core_y, core_x)
    ty, tx = np.dot(shape_m, np.stack([ys - c0[0], xs - c0[1]])) + c0[:, None]
    sigma = _around_texture(ctx["median"][win], mine, ctx["weight"][win] > 0)
    centre, r_good, (rc, prof), model, merr = _fit_radial(ty, tx, good, vals, c0, r_eq, sigma)
    core = good & (ctx["weight"][win][mine] >= 1.0)
    frac, resid, sigma = _roundness(vals[good], model[good], core[good], r_good, rc, prof, sigma)
    centre = c0 + np.linalg.solve(shape_m, centre - c0) + origin  # back to pixel coordinates
    rec.update(y_centroid=float(centre[0]), x_centroid=float(centre[1]), elongation=float(elong),
               texture_sigma=float(sigma), outlier_fraction=frac,
               misfit=float(np.sqrt(np.mean(resid**2))) if resid.size else 0.0,
               min_transmission=float(prof.min()), max_transmission=float(prof.max()))
    model, merr = _silhouette_choice(win, mine, sid, ctx, (rc, prof), model, merr, sigma, rec)
    if frac > _MAX_OUTLIERS and rec["profile"] == "radial":
        rec.update(review=True, reason=f"not round: {frac:.0%} of the pixels deviate from the radial "
                                       f"profile by > {_OUTLIER_SIGMA:g} texture sigma (non-round "
                                       "dust or a scene feature inside the mask)")
    return model, merr, rec


def _radial_dof(rc):
    """Degrees of freedom of a radial profile: one per 0.5 px of its radii, plus the centre."""
    return int(np.ceil(np.ptp(rc) / 0.5)) + 3 if np.size(rc) else 3


def _silhouette_leaks(sil_model, mine, core, sigma):
    """True if the silhouette's shadow reaches beyond the core's halo (a scene feature copied).

    The core is where the shadow darkens by more than a fraction of its
    depth; 2 px beyond it a dust shadow is down to the ring's level, so a
    model darker than a quarter of its depth (or 3 texture sigmas) there
    follows something that is not this shadow.
    """
    outside = mine & ~ndimage.binary_dilation(core, iterations=2)
    if not outside.any():
        return False
    depth = 1.0 - float(sil_model[mine].min())
    return float((1.0 - sil_model[outside]).max()) > max(0.25 * depth, 3.0 * sigma)


def _silhouette_choice(win, mine, sid, ctx, radial_profile, model, merr, sigma, rec):
    """The silhouette model (`~aiflat_astro.flat.silhouette`) where it fits beyond the texture.

    Tried only where the radial model's rms misfit exceeds the texture
    sigma; both models are then scored on the same pixels (the shadow's
    valid pixels and the known T = 1 around it) by the BIC, the radial
    profile with one degree of freedom per 0.5 px of radius, the silhouette
    with its active pixels; and the silhouette's shadow must stay inside
    the core's halo (`_silhouette_leaks`).
    """
    if not ctx["silhouette"]:
        return model, merr
    from .silhouette import _bic, fit_silhouette

    region = ctx["weight"][win] > 0
    good = mine & ctx["valid"][win]
    fit = good | ~region
    data = np.where(good, ctx["ratio"][win], 1.0)
    core = ctx["labels"][win] == sid
    depth = max(0.0, 1.0 - float(np.min(radial_profile[1])))
    radial_map = np.ones(data.shape)
    radial_map[mine] = model
    if np.sqrt(np.mean((data - radial_map)[fit] ** 2)) <= _SILHOUETTE_GATE * sigma:
        return model, merr          # the radial profile fits within the texture: keep it
    sil = fit_silhouette(data, fit, mine, core, sigma=sigma, slack=_EDGE_TOLERANCE * depth)
    if sil is None:
        return model, merr
    kept = sil["kept"]
    rss_radial = float(np.sum((data - radial_map)[kept] ** 2))
    bic_radial = _bic(rss_radial, sil["n"], _radial_dof(radial_profile[0]))
    bic_sil = _bic(sil["rss"], sil["n"], sil["dof"])
    rec.update(silhouette_bic=float(bic_sil), radial_bic=float(bic_radial),
               radial_rms=float(np.sqrt(rss_radial / sil["n"])),
               silhouette_rms=float(np.sqrt(sil["rss"] / sil["n"])))
    if bic_sil >= bic_radial:
        return model, merr
    if _silhouette_leaks(sil["model"], mine, core, sigma):
        rec.update(silhouette_leak=True)
        return model, merr
    rec.update(profile="silhouette", footprint_px=float(sil["diameter"]),
               reason="not one round speck: silhouette * footprint fits better (BIC)")
    misfit = np.sqrt(sil["rss"] / max(sil["n"], 1))
    return sil["model"][mine], np.full(model.shape, misfit)


def _radial_transmission(median, ratio, valid, weight, assign, labels, centres_hint, *,
                         motion=None, silhouette=False):
    """Radial-profile transmission per shadow.

    Returns the transmission map (NaN where no model was made: those
    shadows keep the plain ratio), the uncertainty of the model (standard
    error of the radial medians) and a list of per-shadow records.  A
    shadow smaller than the scene's ``motion`` (px) keeps the plain ratio.
    """
    ctx = {"median": median, "ratio": ratio, "valid": valid, "weight": weight, "assign": assign,
           "labels": labels, "centres": centres_hint, "motion": motion, "silhouette": silhouette}
    trans = np.full(ratio.shape, np.nan)
    model_err = np.zeros(ratio.shape)
    records = []
    for sid, sl in enumerate(ndimage.find_objects(assign), start=1):
        if sl is None:
            continue
        win, origin = _shadow_window(sl, ratio.shape)
        model, merr, rec = _one_shadow(sid, win, origin, ctx)
        records.append(rec)
        if model is not None:
            mine = assign[win] == sid
            trans[win][mine] = model
            model_err[win][mine] = merr
    return trans, model_err, records


# --------------------------------------------------------------------------------------
# uncertainty from the temporal scatter of the frames
# --------------------------------------------------------------------------------------
def _band_scatter(source, r0, r1, cols, budget, bar):
    """Relative standard error of the median over rows ``r0:r1``, columns ``cols``: frame blocks in budget."""
    n, (c0, c1) = source.n_frames, cols
    per_frame = (r1 - r0) * source.frame_shape[1] * max(source.dtype.itemsize, 1)
    block = int(max(1, min(n, budget // max(4 * per_frame, 1))))
    s1 = np.zeros((r1 - r0, c1 - c0))
    s2 = np.zeros((r1 - r0, c1 - c0))
    shift = None
    for i in range(0, n, block):
        chunk = source.read_rows(range(i, min(i + block, n)), r0, r1)[:, :, c0:c1].astype(np.float64)
        if chunk.ndim == 4:  # RGB frames: the scatter of the channel mean, as the flat is made on
            chunk = chunk.mean(axis=-1)
        if shift is None:
            shift = chunk[0].copy()  # shifted sums: numerically stable variance
        chunk -= shift
        s1 += chunk.sum(axis=0)
        s2 += np.square(chunk).sum(axis=0)
        if bar is not None:
            bar.update(chunk.shape[0])
    var = np.clip((s2 - s1 * s1 / n) / (n - 1), 0, None)
    mean = np.abs(shift + s1 / n)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(mean > 0, 1.2533 * np.sqrt(var / n) / mean, 0.0)


def _temporal_sigma(frames, region, *, mem_limit="256MB", progress_bar=False):
    """Relative standard error of the median at the ``region`` pixels from the frames' temporal scatter.

    ``sigma_median = 1.2533 * std_t / sqrt(N)`` (normal approximation),
    divided by the temporal mean (relative, so that it does not depend on
    the scaling of the median: RGB channel mean, raw colour mosaic phases),
    computed in one streaming pass over row bands holding masked pixels, in
    bounded memory.  Returns a float64 map (0 outside ``region``).
    """
    from ..io.frames import open_frames

    source = open_frames(frames)
    try:
        colour = len(source.frame_shape) == 3 and source.frame_shape[-1] == 3
        if tuple(source.frame_shape[:2]) != region.shape or not (len(source.frame_shape) == 2 or colour):
            raise InputError(f"frames of shape {source.frame_shape} do not match the median shape {region.shape}")
        n = source.n_frames
        rows = np.flatnonzero(region.any(axis=1))
        sigma = np.zeros(region.shape)
        if rows.size == 0 or n < 2:
            return sigma
        cols = np.flatnonzero(region.any(axis=0))
        c0, c1 = int(cols[0]), int(cols[-1]) + 1
        budget = parse_size(mem_limit)
        # bands of consecutive masked rows; each band read frame-block by frame-block
        breaks = np.flatnonzero(np.diff(rows) > 1)
        bands = np.split(rows, breaks + 1)
        bar = None
        if progress_bar:
            from tqdm.auto import tqdm

            bar = tqdm(total=n * len(bands), desc="flat uncertainty", unit="frame")
        for band in bands:
            r0, r1 = int(band[0]), int(band[-1]) + 1
            sigma[r0:r1, c0:c1] = _band_scatter(source, r0, r1, (c0, c1), budget, bar)
        if bar is not None:
            bar.close()
        sigma[~region] = 0.0
        return sigma
    finally:
        if source is not frames:
            source.close()


# --------------------------------------------------------------------------------------
# provenance
# --------------------------------------------------------------------------------------
_MEDIAN_CARDS = ("OBSERVER", "INSTRUME", "TELESCOP", "DATE-OBS", "NCOMBINE", "FRAME0", "FRAME1", "FRAMESTP",
                 "BAYERPAT")


_AI_KEYS = ("ai_model", "ai_prompt", "prompt_sha256", "response_sha256")


def _median_inputs(median_header):
    """The median's inputs (``PROVn``/``PROVSHAn`` cards) as provenance records."""
    inputs = []
    i = 1
    while f"PROV{i}" in median_header:
        inputs.append({"path": str(median_header[f"PROV{i}"]), "sha256": median_header.get(f"PROVSHA{i}")})
        i += 1
    return inputs


def _flat_header(median_header, prov):
    header = fits.Header()
    for key in _MEDIAN_CARDS:
        if key in median_header:
            header[key] = median_header[key]
    header["BUNIT"] = ("", "dimensionless: divide science frames by the flat")
    header["ROWORDER"] = ("TOP-DOWN", "row 0 = top row of the sensor (SER order)")
    add_provenance_cards(header, prov)
    header[PROV_KEY] = json.dumps(prov, sort_keys=True, default=str, ensure_ascii=True,
                                  separators=(",", ":"))
    return header


def _json_safe(value):
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return f"<array {value.shape} {value.dtype}>"
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


# --------------------------------------------------------------------------------------
# public
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FlatOptions:
    """The options of `make_flat` besides its inputs (the same names as its keywords).

    Parameters
    ----------
    floor, profile, min_signal, inpaint_options, mem_limit, progress_bar, full
        See `make_flat`.
    scene_motion, silhouette
        See `make_flat`.

    Examples
    --------
    >>> FlatOptions(floor=0.1).profile
    'auto'
    """

    floor: float = 0.05
    profile: str = "auto"
    min_signal: object = None
    inpaint_options: object = None
    mem_limit: object = "256MB"
    progress_bar: bool = False
    full: bool = False
    scene_motion: object = "auto"
    silhouette: bool = False

    def __post_init__(self):
        if self.profile not in FLAT_PROFILES:
            raise InputError(f"unknown flat profile {self.profile!r}; "
                             f"choose one of {', '.join(FLAT_PROFILES)}")
        try:
            floor = float(self.floor)
        except (TypeError, ValueError):
            raise InputError(f"floor must be a number between 0 and 1, got {self.floor!r}") \
                from None
        if not 0 < floor < 1:
            raise InputError(f"floor must be between 0 and 1, got {self.floor}")
        object.__setattr__(self, "floor", floor)
        motion = self.scene_motion
        if motion is None or (isinstance(motion, str) and motion == "auto"):
            return
        number = not isinstance(motion, (str, bytes, bool)) and np.isscalar(motion)
        if not number or not float(motion) >= 0:
            raise InputError("scene_motion must be 'auto', None or a number of pixels >= 0, "
                             f"got {motion!r}")


def _flat_options(options, keywords):
    """`FlatOptions` from an ``options`` object and/or `make_flat`'s keywords (keywords win)."""
    if options is not None and not isinstance(options, FlatOptions):
        raise InputError(f"options must be a FlatOptions, got {type(options).__name__}")
    unknown = set(keywords) - {f.name for f in fields(FlatOptions)}
    if unknown:
        raise InputError(f"make_flat got unknown option(s) {', '.join(sorted(unknown))}")
    return replace(options or FlatOptions(), **keywords)


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


def _transmission_model(med, det, w, valid, ratio, chosen, motion, silhouette=False):
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
                                                      silhouette=silhouette)
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


def _dust_flat(med, det, inpaint, frames, opts, min_signal):
    """Clean estimate, transmission model, the flat's pixels, DQ and uncertainty (mask not empty)."""
    from .estimators.local import run_inpainter

    w = np.asarray(det.weight, dtype=np.float32)
    region, dq = w > 0, det.dq.copy()
    clean, info = run_inpainter(inpaint, med, det, frames=frames, **(opts.inpaint_options or {}))
    chosen = info.get("profile", "radial") if opts.profile == "auto" else opts.profile
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = med.astype(np.float64) / clean.astype(np.float64)
    defects = (dq & (DustDQ.HOT | DustDQ.COLD | DustDQ.SATURATED)) > 0
    valid = region & np.isfinite(ratio) & (clean > min_signal) & np.isfinite(med) & ~defects
    motion = _scene_motion(frames, region, opts, det) if chosen == "radial" else None
    trans, fallback, model_err, records, assign = _transmission_model(
        med, det, w, valid, ratio, chosen, motion, opts.silhouette)
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


def make_flat(median, dust_mask, *, weight=None, inpaint="local", frames=None, options=None,
              **keywords):
    """Make a synthetic dust flat from a temporal median and a dust mask.

    Parameters
    ----------
    median : `~astropy.nddata.CCDData` or `~numpy.ndarray`
        2-D temporal median (``median_combine``), bias/dark subtracted if the
        frames carry a pedestal (a pedestal makes the shadows look shallower).
    dust_mask : `~aiflat_astro.detection.DustDetection`, or array
        The dust: a detection (DQ, weight, catalog), a uint8 DQ array with
        `~aiflat_astro.dq.DustDQ` bits, or a boolean mask (True = dust).
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
    opts = _flat_options(options, keywords)
    if opts.full:  # the whole gain table from shifted images: aiflat_astro.flat.fullflat (owner: kll)
        from .fullflat import make_full_flat

        return make_full_flat(median, frames, dust_mask=dust_mask, progress_bar=opts.progress_bar,
                              **(opts.inpaint_options or {}))
    from .estimators.local import get_inpainter

    get_inpainter(inpaint)  # an unknown method is an error even when the mask is empty
    med, median_header = _as_median(median)
    det = _as_detection(dust_mask, weight, med.shape)
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
