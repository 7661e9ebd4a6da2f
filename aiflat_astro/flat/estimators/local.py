"""Clean (dust-free) estimates of the sensor response inside dust shadows.

The *hand* of aiflat_astro: given the temporal median and a dust weight map,
estimate what the median would have been without the dust.  The synthetic
flat is then ``1 - w + w * median / clean`` (see `aiflat_astro.flat`).

Three families of estimates exist:

``local`` (default, this module)
    Deterministic interpolation from the surroundings of each shadow: a
    sparse harmonic (Laplace) or biharmonic solve per connected region on a
    cropped window, optionally on the image divided by a smooth local
    background (a robust polynomial fitted to a ring around the shadow).
``measured``
    Measured from the drift of the scene across the sensor
    (`aiflat_astro.flat.estimators.measured`).
``gemini``
    A generative model's inpainting (added by the Gemini module through
    `~aiflat_astro.flat.estimators.registry.register_inpainter`); such estimates are brought onto the photometric
    scale of the median with `match_photometry`.

Methods are looked up by name in a small registry so that other modules add
theirs without editing this one::

    register_inpainter("measured", inpaint_measured_adapter)
    clean, info = run_inpainter("measured", median, detection, frames=frames)

Pixels with weight 0 are never changed by any method (the returned clean
estimate equals the input there, bit for bit).
"""

import logging

import numpy as np
from scipy import ndimage
from scipy import sparse
from scipy.sparse import linalg as splinalg

from ..._imaging.disc import fit_circle
from ..._imaging.robust import robust_sigma
from ...utils.exceptions import InputError, renamed_keyword

__all__ = [
    "inpaint_local",
    "solar_disc_background",
    "match_photometry",
    "LOCAL_METHODS",
    "MATCH_METHODS",
]

log = logging.getLogger(__name__)

#: Interpolation schemes understood by `inpaint_local`.
LOCAL_METHODS = ("harmonic", "biharmonic", "poly")

#: Photometric matching schemes understood by `match_photometry`.
MATCH_METHODS = ("linear", "histogram")

# Regions with more unknowns than this are solved coarse-to-fine (see _solve_large).
_DIRECT_LIMIT = 120_000
# Biharmonic normal equations are denser; beyond this size the harmonic solver is used.
_BIHARMONIC_LIMIT = 60_000


# --------------------------------------------------------------------------------------
# input handling
# --------------------------------------------------------------------------------------
def _as_image(image):
    data = getattr(image, "data", image)
    data = np.asarray(data)
    if data.ndim != 2:
        raise InputError(f"inpainting needs a 2-D image, got an array of shape {data.shape}")
    if not np.issubdtype(data.dtype, np.number) or np.issubdtype(data.dtype, np.complexfloating):
        raise InputError(f"inpainting needs a real-valued image, got dtype {data.dtype}")
    return data


def _as_weight(weight, shape):
    w = np.asarray(getattr(weight, "weight", weight))
    if w.shape != shape:
        raise InputError(f"weight/mask shape {w.shape} does not match the image shape {shape}")
    if w.dtype == bool:
        return w.astype(np.float32)
    w = w.astype(np.float32, copy=False)
    if not np.all(np.isfinite(w)) or w.min(initial=0) < 0 or w.max(initial=0) > 1:
        raise InputError("weight must be finite and within 0..1 (0 = untouched, 1 = fully corrected)")
    return w


# --------------------------------------------------------------------------------------
# sparse solvers on one cropped window
# --------------------------------------------------------------------------------------
_NEIGHBOURS = ((0, 1), (0, -1), (1, 0), (-1, 0))


def _index_map(unknown):
    idx = np.full(unknown.shape, -1, dtype=np.int64)
    ys, xs = np.nonzero(unknown)
    idx[ys, xs] = np.arange(ys.size)
    return idx, ys, xs


def _harmonic_system(win, unknown):
    """Graph-Laplacian normal equations of the Dirichlet energy (Neumann at window edges)."""
    h, w = unknown.shape
    idx, ys, xs = _index_map(unknown)
    n = ys.size
    diag = np.zeros(n)
    rhs = np.zeros(n)
    rows, cols = [], []
    for dy, dx in _NEIGHBOURS:
        ny, nx = ys + dy, xs + dx
        inside = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
        diag += inside
        nyc, nxc = ny[inside], nx[inside]
        nb = idx[nyc, nxc]
        src = np.nonzero(inside)[0]
        unk = nb >= 0
        rows.append(src[unk])
        cols.append(nb[unk])
        np.add.at(rhs, src[~unk], win[nyc[~unk], nxc[~unk]])
    rows = np.concatenate(rows)
    cols = np.concatenate(cols)
    a = sparse.csr_matrix((-np.ones(rows.size), (rows, cols)), shape=(n, n))
    a = (a + sparse.diags(diag)).tocsc()
    return a, rhs, ys, xs


