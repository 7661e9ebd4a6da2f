"""The radial transmission model of a dust flat: each shadow's robust radial profile of ``median / clean``.

Dust shadows are pupil footprints (discs, or annuli behind a central
obstruction) convolved with the grain, hence round: the azimuthal median of
the ratio about a shadow's centre removes the scene's texture and keeps the
shadow's shape (the donut hole, the bright Fresnel rim).  See
`aiflat_astro.flat.make_flat` (``profile='radial'``).
"""


import logging

import numpy as np
from scipy import ndimage, optimize

from .._imaging.robust import robust_sigma
from ._windows import window_mean, window_median_mad


log = logging.getLogger(__name__)

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
_SHAPE_REACH = 2          # the dust's own non-round shape is kept up to this many px beyond the core
_MIN_HALO_PIXELS = 12     # fewer halo pixels: the measured clean's noise is unknown, the radial model stays
_CORE_FRACTION = 0.2      # a measured shadow's core: darker than this fraction of its depth (the notes' specks)


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
    """Median of the sorted samples ``(rs, vs)`` within ``at ± half_width`` (≥ ``n_min`` samples).

    Returns the mean radius of each window's samples, the medians and their
    standard error, ``1.2533 σ / √n`` with σ from the MAD.  All windows at
    once (`~aiflat_astro.flat._windows`), bit-identical to a loop of
    ``np.median`` per window.
    """
    lo, hi = _median_windows(rs, at, half_width, n_min)
    rad = window_mean(rs, lo, hi)
    med, mad = window_median_mad(vs, lo, hi)
    err = 1.2533 * 1.4826 * mad / np.sqrt(hi - lo)
    return rad, med, err


