"""The measured flat's per-region solution: scene, frame levels, transmission, radial profile.

Part of the measured flat (`aiflat_astro.flat.estimators.measured`): steps 3
to 6 of its method on the boxes kept by the pass over the frames, and the
decision per region (measured or local, and why).
"""

import warnings

import numpy as np
from scipy import ndimage as ndi

from ._measured_sampling import _sample_mask_stack, _sample_stack

_MAD_TO_SIGMA = 1.4826
_MEDIAN_EFFICIENCY = 1.2533  # std of the median / std of the mean, Gaussian noise


def _nanmedian(a, axis=0):
    """Median along ``axis`` ignoring NaN (NaN where all are NaN).

    Much faster than `numpy.nanmedian` on short axes (one sort, no masked arrays).
    """
    a = np.moveaxis(np.asarray(a), axis, 0)
    if a.shape[0] == 0:
        return np.full(a.shape[1:], np.nan, dtype=np.result_type(a.dtype, np.float32))
    s = np.sort(a, axis=0)  # NaN sorts last
    n = np.sum(~np.isnan(a), axis=0)
    lo = np.maximum((n - 1) // 2, 0)[None]
    hi = np.maximum(n // 2, 0)[None]
    med = 0.5 * (np.take_along_axis(s, lo, 0)[0] + np.take_along_axis(s, hi, 0)[0])
    return np.where(n > 0, med, np.nan)


def _poly_terms(ys, xs, degree):
    return np.column_stack([ys**i * xs**j for i in range(degree + 1)
                            for j in range(degree + 1 - i)])


def _robust_surface(values, ys, xs, *, degree=2, nsigma=3.0, n_iter=4):
    """Robust least-squares polynomial surface; returns a callable ``f(ys, xs)``.

    Coordinates are scaled to about [-1, 1] for conditioning.
    """
    if np.size(values) == 0:  # nothing to fit: a flat surface of 1
        return lambda yy, xx: np.ones(np.shape(yy))
    cy, cx = np.mean(ys), np.mean(xs)
    sy = max(np.ptp(ys) / 2, 1.0)
    sx = max(np.ptp(xs) / 2, 1.0)
    ny, nx = (ys - cy) / sy, (xs - cx) / sx
    keep = np.isfinite(values)
    n_terms = (degree + 1) * (degree + 2) // 2
    if keep.sum() < 4 * n_terms:
        degree, n_terms = 0, 1
    coef = np.zeros(n_terms)
    coef[0] = np.nanmedian(values) if keep.any() else 1.0
    for _ in range(n_iter):
        if keep.sum() < 2 * n_terms:
            break
        coef, *_ = np.linalg.lstsq(_poly_terms(ny[keep], nx[keep], degree), values[keep],
                                   rcond=None)
        resid = values - _poly_terms(ny, nx, degree) @ coef
        # the MAD about zero (the fit's residuals), not about their median as robust_sigma
        sigma = _MAD_TO_SIGMA * np.nanmedian(np.abs(resid[keep]))
        if not sigma > 0:
            break
        new = np.isfinite(values) & (np.abs(resid) <= nsigma * sigma)
        if np.array_equal(new, keep):
            break
        keep = new

    def surface(yy, xx):
        terms = _poly_terms(((yy - cy) / sy).ravel(), ((xx - cx) / sx).ravel(), degree)
        return (terms @ coef).reshape(np.shape(yy))

    return surface


# ---------------------------------------------------------------------------
# radial denoising (shadows are round pupil footprints)
# ---------------------------------------------------------------------------
_RADIAL_STEP = 0.5


def _radial_fit(ys, xs, vals, wts, centre, step=_RADIAL_STEP):
    """Weighted radial profile about ``centre``; returns (model, model_err, chi2)."""
    r = np.hypot(ys - centre[0], xs - centre[1])
    idx = (r / step).astype(np.int64)
    sw = np.bincount(idx, wts)
    swv = np.bincount(idx, wts * vals)
    swr = np.bincount(idx, wts * r)
    good = sw > 0
    rc, mean, err = swr[good] / sw[good], swv[good] / sw[good], 1.0 / np.sqrt(sw[good])
    model = np.interp(r, rc, mean)
    model_err = np.interp(r, rc, err)
    chi2 = float(np.sum(wts * (vals - model) ** 2))
    return model, model_err, chi2, int(good.sum())


def _radial_denoise(trans, err, pixels, ring, *, chi2_max):
    """Replace a shadow's measured transmission by its radial profile if it is round.

    The centre is fitted (Nelder-Mead on chi^2); the profile is accepted when
    the reduced chi^2 of the measured values about it is at most ``chi2_max``
    (the shadow is round within the noise).  Returns (trans, err, chi2_red,
    used) with the pixels of ``pixels`` replaced when used.
    """
    from scipy import optimize

    r_pix = np.argwhere(pixels)
    if r_pix.shape[0] < 12:
        return trans, err, np.nan, False
    deficit = np.clip(1.0 - np.nan_to_num(trans[pixels], nan=1.0), 0, None)
    c0 = (np.average(r_pix, axis=0, weights=deficit) if deficit.sum() > 0
          else r_pix.mean(axis=0))
    r_max = np.hypot(*(r_pix - c0).T).max() + 3.0
    yy, xx = np.mgrid[0:trans.shape[0], 0:trans.shape[1]]
    near = np.hypot(yy - c0[0], xx - c0[1]) <= r_max
    use = (pixels | (ring & near)) & np.isfinite(trans) & np.isfinite(err) & (err > 0)
    if use.sum() < 12:
        return trans, err, np.nan, False
    ys, xs = yy[use].astype(float), xx[use].astype(float)
    vals = trans[use]
    floor = max(float(np.median(err[use])) * 0.3, 1e-6)
    wts = 1.0 / np.maximum(err[use], floor) ** 2

    def cost(c):
        return _radial_fit(ys, xs, vals, wts, c)[2]

    simplex = np.array([c0, c0 + (0.5, 0.0), c0 + (0.0, 0.5)])
    res = optimize.minimize(cost, c0, method="Nelder-Mead",
                            options={"xatol": 0.01, "fatol": 1e-6, "initial_simplex": simplex,
                                     "maxiter": 300})
    centre = res.x if np.all(np.isfinite(res.x)) and np.hypot(*(res.x - c0)) < 3 else c0
    model, model_err, chi2, n_bins = _radial_fit(ys, xs, vals, wts, centre)
    dof = max(1, vals.size - n_bins - 2)
    chi2_red = chi2 / dof
    if chi2_red > chi2_max:
        return trans, err, chi2_red, False
    out_t, out_e = trans.copy(), err.copy()
    sel = pixels[use]
    out_t[pixels & use] = model[sel]
    out_e[pixels & use] = model_err[sel]
    return out_t, out_e, chi2_red, True


# ---------------------------------------------------------------------------
# the measurement
# ---------------------------------------------------------------------------
def _combine(stack, estimator, *, nsigma=3.0):
    """Combine a (n, ...) stack with NaNs along axis 0.

    Returns ``(value, standard_error, n_used)``.  ``'mean'`` is a mean
    clipped at ``nsigma`` robust sigmas (MAD) around the median: as robust
    as the median to outliers, and 1.25x more precise on Gaussian noise.
    """
    med = _nanmedian(stack, axis=0)
    dev = np.abs(stack - med[None])
    sigma = _MAD_TO_SIGMA * _nanmedian(dev, axis=0)
    if estimator == "median":
        n_used = np.isfinite(stack).sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            err = _MEDIAN_EFFICIENCY * sigma / np.sqrt(n_used)
        return med, err, n_used
    with np.errstate(invalid="ignore"):
        keep = dev <= nsigma * np.maximum(sigma, 1e-12 * np.abs(med))[None]
    kept = np.where(keep, stack, np.nan)
    del dev, keep
    n_used = np.isfinite(kept).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(kept, axis=0)
        err = np.nanstd(kept, axis=0, ddof=1) / np.sqrt(n_used)
    return mean, err, n_used


_CHUNK = 32  # frames resampled at once in a region's solution (bounds the temporaries)


def _frame_chunks(n, size=_CHUNK):
    """Slices of ``range(n)`` of at most ``size`` frames."""
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def _initial_scene(region, n_min, min_signal, estimator):
    """The scene box from the samples that fell outside the dust: ``(filled, usable)``.

    Scene points seen clean by fewer than ``n_min`` frames, or darker than
    ``min_signal`` times the box level (sky beyond the limb), are not usable
    and hold the box level.
    """
    ok = region.reg_ok
    scene, _, _ = _combine(np.where(ok, region.reg, np.float32(np.nan)), estimator)
    usable = (ok.sum(axis=0) >= n_min) & np.isfinite(scene)
    level = np.median(scene[usable]) if usable.any() else np.nan
    if np.isfinite(level) and level > 0:
        usable &= scene > min_signal * level
    return np.where(usable, scene, level if np.isfinite(level) else 1.0), usable


def _ratio_stack(region, shifts, filled_scene, scene_bad):
    """``frame_k(x) / O(x - s_k)`` on the sensor box for every frame (NaN where unusable)."""
    y0, y1, x0, x1 = region.box
    v0, _, u0, _ = region.sbox
    raw = region.raw
    coeffs = ndi.spline_filter(filled_scene, order=3, mode="nearest")
    ratio = np.empty(raw.shape, np.float32)
    for k in _frame_chunks(raw.shape[0]):
        dy, dx = shifts[k, 0], shifts[k, 1]
        # O(x - s_k) for x in the sensor box: scene-box coordinates x - s_k - (v0, u0)
        o_k, inside = _sample_stack(coeffs, y0 - v0, y1 - v0, x0 - u0, x1 - u0, -dy, -dx,
                                    order=3)
        unusable = _sample_mask_stack(scene_bad, y0 - v0, y1 - v0, x0 - u0, x1 - u0, -dy, -dx)
        good = inside & ~unusable & np.isfinite(raw[k]) & (o_k > 0)
        ratio[k] = np.where(good, raw[k] / np.where(good, o_k, 1.0), np.nan)
    return ratio


def _frame_levels(ratio, ring):
    """Per-frame level ``c_k`` (median ratio on the ring, normalised; NaN where unknown)."""
    ring_vals = ratio[:, ring]
    c = _nanmedian(ring_vals, axis=1) if ring_vals.shape[1] else np.ones(ratio.shape[0])
    c = np.where(np.isfinite(c) & (c > 0), c, np.nan)
    c /= np.nanmedian(c) if np.any(np.isfinite(c)) else 1.0
    return c


def _scene_update(region, shifts, trans, n_used, c, n_min, estimator):
    """The scene from every sample, the transmission ``trans`` and levels ``c`` divided out.

    Measured values in the whole box (Fresnel rims included), 1 where clean;
    outside the box only the clean samples (other shadows are excluded there).
    """
    y0, _, x0, _ = region.box
    v0, v1, u0, u1 = region.sbox
    t_full = np.where(np.isfinite(trans) & (n_used >= n_min), trans, np.nan)
    t_full = np.where(np.isfinite(t_full), t_full, np.where(region.clean, 1.0, np.nan))
    t_fill = np.nan_to_num(t_full, nan=1.0)
    t_undefined = ~np.isfinite(t_full)
    reg, ok = region.reg, region.reg_ok
    samples = np.empty_like(reg)
    for k in _frame_chunks(reg.shape[0]):
        dy, dx = shifts[k, 0], shifts[k, 1]
        # T(u + s_k) for u in the scene box: sensor-box coordinates u + s_k - (y0, x0)
        t_k, t_in = _sample_stack(t_fill, v0 - y0, v1 - y0, u0 - x0, u1 - x0, dy, dx, order=1)
        t_unk = _sample_mask_stack(t_undefined, v0 - y0, v1 - y0, u0 - x0, u1 - x0, dy, dx)
        use = np.where(t_in, ~t_unk & (t_k > 0.05), ok[k])
        use &= region.reg_inframe[k] & np.isfinite(c[k])[:, None, None]
        ck = np.where(np.isfinite(c[k]), c[k], 1.0)[:, None, None]
        samples[k] = np.where(use, reg[k] / (np.where(t_in, t_k, 1.0) * ck), np.nan)
    return _combine(samples, estimator)[0]


def _solve_region(region, shifts, *, n_min, min_signal, n_iter, surface_degree, estimator):
    """Measured transmission inside one region's box (see module docstring).

    Returns ``(trans, err, n_used)`` on the sensor box.
    """
    filled_scene, scene_ok = _initial_scene(region, n_min, min_signal, estimator)
    for it in range(max(1, n_iter)):
        ratio = _ratio_stack(region, shifts, filled_scene, ~scene_ok)
        c = _frame_levels(ratio, region.ring)
        ratio /= c[:, None, None].astype(np.float32)
        trans, err, n_used = _combine(ratio, estimator)
        if it + 1 < n_iter:  # alternating update of the scene
            scene_all = _scene_update(region, shifts, trans, n_used, c, n_min, estimator)
            filled_scene = np.where(scene_ok & np.isfinite(scene_all), scene_all, filled_scene)
    # remove the smooth response across the box (vignetting, level)
    yy, xx = np.mgrid[0:trans.shape[0], 0:trans.shape[1]].astype(np.float64)
    sel = region.ring & np.isfinite(trans)
    surface = _robust_surface(trans[sel], yy[sel], xx[sel], degree=surface_degree)(yy, xx)
    return trans / surface, err / surface, n_used


#: a measured transmission outside this range (1st..99th percentile) is not trusted: local instead
_PLAUSIBLE = (0.0, 1.5)


def _default_min_frames(n):
    """``n_min``: 5 (or a tenth of the frames) on videos, fewer on small sets (KLL-class)."""
    return max(min(5, max(3, int(0.4 * n))), n // 10)


def _refine_measured(r, trans, err, good, radial, chi2_max):
    """A measured region's radial profile (when round) and its few unmeasured pixels filled.

    Returns ``(trans, err, chi2_red, profile)``.
    """
    chi2_red, profile = np.nan, "plain"
    if radial:
        trans_r, err_r, chi2_red, used = _radial_denoise(
            np.where(good, trans, np.nan), np.where(good, err, np.nan), r.pixels & good,
            r.clean & good, chi2_max=np.inf if radial is True else float(chi2_max))
        if used:
            trans, err, profile = np.where(r.pixels & good, trans_r, trans), err_r, "radial"
    if not good[r.pixels].all():
        # a few pixels without enough frames: interpolate them from measured neighbours
        from .local import inpaint_local

        missing = r.pixels & ~good
        trans = inpaint_local(np.where(good, trans, 1.0).astype(np.float32), missing,
                              normalize=False)
        known = err[good & r.pixels]
        err = np.where(missing, np.nanmax(known) if known.size else np.nan, err)
    return trans, err, chi2_red, profile


def _implausible(values):
    """Why a measured transmission is not trusted (its 1st..99th percentile), or ``''``."""
    lo, hi = (np.nanpercentile(values, [1, 99]) if np.isfinite(values).any()
              else (np.nan, np.nan))
    if lo > _PLAUSIBLE[0] and hi < _PLAUSIBLE[1]:
        return ""
    return (f"implausible measured transmission {lo:.3g}..{hi:.3g} (scene too dark or too "
            "few frames there)")


def _solve_one(r, shifts, n_min, opts, extent):
    """Solve region ``r`` and decide: ``(trans, err, n_used, good, row)``."""
    major, minor = extent
    trans, err, n_used = _solve_region(r, shifts, n_min=n_min, min_signal=float(opts.min_signal),
                                       n_iter=int(opts.n_iter),
                                       surface_degree=int(opts.surface_degree),
                                       estimator=opts.estimator)
    good = (n_used >= n_min) & np.isfinite(trans)
    cover = float(good[r.pixels].mean()) if r.pixels.any() else 0.0
    method = "measured" if cover >= float(opts.min_coverage) else "local"
    chi2_red, profile, reason = np.nan, "", ""
    if method == "measured":
        trans, err, chi2_red, profile = _refine_measured(r, trans, err, good, opts.radial,
                                                         opts.chi2_max)
        reason = _implausible(trans[r.pixels & good])
        method = "local" if reason else method
    if method == "local":
        profile = ""
        reason = reason or (f"coverage {cover:.2f} < {opts.min_coverage}: drift extent "
                            f"{major:.1f} x {minor:.1f} px vs diameter {r.diameter:.0f} px")
    inside = r.pixels & good
    terr = float(np.nanmedian(err[inside])) if inside.any() else np.nan
    mdepth = (float(1.0 - np.nanpercentile(trans[inside], 1.0))
              if method == "measured" and inside.any() else np.nan)
    row = (r.id, r.centroid[1], r.centroid[0], r.diameter, bool(minor >= r.diameter), cover,
           int(np.median(n_used[r.pixels])) if r.pixels.any() else 0, terr, mdepth, profile,
           chi2_red, method, reason)
    return trans, err, row


def _solve_batch(batch, shifts, result, *, n_min, opts, extent):
    """Measure the regions of one pass; fill ``result`` (transmission, uncertainty, measured
    maps) in place; return the catalog rows."""
    transmission, uncertainty, measured = result
    rows = []
    for r in batch:
        trans, err, row = _solve_one(r, shifts, n_min, opts, extent)
        if row[11] == "measured":
            y0, y1, x0, x1 = r.box
            sub = (slice(y0, y1), slice(x0, x1))
            transmission[sub][r.pixels] = trans[r.pixels].astype(np.float32)
            uncertainty[sub][r.pixels] = np.nan_to_num(err[r.pixels]).astype(np.float32)
            measured[sub][r.pixels] = True
        rows.append(row)
        r.raw = r.reg = r.reg_ok = r.reg_inframe = None
    return rows