def _biharmonic_system(win, unknown):
    """Least-squares normal equations of ||L u||^2 (L the 5-point Laplacian).

    The Laplacian is evaluated at every pixel whose full stencil lies inside
    the window and that touches an unknown; minimising its squared norm with
    the known pixels fixed gives the discrete biharmonic interpolant.
    """
    h, w = unknown.shape
    idx, ys, xs = _index_map(unknown)
    n = ys.size
    touch = ndimage.binary_dilation(unknown, structure=ndimage.generate_binary_structure(2, 1))
    touch[0, :] = touch[-1, :] = touch[:, 0] = touch[:, -1] = False
    py, px = np.nonzero(touch)
    m = py.size
    eq = np.arange(m)
    rows, cols, vals = [], [], []
    known_part = np.zeros(m)
    for (dy, dx), c in (((0, 0), -4.0), ((0, 1), 1.0), ((0, -1), 1.0), ((1, 0), 1.0), ((-1, 0), 1.0)):
        qy, qx = py + dy, px + dx
        nb = idx[qy, qx]
        unk = nb >= 0
        rows.append(eq[unk])
        cols.append(nb[unk])
        vals.append(np.full(unk.sum(), c))
        known_part[~unk] += c * win[qy[~unk], qx[~unk]]
    lu = sparse.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(m, n))
    # A vanishing multiple of the harmonic system makes the normal equations definite for
    # unknowns that no complete stencil reaches (at the image border) without biasing the rest.
    ah, bh, _, _ = _harmonic_system(win, unknown)
    a = (lu.T @ lu + 1e-6 * ah).tocsc()
    rhs = -(lu.T @ known_part) + 1e-6 * bh
    return a, rhs, ys, xs


def _solve(a, rhs):
    return splinalg.spsolve(a, rhs)


def _solve_region(win, unknown, method):
    n = int(unknown.sum())
    if method == "biharmonic" and n > _BIHARMONIC_LIMIT:
        log.debug("region of %d px exceeds the biharmonic limit; using the harmonic solver", n)
        method = "harmonic"
    if method == "harmonic" and n > _DIRECT_LIMIT:
        return _solve_large(win, unknown)
    system = _harmonic_system if method == "harmonic" else _biharmonic_system
    a, rhs, ys, xs = system(win, unknown)
    out = win.copy()
    out[ys, xs] = _solve(a, rhs)
    return out