def _median_windows(rs, at, half_width, n_min):
    """The windows ``[lo, hi)`` of the sorted radii ``rs`` about ``at``, widened to ``n_min`` samples.

    A window holding fewer than ``n_min`` samples becomes the ``n_min``
    samples nearest in radius (fewer only if ``rs`` has fewer).
    """
    half_width = np.broadcast_to(half_width, at.shape)
    lo = np.searchsorted(rs, at - half_width)
    hi = np.searchsorted(rs, at + half_width)
    n_min = min(n_min, rs.size)
    narrow = hi - lo < n_min
    j = np.searchsorted(rs, at[narrow])
    hi_w = np.minimum(rs.size, np.maximum(0, j - n_min // 2) + n_min)
    lo[narrow] = np.maximum(0, hi_w - n_min)
    hi[narrow] = hi_w
    return lo, hi


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
    scatter = robust_sigma(vs - np.interp(rs, rad, med))
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
    return robust_sigma(rel)


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
        sigma = robust_sigma(resid)
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
    core_y, core_x = _measured_core(ctx, win, mine, sid, ys, xs, good, vals)
    centres = ctx["centres"] if core_y is None else {}
    if core_y is None:
        core_y, core_x = np.nonzero(ctx["labels"][win] == sid)
    else:
        rec["core"] = "measured"   # from the ratio under a measured scene, not the detection's
    c0 = _initial_centre(sid, centres, origin, core_y, core_x, ys, xs)
    r_eq = np.sqrt(max(core_y.size, 1) / np.pi)
    # elliptical contours for an elongated core: work in coordinates where it is round
    shape_m, elong = _shape_matrix(core_y, core_x)
    ty, tx = np.dot(shape_m, np.stack([ys - c0[0], xs - c0[1]])) + c0[:, None]
    sigma = _around_texture(ctx["median"][win], mine, ctx["weight"][win] > 0)
    centre, r_good, (rc, prof), model, merr = _fit_radial(ty, tx, good, vals, c0, r_eq, sigma)
    slope = _edge_slack(np.hypot(ty - centre[0], tx - centre[1]), rc, prof) / _PIXEL_SLACK
    core = good & (ctx["weight"][win][mine] >= 1.0)
    frac, resid, sigma = _roundness(vals[good], model[good], core[good], r_good, rc, prof, sigma)
    centre = c0 + np.linalg.solve(shape_m, centre - c0) + origin  # back to pixel coordinates
    rec.update(y_centroid=float(centre[0]), x_centroid=float(centre[1]), elongation=float(elong),
               texture_sigma=float(sigma), outlier_fraction=frac,
               misfit=float(np.sqrt(np.mean(resid**2))) if resid.size else 0.0,
               min_transmission=float(prof.min()), max_transmission=float(prof.max()))
    model, merr = _silhouette_choice(win, mine, sid, ctx, (rc, prof), model, merr, sigma, rec)
    if rec["profile"] == "radial":
        model = _measured_shape(ctx, win, mine, sid, (good, vals, model, slope), sigma, frac, rec)
    if frac > _MAX_OUTLIERS and rec["profile"] == "radial":
        rec.update(review=True, reason=f"not round: {frac:.0%} of the pixels deviate from the radial "
                                       f"profile by > {_OUTLIER_SIGMA:g} texture sigma (non-round "
                                       "dust or a scene feature inside the mask)")
    return model, merr, rec


def _measured_core(ctx, win, mine, sid, ys, xs, good, vals):
    """Under a measured scene, the dust core from the ratio itself: ``(ys, xs)`` or ``(None, None)``.

    Where the scene under the shadow was measured (``ctx['noise']`` finite),
    ``ratio = median / clean`` is the transmission to the measured noise, so
    the core — the pixels darkened by more than `_CORE_FRACTION` of the
    shadow's depth, the notes' definition of a speck — comes from it rather
    than from the detection's mask, which may be off-centre or smaller than
    the shadow.  Kept only if its largest component holds at least
    `_RADIAL_MIN_COUNT` pixels and if the detection's core holds less than
    half of it (the detection then missed most of the shadow's core; where it
    holds most, its core and centre stay: they are less noisy).
    """
    if _shadow_noise(ctx, win, mine) is None or not good.any():
        return None, None
    dark = 1.0 - ndimage.median_filter(_as_window(vals, good, mine), size=3)[mine]
    depth = float(np.max(dark[good]))
    if depth <= 0:
        return None, None
    in_core = good & (dark > _CORE_FRACTION * depth)
    inside = np.zeros(mine.shape, bool)
    inside[ys[in_core], xs[in_core]] = True
    lab, n = ndimage.label(inside)
    if n == 0:
        return None, None
    biggest = 1 + int(np.argmax(ndimage.sum(inside, lab, range(1, n + 1))))
    measured = lab == biggest
    given = ctx["labels"][win] == sid
    if measured.sum() < _RADIAL_MIN_COUNT or (given & measured).sum() >= 0.5 * measured.sum():
        return None, None         # the detection's core holds most of the measured one: keep it
    core = np.nonzero(measured)
    if _shape_matrix(*core)[1] > _ELONG_MAX:
        return None, None         # not a speck's core: the clean estimate's error along a scene edge
    return core


def _shadow_noise(ctx, win, mine):
    """The measured clean's relative noise over a shadow's pixels, or None where it was not measured."""
    if ctx["noise"] is None:
        return None
    noise = ctx["noise"][win][mine]
    return noise if np.all(np.isfinite(noise)) else None


def _as_window(vals, good, mine):
    """The values of a shadow's pixels back on its window (1.0 elsewhere and where not ``good``)."""
    out = np.ones(mine.shape)
    out[mine] = np.where(good, vals, 1.0)
    return out


def _measured_shape(ctx, win, mine, sid, fit, sigma, frac, rec):
    """The radial model, or where the scene under the shadow was measured, the dust's own shape.

    With the measured clean's noise (``ctx['noise']``) every such shadow gets
    `_wiener_shape`; without it (noise unknown) a shadow that fails the
    roundness test gets `_keep_measured_shape`.  ``fit`` is ``(good, vals,
    model, slope)`` over the shadow's pixels.
    """
    good, vals, model, slope = fit
    noise = _shadow_noise(ctx, win, mine)
    if noise is not None:
        return _wiener_shape(noise, slope, mine, good, vals, model, sigma, rec,
                             round_shadow=frac <= _MAX_OUTLIERS)
    if ctx["measured"] is not None and frac > _MAX_OUTLIERS:
        return _keep_measured_shape(ctx["measured"][win][mine], ctx["weight"][win], mine,
                                    ctx["labels"][win] == sid, good, vals, model, rec)
    return model


def _shape_gain(resid, near_core, halo):
    """The fraction of the non-round misfit that is dust: ``1 - noise / (noise + shape)``, 0..1.

    ``resid`` is ``ratio / radial - 1``.  In the soft halo (beyond the ring
    the radial profile already models) the dust is round and faint, so the
    misfit there is the clean estimate's own error; near the core it is that
    error plus the dust's non-round shape.  The gain is that of a Wiener
    filter with one number per shadow, 0 when the halo has too few pixels.
    """
    if np.count_nonzero(halo) < _MIN_HALO_PIXELS or not near_core.any():
        return 0.0, np.nan
    noise = float(np.mean(resid[halo] ** 2))
    total = float(np.mean(resid[near_core] ** 2))
    return (max(0.0, 1.0 - noise / total) if total > 0 else 0.0), np.sqrt(noise)


def _keep_measured_shape(measured, weight_win, mine, core_win, good, vals, model, rec):
    """Where the clean estimate holds the scene under the shadow, keep the dust's non-round shape.

    With a clean estimate measured under the shadow (the seeing jitter's
    gradient, `~aiflat_astro.flat.estimators.jitter.jitter_clean`) the ratio
    ``median / clean`` carries the dust and the estimate's noise, not the
    scene's texture: what the radial profile misses there (a sharp speck
    that is not round, a clump, a fibre) is the dust, and copying it into
    the flat is right.  Only for a shadow that fails the roundness test
    (`_roundness`: more than `_MAX_OUTLIERS` of its core beyond the texture
    and edge tolerance): the noise of an integrated gradient grows away from
    the known boundary, so inside a large, shallow, round shadow the halo's
    noise underestimates it.  ``T = radial + g (ratio - radial)`` within
    `_SHAPE_REACH` px of the core, ``g`` from `_shape_gain`; the radial
    profile elsewhere.  Shadows not wholly measured keep the radial model.
    """
    if not np.all(measured):
        return model
    near = ndimage.binary_dilation(core_win, iterations=_SHAPE_REACH)[mine] & good
    halo = good & ~ndimage.binary_dilation(core_win, iterations=_SHAPE_REACH + 2)[mine] \
        & (weight_win[mine] < 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        resid = np.where(good, vals / model - 1.0, 0.0)
    gain, noise = _shape_gain(resid, near, halo)
    rec.update(shape_gain=float(gain), measured_noise=float(noise))
    if gain <= 0:
        return model
    out = model.copy()
    out[near] = model[near] + gain * (vals[near] - model[near])
    return out


def _local_mean(values, good, mine, size=3):
    """Mean of ``values`` (one per pixel of ``mine``) over ``size`` x ``size`` px of the ``good`` ones."""
    v = np.zeros(mine.shape)
    g = np.zeros(mine.shape)
    v[mine] = np.where(good, values, 0.0)
    g[mine] = good
    num = ndimage.uniform_filter(v, size)[mine]
    den = ndimage.uniform_filter(g, size)[mine]
    return np.where(den > 0, num / np.maximum(den, 1e-12), 0.0)


def _contour_gain(resid, random2, slope, good):
    """Wiener gain for a dust contour displaced from the radial profile's: ``δ² s² / (δ² s² + σ²)``.

    A contour that is not the profile's circle (a speck not quite round, its
    edge pixels integrating a sharp edge, a core larger than the given mask)
    is the profile moved by some ``δ`` px, a misfit ``δ × |dT/dr|``
    (``slope``, ``s``): on the edges, nil on the plateau and in a soft
    shadow's shallow wings.  ``σ²`` is the random error (``random2``) plus the
    clean estimate's systematic error, the excess misfit where the profile
    is flat (its lower half of slopes); ``δ²`` the least-squares fit of the
    remaining excess on ``s²``.
    """
    s2 = np.where(good, slope, 0.0) ** 2
    excess = np.where(good, resid ** 2 - random2, 0.0)
    flat_part = good & (s2 <= np.median(s2[good]))
    systematic = max(0.0, float(np.mean(excess[flat_part]))) if flat_part.any() else 0.0
    denom = float(np.sum(s2 ** 2))
    delta2 = max(0.0, float(np.sum(s2 * (excess - systematic) * good)) / denom) if denom > 0 else 0.0
    signal = delta2 * s2
    with np.errstate(divide="ignore", invalid="ignore"):
        gain = np.where(good & (signal > 0), signal / (signal + random2 + systematic), 0.0)
    return gain, float(np.sqrt(delta2))


def _beyond_texture_gain(resid, random2, mine, good, texture_sigma):
    """Wiener gain for a misfit beyond any error of the clean estimate: ``1 - σ² / ⟨resid²⟩``.

    ``σ²`` is the random error plus the scene's texture variance (the clean
    estimate cannot be further off than the scene it replaces varies); the
    local power over 3 x 3 px.  What exceeds it is the dust's own shape (a
    clump, a fibre), wherever it lies.
    """
    bound = texture_sigma ** 2 if np.isfinite(texture_sigma) else np.inf
    power = _local_mean(resid ** 2, good, mine)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(good & (power > 0), np.clip(1.0 - (random2 + bound) / power, 0.0, 1.0), 0.0)


def _wiener_shape(noise, slope, mine, good, vals, model, texture_sigma, rec, *, round_shadow=True):
    """Under a measured scene, keep what the ratio holds beyond its errors: the dust's own shape.

    With the scene under the shadow measured from the frames
    (`~aiflat_astro.flat.estimators.jitter.jitter_clean`), ``ratio = median /
    clean`` is the dust plus the estimate's error: its noise, known at every
    pixel (``noise``, relative, from two halves of the frames integrated
    apart), and a systematic part common to both halves.  What the radial
    profile misses beyond them is the dust's non-round shape.  Per pixel a
    Wiener gain for a displaced contour (`_contour_gain`); for a shadow that
    fails the roundness test (``round_shadow`` False: a clump, a fibre) the
    larger of it and the gain for a misfit beyond the texture
    (`_beyond_texture_gain`; in a round shadow such a misfit is a scene
    feature the clean estimate missed, which the radial profile rejects):
    ``T = radial + g (ratio - radial)``.  No tuned threshold.
    """
    resid = np.where(good, vals - model, 0.0)
    random2 = np.where(good, (vals * noise) ** 2, 0.0)
    if not good.any():
        return model
    contour, delta = _contour_gain(resid, random2, slope, good)
    beyond = _beyond_texture_gain(resid, random2, mine, good, texture_sigma)
    if round_shadow:   # a round shadow's non-round part is within its depth; beyond it: a scene feature
        beyond = np.where(np.abs(resid) <= 1.0 - float(model.min()), beyond, 0.0)
    gain = np.maximum(contour, beyond)
    rec.update(shape_gain=float(gain[good].max()), contour_offset_px=delta,
               measured_noise=float(np.sqrt(np.mean(random2[good]))))
    return np.where(good, model + gain * resid, model)


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
                         motion=None, silhouette=False, measured=None, measured_noise=None):
    """Radial-profile transmission per shadow.

    Returns the transmission map (NaN where no model was made: those
    shadows keep the plain ratio), the uncertainty of the model (standard
    error of the radial medians) and a list of per-shadow records.  A
    shadow smaller than the scene's ``motion`` (px) keeps the plain ratio;
    ``measured`` (bool map, optional) marks the pixels whose clean estimate
    holds the scene under the shadow (`_keep_measured_shape`) and
    ``measured_noise`` (float map, NaN where not measured) the relative noise
    of that clean estimate, which lets every measured shadow keep its shape
    beyond the noise (`_wiener_shape`).
    """
    ctx = {"median": median, "ratio": ratio, "valid": valid, "weight": weight, "assign": assign,
           "labels": labels, "centres": centres_hint, "motion": motion, "silhouette": silhouette,
           "measured": None if measured is None else np.asarray(measured, dtype=bool),
           "noise": None if measured_noise is None else np.asarray(measured_noise, dtype=np.float64)}
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