def _solve_large(win, unknown):
    """Harmonic solve of a very large region: coarse direct solve, then CG at full resolution."""
    n = int(unknown.sum())
    f = int(np.ceil(np.sqrt(n / (_DIRECT_LIMIT / 2))))
    h, w = win.shape
    hc, wc = -(-h // f), -(-w // f)
    pad = ((0, hc * f - h), (0, wc * f - w))
    known = ~unknown
    kw = np.pad(known, pad).astype(float)
    vw = np.pad(np.where(known, win, 0.0), pad)
    ksum = kw.reshape(hc, f, wc, f).sum(axis=(1, 3))
    vsum = vw.reshape(hc, f, wc, f).sum(axis=(1, 3))
    # A coarse cell is known only if all its fine pixels inside the window are known.
    full = np.pad(np.ones_like(known, dtype=float), pad).reshape(hc, f, wc, f).sum(axis=(1, 3))
    cunk = ksum < full
    cwin = np.where(cunk, 0.0, vsum / np.maximum(ksum, 1))
    coarse = _solve_region(cwin, cunk, "harmonic") if cunk.any() else cwin
    yy = (np.arange(h) + 0.5) / f - 0.5
    xx = (np.arange(w) + 0.5) / f - 0.5
    guess = ndimage.map_coordinates(coarse, np.meshgrid(yy, xx, indexing="ij"), order=1, mode="nearest")
    a, rhs, ys, xs = _harmonic_system(win, unknown)
    x, info = splinalg.cg(a, rhs, x0=guess[ys, xs], rtol=1e-7, maxiter=2000)
    if info != 0:  # pragma: no cover - CG on an SPD Laplacian converges
        log.warning("harmonic CG did not converge (info=%d); using the result anyway", info)
    out = win.copy()
    out[ys, xs] = x
    return out


# --------------------------------------------------------------------------------------
# local background: robust polynomial on a ring
# --------------------------------------------------------------------------------------
def _poly_terms(y, x, degree):
    return np.stack([y**i * x**j for i in range(degree + 1) for j in range(degree + 1 - i)], axis=-1)


def _ring_poly(win, region, usable, degree, ring_width):
    """Fit a polynomial robustly to ``usable`` pixels within ``ring_width`` of ``region``.

    Degree 0 is the ring's median; higher degrees are least-squares fits
    with iterative 3-sigma clipping.  Returns the polynomial evaluated on the
    whole window, or None when the ring has too few pixels for the fit.
    """
    dist = ndimage.distance_transform_edt(~region)
    ring = usable & (dist > 0) & (dist <= ring_width)
    ys, xs = np.nonzero(ring)
    nterm = (degree + 1) * (degree + 2) // 2
    if ys.size < 3 * nterm:
        return None
    if degree == 0:
        # a level only: the median of the ring, which ignores a spot or penumbra covering
        # less than half of it without any clipping threshold
        return np.full(win.shape, float(np.median(win[ys, xs])))
    cy, cx = np.nonzero(region)
    y0, x0 = cy.mean(), cx.mean()
    scale = max(np.ptp(ys), np.ptp(xs), 1.0) / 2
    terms = _poly_terms((ys - y0) / scale, (xs - x0) / scale, degree)
    values = win[ys, xs]
    good = np.ones(values.size, dtype=bool)
    for _ in range(5):
        coef, *_ = np.linalg.lstsq(terms[good], values[good], rcond=None)
        resid = values - terms @ coef
        sigma = robust_sigma(resid[good])
        new = np.abs(resid) <= 3 * max(sigma, np.finfo(float).tiny)
        if new.sum() < 3 * nterm or np.array_equal(new, good):
            break
        good = new
    gy, gx = np.mgrid[0:win.shape[0], 0:win.shape[1]]
    return _poly_terms((gy - y0) / scale, (gx - x0) / scale, degree) @ coef


# --------------------------------------------------------------------------------------
# global background of a solar disc with its limb in the frame
# --------------------------------------------------------------------------------------
_DISC_THRESHOLD = 0.15     # disc/sky threshold, fraction of the 99.5th percentile
_DISC_MAX_EDGE_RMS = 1.5   # limb points must lie on a circle within this (robust rms), px
_DISC_FIT_SAMPLES = 200_000


def _fit_circle(ys, xs):
    """The robust limb circle (`~aiflat_astro._imaging.disc.fit_circle`, refined): (yc, xc, r), residuals."""
    fit = fit_circle(ys, xs, refine=True)
    if fit is None:
        return np.full(3, np.nan), np.full(np.shape(ys), np.inf)
    yc, xc, radius = fit
    return np.array(fit), np.hypot(ys - yc, xs - xc) - radius


def _find_limb(data, ignore, threshold):
    """Centre and radius of a solar disc whose limb crosses the frame, or None."""
    h, w = data.shape
    good = np.isfinite(data) & ~ignore
    if good.sum() < 100:
        return None
    top = float(np.percentile(data[good], 99.5))
    if not top > 0:
        return None
    bright = np.where(np.isfinite(data), data > threshold * top, False)
    bright = ndimage.binary_opening(bright, iterations=2)
    labels, n = ndimage.label(bright)
    if n == 0:
        return None
    sizes = ndimage.sum(bright, labels, np.arange(1, n + 1))
    disc = ndimage.binary_fill_holes(labels == 1 + int(np.argmax(sizes)))
    frac = float(disc.mean())
    if frac < 0.2 or frac > 0.99:
        return None
    sky = ~disc & good
    if sky.sum() < 0.005 * data.size or np.median(data[sky]) > 0.5 * threshold * np.median(data[disc & good]):
        return None
    edge = disc & ~ndimage.binary_erosion(disc)
    edge[:2, :] = edge[-2:, :] = edge[:, :2] = edge[:, -2:] = False
    edge &= ~ndimage.binary_dilation(ignore, iterations=3)
    ys, xs = np.nonzero(edge)
    if ys.size < max(30, 0.1 * min(h, w)):
        return None
    (yc, xc, radius), resid = _fit_circle(ys.astype(float), xs.astype(float))
    rms = float(np.sqrt(np.median(resid**2)))
    if not np.isfinite(radius) or rms > _DISC_MAX_EDGE_RMS or radius < 0.1 * max(h, w):
        log.debug("bright region not bounded by a circular limb (edge rms %.2f px)", rms)
        return None
    yy, xx = np.ogrid[0:h, 0:w]
    inside = np.hypot(yy - yc, xx - xc) < radius
    if np.mean(inside[disc]) < 0.95:
        return None
    return float(yc), float(xc), float(radius)


def solar_disc_background(image, *, ignore=None, threshold=_DISC_THRESHOLD, limb_margin=3.0, exclude=None):
    """Large-scale brightness of a solar disc whose limb crosses the frame.

    The limb is found as the edge of the bright region (above ``threshold``
    times the 99.5th percentile) and a circle is fitted robustly to it.  The
    disc's brightness is then modelled on every usable pixel of the disc as
    a limb-darkening law times a smooth surface (vignetting, gain
    gradients): a linear least-squares fit, with Tukey biweights against
    granulation, spots and faculae, of the terms ``1, x, y, x², xy, y²``,
    ``(1 − μ)``, ``(1 − μ)²``, ``(1 − μ) x``, ``(1 − μ) y`` with
    ``μ = √(1 − (r/R)²)``.  Dividing the image by this model leaves the
    small-scale texture only, which local interpolation then fills far
    better than it fills the steep limb darkening near the limb.

    Parameters
    ----------
    image : `~numpy.ndarray` or `~astropy.nddata.CCDData`
        2-D image (the temporal median), with a dark sky beyond the limb.
    ignore : `~numpy.ndarray` of bool, optional
        Pixels not to use (the dust mask, dilated; defects).
    threshold : float, optional
        Disc/sky threshold as a fraction of the 99.5th percentile (0.15).
    limb_margin : float, optional
        Pixels within this distance (px) of the fitted limb, and the sky
        beyond it, are neither fitted nor modelled.
    exclude : `~numpy.ndarray` of bool, optional
        Deprecated name of ``ignore``.

    Returns
    -------
    background : `~numpy.ndarray` or None
        float64 model on the disc, NaN within ``limb_margin`` of the limb
        and beyond; None when the frame shows no limb (a full-frame disc
        surface, a deep-sky field) or the bright region is not bounded by a
        circle.

    Examples
    --------
    >>> import numpy as np
    >>> y, x = np.mgrid[0:96, 0:128]
    >>> r = np.hypot(y - 300.0, x + 150.0)                      # limb of a 330-px disc
    >>> mu = np.sqrt(np.clip(1 - (r / 330) ** 2, 0, 1))
    >>> image = np.where(r < 330, 1000 * (1 - 0.6 * (1 - mu)), 20.0)
    >>> model = solar_disc_background(image)
    >>> ok = np.isfinite(model)
    >>> bool(ok.mean() > 0.3 and np.abs(model[ok] / image[ok] - 1).max() < 0.01)
    True
    >>> solar_disc_background(np.full((64, 64), 1000.0)) is None
    True
    """
    if exclude is not None:
        ignore = renamed_keyword("solar_disc_background", "exclude", "ignore", exclude, given=ignore)
    data = _as_image(image).astype(np.float64)
    ignore = np.zeros(data.shape, bool) if ignore is None else np.asarray(ignore, dtype=bool)
    if ignore.shape != data.shape:
        raise InputError(f"ignore mask shape {ignore.shape} does not match the image shape {data.shape}")
    geom = _find_limb(data, ignore, threshold)
    if geom is None:
        return None
    yc, xc, radius = geom
    on, basis = _disc_basis(data.shape, yc, xc, radius, limb_margin)
    idx = np.flatnonzero(on & ~ignore & np.isfinite(data))
    if idx.size < 200:
        return None
    if idx.size > _DISC_FIT_SAMPLES:
        idx = idx[:: int(np.ceil(idx.size / _DISC_FIT_SAMPLES))]
    sel = np.unravel_index(idx, data.shape)
    coef = _tukey_fit(basis(sel), data[sel])
    model = np.full(data.shape, np.nan)
    model[on] = basis(on) @ coef
    model[~(model > 0)] = np.nan
    log.debug("solar limb: centre (%.1f, %.1f), radius %.1f px; disc model fitted on %d px",
              yc, xc, radius, idx.size)
    return model


def _disc_basis(shape, yc, xc, radius, limb_margin):
    """The disc's pixels (inside the limb by ``limb_margin``) and the model's terms at given pixels.

    Terms ``1, x, y, x², xy, y², (1 − μ), (1 − μ)², (1 − μ) x, (1 − μ) y``
    on coordinates scaled to the frame's half size.
    """
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    rr = np.hypot(yy - yc, xx - xc)
    m1 = 1.0 - np.sqrt(np.clip(1.0 - (rr / radius) ** 2, 0.0, 1.0))
    s = max(h, w) / 2
    ny, nx = (yy - h / 2) / s, (xx - w / 2) / s

    def basis(sel):
        y_, x_, m_ = ny[sel], nx[sel], m1[sel]
        return np.column_stack([np.ones_like(y_), x_, y_, x_**2, x_ * y_, y_**2, m_, m_**2, m_ * x_, m_ * y_])

    return rr < radius - limb_margin, basis


def _tukey_fit(b, v, *, iterations=10, c=4.685):
    """Linear least squares of ``v`` on the columns of ``b`` with Tukey biweights (iterated)."""
    wts = np.ones(v.size)
    for _ in range(iterations):
        sw = np.sqrt(wts)
        coef, *_ = np.linalg.lstsq(b * sw[:, None], v * sw, rcond=None)
        res = v - b @ coef
        u_ = res / (c * max(robust_sigma(res[wts > 0]), np.finfo(float).tiny))
        new = np.where(np.abs(u_) < 1, (1 - u_**2) ** 2, 0.0)
        if np.allclose(new, wts, atol=1e-4):
            break
        wts = new
    return coef


# --------------------------------------------------------------------------------------
# public: local inpainting
# --------------------------------------------------------------------------------------
def inpaint_local(image, weight, *, method="harmonic", normalize=True, ignore=None,
                  poly_degree=2, ring_width=None, background=None, invalid=None):
    """Reconstruct the dust-free image inside the mask from its surroundings.

    Every connected region of ``weight > 0`` is processed on its own cropped
    window, so the cost grows with the masked area, not with the image.
    Pixels with weight 0 are returned unchanged.

    Parameters
    ----------
    image : `~numpy.ndarray` or `~astropy.nddata.CCDData`
        2-D image (the temporal median), background-subtracted if it has a
        pedestal.
    weight : `~numpy.ndarray`
        Soft weight 0..1 (or a boolean dust mask) of the same shape; every
        pixel with weight > 0 is reconstructed.
    method : {'harmonic', 'biharmonic', 'poly'}, optional
        ``'harmonic'`` (default) solves Laplace's equation with the values
        around the region as boundary condition (sparse direct solve, Neumann
        conditions at the image border); ``'biharmonic'`` minimises the
        squared Laplacian (smoother, continues gradients; regions above
        60 000 px fall back to harmonic); ``'poly'`` evaluates the robust
        ring polynomial only.
    normalize : bool, optional
        If true (default), interpolate the image divided by a robust
        polynomial of degree ``poly_degree`` fitted to a ring around each
        region, then multiply back: the interpolation then only carries the
        small-scale texture while the polynomial carries the curvature of the
        background (limb darkening, vignetting) that a harmonic function
        cannot follow.  Ignored for ``method='poly'``.
    ignore : `~numpy.ndarray` of bool, optional
        Pixels not to be used as boundary values (hot, cold, saturated,
        non-finite).  They are interpolated as auxiliary unknowns but are
        only returned changed where ``weight > 0``.  Non-finite pixels are
        always ignored.
    poly_degree : int, optional
        Degree of the ring polynomial (default 2); 0 is the median of the ring (a level).
    ring_width : float, optional
        Width in pixels of the ring used for the polynomial; default
        ``max(6, equivalent radius)`` per region.
    background : `~numpy.ndarray`, optional
        A global model of the large-scale brightness (for example
        `solar_disc_background`).  The image is divided by it, the ratio is
        filled as above, and the result multiplied back.  It must be finite
        and positive on every pixel with ``weight > 0``; elsewhere, pixels
        where it is not (the sky beyond a solar limb) are not used as
        boundary values.
    invalid : `~numpy.ndarray` of bool, optional
        Deprecated name of ``ignore``.

    Returns
    -------
    clean : `~numpy.ndarray`
        float32 copy of ``image`` with the masked pixels reconstructed.

    Raises
    ------
    InputError
        Wrong shapes or weights, a method name that does not exist, or a
        region without any valid pixel around it.

    Examples
    --------
    >>> import numpy as np
    >>> y, x = np.mgrid[0:64, 0:64]
    >>> image = (1000 + 2 * x + y).astype(np.float32)
    >>> mask = (x - 32) ** 2 + (y - 32) ** 2 < 36
    >>> dusty = np.where(mask, 0.8 * image, image)
    >>> clean = inpaint_local(dusty, mask)
    >>> bool(np.abs(clean - image).max() < 0.01)
    True
    >>> bool(np.all(clean[~mask] == dusty[~mask]))
    True
    """
    if invalid is not None:
        ignore = renamed_keyword("inpaint_local", "invalid", "ignore", invalid, given=ignore)
    if method not in LOCAL_METHODS:
        raise InputError(f"unknown local inpainting method {method!r}; choose one of {', '.join(LOCAL_METHODS)}")
    data = _as_image(image)
    region_mask = _as_weight(weight, data.shape) > 0
    bad = _unusable_pixels(data, ignore)
    clean = data.astype(np.float32, copy=True)
    data, bad, global_bg = _divide_by_background(data, bad, region_mask, background)
    if not region_mask.any():
        return clean
    labels, n_regions = ndimage.label(region_mask, structure=np.ones((3, 3), dtype=bool))
    unknown_all = region_mask | bad
    for k, sl in enumerate(ndimage.find_objects(labels), start=1):
        win, region, filled = _fill_region(data, labels, k, sl, unknown_all, method=method, normalize=normalize,
                                           poly_degree=poly_degree, ring_width=ring_width)
        if global_bg is not None:
            filled = filled * global_bg[win]
        clean[win][region] = filled[region].astype(np.float32)
    log.debug("inpainted %d region(s), %d px, method=%s normalize=%s",
              n_regions, int(region_mask.sum()), method, normalize)
    return clean


def _unusable_pixels(data, ignore):
    """Pixels not to use as boundary values: non-finite, and ``ignore`` (checked against the shape)."""
    bad = ~np.isfinite(data)
    if ignore is None:
        return bad
    ignore = np.asarray(ignore, dtype=bool)
    if ignore.shape != data.shape:
        raise InputError(f"ignore mask shape {ignore.shape} does not match the image shape {data.shape}")
    return bad | ignore


def _divide_by_background(data, bad, region_mask, background):
    """``data / background`` where the background is usable (its other pixels become unusable).

    Returns the data to interpolate, the unusable pixels and the background
    (float64; None when not given).
    """
    if background is None:
        return data, bad, None
    global_bg = np.asarray(background, dtype=np.float64)
    if global_bg.shape != data.shape:
        raise InputError(f"background shape {global_bg.shape} does not match the image shape {data.shape}")
    usable_bg = np.isfinite(global_bg) & (global_bg > 0)
    if np.any(region_mask & ~usable_bg):
        raise InputError("the background model must be finite and positive wherever weight > 0")
    data = np.where(usable_bg, data / np.where(usable_bg, global_bg, 1.0), 0.0)
    return data, bad | ~usable_bg, global_bg


def _region_window(sl, shape, pad):
    """The region's bounding box grown by ``pad`` px, clipped to the image."""
    return (slice(max(sl[0].start - pad, 0), min(sl[0].stop + pad, shape[0])),
            slice(max(sl[1].start - pad, 0), min(sl[1].stop + pad, shape[1])))


def _fill_region(data, labels, k, sl, unknown_all, *, method, normalize, poly_degree, ring_width):
    """One region on its window: the window's slices, the region's pixels and the filled window."""
    region_px = int(np.count_nonzero(labels[sl] == k))
    ring = float(ring_width) if ring_width is not None else max(6.0, np.sqrt(region_px / np.pi))
    win = _region_window(sl, data.shape, int(np.ceil(ring)) + 2)
    region = labels[win] == k
    unknown = unknown_all[win]
    usable = ~unknown
    if not usable.any():
        raise InputError(f"dust region {k} has no valid pixel around it; cannot interpolate")
    values = np.where(unknown, 0.0, data[win].astype(np.float64))
    return win, region, _interpolate_window(values, region, unknown, method=method, normalize=normalize,
                                            poly_degree=poly_degree, ring=ring)


def _interpolate_window(values, region, unknown, *, method, normalize, poly_degree, ring):
    """The ring polynomial, the solve, or the solve of ``values / ring polynomial`` times it."""
    usable = ~unknown
    surface = None
    if method == "poly" or normalize:
        surface = _ring_poly(values, region, usable, poly_degree, ring)
        if surface is not None and np.any(surface[region | usable] <= 0) and method != "poly":
            surface = None  # a ratio needs a positive surface (e.g. near a limb over dark sky)
    if method == "poly":
        return _solve_region(values, unknown, "harmonic") if surface is None else surface
    if surface is not None:
        return surface * _solve_region(np.where(unknown, 1.0, values / surface), unknown, method)
    return _solve_region(values, unknown, method)


# --------------------------------------------------------------------------------------
# public: photometric matching of external estimates
# --------------------------------------------------------------------------------------
def match_photometry(estimate, reference, mask, *, method="linear", nsigma=3.0, max_iter=10):
    """Bring an externally produced clean estimate onto the reference's photometric scale.

    A generative model returns an image with an arbitrary stretch (often
    8-bit, rescaled).  The mapping from its values to the median's is learned
    on the pixels where ``mask == 0`` (no dust, so the estimate and the
    reference should agree there) and applied to the whole estimate.

    Parameters
    ----------
    estimate : `~numpy.ndarray`
        The external clean estimate, resampled onto the reference grid.
    reference : `~numpy.ndarray`
        The temporal median.
    mask : `~numpy.ndarray`
        Dust mask or weight; pixels where it is non-zero are excluded from the fit.
    method : {'linear', 'histogram'}, optional
        ``'linear'`` (default): robust straight-line fit
        ``reference = a * estimate + b`` with iterative ``nsigma`` clipping
        of the residuals.  ``'histogram'``: the seed's quantile (histogram)
        matching of the two unmasked distributions, a monotone non-parametric
        mapping.
    nsigma : float, optional
        Clipping threshold of the linear fit, in robust standard deviations.
    max_iter : int, optional
        Maximum clipping iterations of the linear fit.

    Returns
    -------
    matched : `~numpy.ndarray`
        float32 estimate on the reference's scale.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(1)
    >>> reference = rng.uniform(500, 3000, (32, 32))
    >>> estimate = 0.05 * reference + 7.0
    >>> mask = np.zeros((32, 32), bool); mask[10:14, 10:14] = True
    >>> matched = match_photometry(estimate, reference, mask)
    >>> bool(np.allclose(matched, reference, rtol=1e-4))
    True
    """
    if method not in MATCH_METHODS:
        raise InputError(f"unknown photometric matching method {method!r}; choose one of {', '.join(MATCH_METHODS)}")
    est = _as_image(estimate).astype(np.float64)
    ref = _as_image(reference).astype(np.float64)
    if est.shape != ref.shape:
        raise InputError(f"estimate shape {est.shape} does not match the reference shape {ref.shape}")
    m = np.asarray(getattr(mask, "weight", mask))
    if m.shape != ref.shape:
        raise InputError(f"mask shape {m.shape} does not match the reference shape {ref.shape}")
    use = (m == 0) & np.isfinite(est) & np.isfinite(ref)
    if use.sum() < 10:
        raise InputError("too few unmasked pixels to match the photometry of the estimate")
    e, r = est[use], ref[use]
    if method == "histogram":
        return _histogram_map(e, r, est).astype(np.float32)
    a, b = _robust_line(e, r, nsigma=nsigma, max_iter=max_iter)
    log.debug("photometric match: reference = %.6g * estimate + %.6g", a, b)
    return (a * est + b).astype(np.float32)


def _robust_line(x, y, *, nsigma, max_iter):
    """Straight line: Theil-Sen start (median of random pairwise slopes), then clipped least squares."""
    if np.ptp(x) == 0:
        raise InputError("the estimate is constant outside the mask; cannot match its photometry")
    rng = np.random.default_rng(0)
    i, j = rng.integers(0, x.size, (2, min(20000, 10 * x.size)))
    dx = x[i] - x[j]
    use = dx != 0
    a = float(np.median((y[i] - y[j])[use] / dx[use]))
    b = float(np.median(y - a * x))
    for _ in range(max_iter):
        resid = y - (a * x + b)
        sigma = robust_sigma(resid)
        good = np.abs(resid) <= nsigma * max(sigma, np.finfo(float).tiny)
        if good.sum() < 10 or np.ptp(x[good]) == 0:
            break
        a_new, b_new = np.polyfit(x[good], y[good], 1)
        if np.isclose(a_new, a, rtol=1e-12, atol=0) and np.isclose(b_new, b, rtol=1e-12, atol=1e-12):
            a, b = a_new, b_new
            break
        a, b = a_new, b_new
    return a, b


def _histogram_map(e, r, full):
    """Quantile mapping: estimate value at quantile q -> reference value at quantile q."""
    q = np.linspace(0, 1, min(e.size, 4096))
    eq = np.quantile(e, q)
    rq = np.quantile(r, q)
    eq, first = np.unique(eq, return_index=True)  # np.interp needs increasing x
    rq = rq[first]
    if eq.size < 2:
        raise InputError("the estimate is constant outside the mask; cannot match its photometry")
    out = np.interp(full, eq, rq)
    # Extrapolate linearly beyond the fitted range instead of clamping.
    lo, hi = full < eq[0], full > eq[-1]
    slope_lo = (rq[1] - rq[0]) / (eq[1] - eq[0])
    slope_hi = (rq[-1] - rq[-2]) / (eq[-1] - eq[-2])
    out[lo] = rq[0] + slope_lo * (full[lo] - eq[0])
    out[hi] = rq[-1] + slope_hi * (full[hi] - eq[-1])
    return out


def _local_inpainter(median, detection, *, frames=None, method="poly", normalize=True,
                     poly_degree=2, ring_width=None, disc="auto", disc_poly_degree=0, jitter="auto"):
    """The ``local`` method; with a solar limb in the frame (``disc='auto'``, the default) the
    shadows on the disc are filled relative to `solar_disc_background` with a ring
    polynomial of degree ``disc_poly_degree`` (default 0: the median of the ring of
    ``median / model``, a local level), the others as without it.  With ``frames``
    (``jitter='auto'``, the default), the shadows on a textured scene are then filled
    from the scene's gradient measured from the seeing jitter
    (`~aiflat_astro.flat.estimators.jitter.jitter_clean`); ``jitter=False`` turns that off."""
    from ...dq import DustDQ

    if disc not in ("auto", False, "off"):
        raise InputError(f"disc must be 'auto' or False, got {disc!r}")
    if jitter not in ("auto", True, False, "off"):
        raise InputError(f"jitter must be 'auto' or False, got {jitter!r}")
    dq = np.asarray(detection.dq)
    defects = (dq & (DustDQ.HOT | DustDQ.COLD | DustDQ.SATURATED)) > 0
    weight = np.asarray(detection.weight)
    clean = inpaint_local(median, weight, method=method, normalize=normalize, ignore=defects,
                          poly_degree=poly_degree, ring_width=ring_width)
    params = {"LOCMETH": method, "POLYDEG": int(poly_degree)}
    if method != "poly":
        params["LOCNORM"] = bool(normalize)
    if ring_width is not None:
        params["RINGW"] = float(ring_width)
    info = {"method": "local", "generated": False, "profile": "radial"}
    if disc == "auto" and np.any(weight > 0):
        clean, info["disc_regions"], has_limb = _disc_clean(median, weight, defects, clean, method=method,
                                                            normalize=normalize, disc_poly_degree=disc_poly_degree,
                                                            ring_width=ring_width)
        params["LOCDISC"] = has_limb
        if has_limb:
            params["DISCDEG"] = int(disc_poly_degree)
    use_jitter = frames is not None and jitter not in (False, "off")
    params["LOCJITT"] = bool(use_jitter)
    if use_jitter and np.any(weight > 0):
        clean = _jitter_fill(median, weight > 0, frames, defects, clean, info)
    info["params"] = params
    return clean, info


def _disc_clean(median, weight, defects, clean, *, method, normalize, disc_poly_degree, ring_width):
    """The shadows wholly on a solar disc filled relative to `solar_disc_background`.

    Returns the clean estimate, the number of such shadows and whether a limb was found.
    """
    region = weight > 0
    ignore = ndimage.binary_dilation(region, iterations=2) | defects
    model = solar_disc_background(median, ignore=ignore)
    if model is None:
        return clean, 0, False
    labels, n = ndimage.label(region, structure=np.ones((3, 3), dtype=bool))
    on = np.isfinite(model) & (model > 0)
    ok = np.concatenate([[False], ndimage.minimum(on, labels, np.arange(1, n + 1)).astype(bool)])
    on_regions = ok[labels]
    n_disc = int(ok.sum())
    if n_disc:
        clean_disc = inpaint_local(median, np.where(on_regions, weight, 0.0), method=method,
                                   normalize=normalize, ignore=defects, poly_degree=disc_poly_degree,
                                   ring_width=ring_width, background=np.where(on, model, np.nan))
        clean = np.where(on_regions, clean_disc, clean)
    return clean, n_disc, True


def _jitter_fill(median, region, frames, defects, clean, info):
    """The shadows whose scene the seeing jitter measures (`jitter_clean`), recorded in ``info``."""
    from .jitter import jitter_clean

    jclean, report, noise = jitter_clean(median, region, frames, ignore=defects, return_noise=True)
    labels, _ = ndimage.label(region, structure=np.ones((3, 3), dtype=bool))
    used = np.zeros(labels.max() + 1, dtype=bool)
    for row in report:
        used[row["label"]] = row["used"]
    info["scene_measured"] = used[labels] & region    # the scene under these shadows is measured
    info["scene_noise"] = np.where(info["scene_measured"], noise, np.nan)   # its relative 1-sigma
    info["jitter_regions"] = int(used.sum())
    info["jitter"] = report
    return np.where(used[labels], jclean, clean)
