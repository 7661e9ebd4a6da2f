"""The local dust detector: offline, deterministic, fast.

Model: the median is ``scene × transmission``.  Dust shadows are compact dark
dips of the transmission that stay fixed on the sensor; everything else (solar
pores, sunspots, filaments, granulation, the limb, stars, nebulae) belongs to
the scene.  The detector

1. builds a valid-disc mask (off-disc sky and a margin at the limb are not
   searched) and flags static defects;
2. divides by a robust large-scale background (`photutils.background.Background2D`)
   and searches the darkness ``1 − median/background`` for compact dark blobs
   in a scale space of centre-minus-surround filters, from the smallest solar
   motes (3 px) to large deep-sky donuts (hundreds of px, binned for speed);
   the significance at each scale is relative to the robust scatter of that
   scale (granulation is texture: it sets the floor, not the signal);
3. segments the significance map (`photutils.segmentation.detect_sources`),
   measures each candidate against its own local surroundings (plateau depth,
   outline, roundness, radial profile, disc or annulus, bright diffraction
   rim, whether the texture of the scene continues through it, its place on
   the disc), and scores it with the physics of dust shadows (round discs or
   annuli with a plateau, a soft edge and a size set by the f-ratio);
4. when the frames are given, applies the strongest test there is: dust is
   fixed on the sensor while the scene moves.  The frames are registered
   (`aiflat_astro.registration.register_frames`), and for each candidate the
   frame-to-frame changes around it are regressed on how its own outline
   would change if it moved with the scene (``β ≈ 1``: a solar feature) or
   stayed on the sensor (``β ≈ 0``: dust), separately from the surrounding
   texture.

The confidence of each shadow combines these clues; low-confidence shadows get
the REVIEW bit.
"""

import logging
import warnings

import numpy as np
from astropy.table import Table
from scipy import ndimage

from ..dq import DustDQ
from ..io._base import FrameSource
from ..utils._colour import cfa_normalise
from ..utils.exceptions import DetectorFallbackWarning, InputError, warn_user
from ._base import DustDetection, DustDetector, empty_catalog

__all__ = ["LocalDustDetector", "expected_diameters", "darkness_map"]

log = logging.getLogger(__name__)

#: Distances (mm) of dust in front of the focal plane that the size prior allows:
#: sensor cover glass and windows (0.5–7 mm) to filters (10–30 mm).
DUST_DISTANCE_MM = (0.5, 30.0)

# A pixel is "sky" when the smoothed image is below this fraction of the disc level
_SKY_FRACTION = 0.12

#: DUST pixels are those darker than this fraction of a shadow's depth (most of the soft edge;
#: the halo of `~aiflat_astro.dq.expand_mask` covers the rest).
DUST_LEVEL = 0.1
#: Extent from the radial profile (`_refine_extent`): the profile has flattened at the first
#: ring (beyond the half-depth radius) that is not above the median of the next rings, a window
#: of this fraction of the outline radius (at least 4 rings), by more than ...
EXTENT_WINDOW = 0.3
#: ... this many standard errors of a ring's median (from the ring-to-ring scatter), nor by
#: more than this fraction of the depth.
EXTENT_TOL, EXTENT_TOL_DEPTH = 2.0, 0.02
#: Profile and centre are measured again about the new centre at most this many times.
EXTENT_ITERATIONS = 3
#: A refined mask is kept only when its area is within these factors of the first one.
EXTENT_AREA_RANGE = (0.5, 4.0)


def expected_diameters(f_ratio, pixel_size, *, distance_mm=DUST_DISTANCE_MM):
    """Range of dust-shadow diameters (pixels) for the given optics.

    ``D = Δz / (N p)`` for dust at the distances ``distance_mm`` (Δz) from the
    focal plane.

    Parameters
    ----------
    f_ratio : float
        Focal ratio N.
    pixel_size : float
        Pixel size in µm.
    distance_mm : tuple of float, optional
        Nearest and farthest dust distance in mm; default (0.5, 30).

    Returns
    -------
    tuple of float
        ``(d_min, d_max)`` in pixels.

    Examples
    --------
    >>> [round(d, 1) for d in expected_diameters(30, 3.75)]
    [4.4, 266.7]
    """
    lo, hi = distance_mm
    return lo * 1e3 / (f_ratio * pixel_size), hi * 1e3 / (f_ratio * pixel_size)


# ---------------------------------------------------------------------------
# Image helpers
# ---------------------------------------------------------------------------
def _block(a, b, w=None):
    """Block means of ``a`` (weighted by ``w``) over b×b blocks; returns (mean, weight fraction)."""
    if b == 1:
        if w is None:
            return a.astype(np.float32), np.ones(a.shape, np.float32)
        return np.where(w > 0, a, 0).astype(np.float32), w.astype(np.float32)
    h, wd = a.shape
    ph, pw = (-h) % b, (-wd) % b
    ww = np.ones(a.shape, np.float32) if w is None else w.astype(np.float32)
    aw = np.where(ww > 0, a, 0).astype(np.float32) * ww
    if ph or pw:
        aw = np.pad(aw, ((0, ph), (0, pw)))
        ww = np.pad(ww, ((0, ph), (0, pw)))
    hb, wb = aw.shape[0] // b, aw.shape[1] // b
    s = aw.reshape(hb, b, wb, b).sum(axis=(1, 3))
    n = ww.reshape(hb, b, wb, b).sum(axis=(1, 3))
    mean = np.where(n > 0, s / np.maximum(n, 1e-12), 0).astype(np.float32)
    return mean, (n / (b * b)).astype(np.float32)


def _unblock(a, b, shape):
    """Nearest-neighbour expansion of a block image back to ``shape``."""
    if b == 1:
        return a
    return np.repeat(np.repeat(a, b, axis=0), b, axis=1)[: shape[0], : shape[1]]


def _normconv(a, w, sigma):
    """Normalised convolution: Gaussian mean of ``a`` over the weight ``w``."""
    num = ndimage.gaussian_filter(a * w, sigma, mode="nearest", truncate=3.0)
    den = ndimage.gaussian_filter(w, sigma, mode="nearest", truncate=3.0)
    out = np.zeros_like(num)
    ok = den > 0.05
    out[ok] = num[ok] / den[ok]
    return out


def _robust_sigma(values):
    values = values[np.isfinite(values)]
    if values.size < 10:
        return np.nan
    if values.size > 400_000:
        values = values[:: values.size // 200_000]
    med = np.median(values)
    return 1.4826 * float(np.median(np.abs(values - med)))


def _clipped_sigma(values, *, iterations=4):
    """Iteratively 3-sigma-clipped robust scatter (MAD) about the median.

    Clipping keeps a dense field of large dust donuts (a sizeable fraction of
    the pixels of a small frame) from inflating the scatter.
    """
    values = values[np.isfinite(values)]
    if values.size < 10:
        return np.nan
    if values.size > 400_000:
        values = values[:: values.size // 200_000]
    keep = values
    sigma = np.nan
    for _ in range(iterations):
        med = np.median(keep)
        sigma = 1.4826 * float(np.median(np.abs(keep - med)))
        if not sigma > 0:
            break
        new = values[np.abs(values - med) < 3 * sigma]
        if new.size == keep.size or new.size < 10:
            break
        keep = new
    return sigma


def _valid_region(data, bad):
    """Pixels on the solar/planetary disc (or everywhere for a sky field).

    Returns ``valid`` (bool) and the disc level.
    """
    h, w = data.shape
    b = max(1, min(h, w) // 128)
    fill = np.where(bad, np.nan, data)
    coarse, frac = _block(np.nan_to_num(fill), b, np.isfinite(fill))
    good = frac > 0.5
    if not good.any():
        raise InputError("the median has no usable pixel")
    level = float(np.percentile(coarse[good], 90))
    if not level > 0:
        level = float(np.max(coarse[good])) if np.max(coarse[good]) > 0 else 1.0
    smooth = _normconv(np.nan_to_num(fill).astype(np.float32), np.isfinite(fill).astype(np.float32), 2.0)
    valid = smooth > _SKY_FRACTION * level
    if valid.mean() < 0.999:
        # keep the disc: fill enclosed dark holes (umbrae, deep dust) and drop small islands
        valid = ndimage.binary_fill_holes(valid)
        lab, n = ndimage.label(valid)
        if n > 1:
            sizes = ndimage.sum_labels(valid, lab, np.arange(1, n + 1))
            valid = np.isin(lab, 1 + np.flatnonzero(sizes >= 0.01 * valid.size))
    if valid.mean() < 0.02:
        raise InputError("the median is almost entirely dark: no disc or sky background to search for dust")
    return valid, level


def _fit_circle(y, x):
    """Algebraic (Kåsa) least-squares circle through points; (cy, cx, radius, rms residual)."""
    a = np.column_stack([x, y, np.ones_like(x)])
    b = -(x**2 + y**2)
    (d, e, f), *_ = np.linalg.lstsq(a, b, rcond=None)
    cx, cy = -d / 2, -e / 2
    r2 = cx**2 + cy**2 - f
    if not r2 > 0:
        return None
    radius = np.sqrt(r2)
    return cy, cx, radius, float(np.sqrt(np.mean((np.hypot(y - cy, x - cx) - radius) ** 2)))


def _limb_model(data, valid, bad):
    """Limb darkening of a round disc: (multiplicative model, limb margin in px) or None.

    The limb (the edge of ``valid`` inside the frame) is fitted with a circle;
    the disc's brightness is fitted robustly as a quadratic in μ = cos θ
    (``I = a + b μ + c μ²``, the usual limb-darkening law) and the margin is
    the band next to the limb where the data still depart from it by more
    than 3 % (the seeing-blurred or drift-smeared edge).
    """
    h, w = data.shape
    edge = valid & ~ndimage.binary_erosion(valid)
    edge[:2, :] = edge[-2:, :] = edge[:, :2] = edge[:, -2:] = False
    ys, xs = np.nonzero(edge)
    if ys.size < 30:
        return None
    step = max(1, ys.size // 4000)
    fit = _fit_circle(ys[::step].astype(float), xs[::step].astype(float))
    if fit is None:
        return None
    cy, cx, radius, rms = fit
    if rms > 2.0 or radius < 0.2 * min(h, w):
        return None
    yy, xx = np.ogrid[0:h, 0:w]
    r = np.hypot(np.float32(yy - cy), np.float32(xx - cx))
    mu = np.sqrt(np.clip(1 - (r / np.float32(radius)) ** 2, 0, 1))
    use = valid & ~bad & np.isfinite(data)
    sel = np.flatnonzero(use.ravel())[:: max(1, int(use.sum()) // 200_000)]
    m, v = mu.ravel()[sel].astype(float), data.ravel()[sel].astype(float)
    a = np.column_stack([np.ones_like(m), m, m * m])
    keep = np.ones(m.size, bool)
    for _ in range(4):
        coef = np.linalg.lstsq(a[keep], v[keep], rcond=None)[0]
        resid = v - a @ coef
        sig = _robust_sigma(resid[keep])
        if not (np.isfinite(sig) and sig > 0):
            break
        keep = (resid > -2.5 * sig) & (resid < 4 * sig)   # dark features must not pull the law down
    model = (coef[0] + coef[1] * mu + coef[2] * mu * mu).astype(np.float32)
    if not np.all(model[use] > 0):
        return None
    model /= float(np.max(model[use]))
    # margin: rings next to the limb where the data still depart from the law
    depth_in = radius - r.ravel()[sel]
    ratio = v / (model.ravel()[sel] * float(np.max((coef[0] + coef[1] * mu + coef[2] * mu * mu)[use])))
    bins = np.clip(depth_in.astype(int), 0, None)
    nb = min(int(bins.max()) + 1, int(0.25 * min(h, w)))
    # scan inwards from the limb; the margin ends at the first three consecutive rings that
    # follow the law (dust and spots further in must not widen it)
    margin, good = 3, 0
    for k in range(nb):
        ring = ratio[bins == k]
        if ring.size < 10:
            continue
        if abs(np.median(ring) - 1) > 0.03:
            margin, good = k + 3, 0
        else:
            good += 1
            if good >= 3:
                break
    return model, margin


def darkness_map(median, *, valid=None, exclude=None, box_size=None):
    """Darkness ``1 − median / background`` with a robust large-scale background.

    The background is a sigma-clipped `photutils.background.Background2D` of
    the valid pixels (excluded pixels, stars and defects do not enter it); the
    darkness is 0 outside ``valid``.

    Parameters
    ----------
    median : `numpy.ndarray`
        2-D image.
    valid : `numpy.ndarray`, optional
        Boolean, True where the scene is usable (the disc); everywhere by default.
    exclude : `numpy.ndarray`, optional
        Boolean, pixels kept out of the background estimate (known dust).
    box_size : int, optional
        Background mesh size in pixels; by default about 1/8 of the smaller
        side (at least 32).

    Returns
    -------
    darkness : `numpy.ndarray`
        float32, positive where the image is darker than its background.
    background : `numpy.ndarray`
        float32 background.

    Examples
    --------
    >>> import numpy as np
    >>> img = np.full((64, 64), 100.0); img[30:34, 30:34] = 90
    >>> d, bkg = darkness_map(img)
    >>> round(float(d[31, 31]), 2), round(float(d[5, 5]), 2)
    (0.1, 0.0)
    """
    from astropy.stats import SigmaClip
    from photutils.background import Background2D, MedianBackground

    data = np.asarray(median, dtype=np.float32)
    finite = np.isfinite(data)
    valid = finite if valid is None else (np.asarray(valid, bool) & finite)
    ignore = ~valid if exclude is None else (~valid | np.asarray(exclude, bool))
    h, w = data.shape
    if box_size is None:
        box_size = max(32, min(h, w) // 8)
    box_size = int(min(box_size, h, w))
    fill = np.where(finite, data, np.nanmedian(data[valid]) if valid.any() else 0).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # photutils warns on fully masked meshes (sky): expected
        bkg = Background2D(fill, box_size, mask=ignore, filter_size=(3, 3), exclude_percentile=60.0,
                           sigma_clip=SigmaClip(sigma=3.0, maxiters=5), bkg_estimator=MedianBackground())
    background = np.asarray(bkg.background, dtype=np.float32)
    safe = np.where(background > 0, background, np.nan)
    darkness = np.where(valid, 1.0 - fill / safe, 0.0)
    darkness = np.nan_to_num(darkness, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)
    # the background mesh is coarse on small frames: remove what is left of smooth shading
    # (vignetting is quadratic) with a robust cubic surface
    surface = _smooth_surface(darkness, valid & ~ignore if exclude is not None else valid)
    if surface is not None:
        darkness = np.where(valid, darkness - surface, 0.0).astype(np.float32)
        background = (background * (1 - surface)).astype(np.float32)
    return darkness, background


def _smooth_surface(values, sel, *, degree=3, n_sample=20_000):
    """Robust least-squares polynomial surface (sigma-clipped), or None when too few pixels."""
    idx = np.flatnonzero(sel.ravel())
    if idx.size < 50 * (degree + 1) ** 2:
        return None
    idx = idx[:: max(1, idx.size // n_sample)]
    h, w = values.shape
    y = (idx // w) / max(h - 1, 1) * 2 - 1
    x = (idx % w) / max(w - 1, 1) * 2 - 1
    v = values.ravel()[idx].astype(np.float64)
    terms = [(i, j) for i in range(degree + 1) for j in range(degree + 1 - i)]
    a = np.column_stack([y**i * x**j for i, j in terms])
    keep = np.ones(v.size, bool)
    coef = np.zeros(len(terms))
    for _ in range(5):
        coef = np.linalg.lstsq(a[keep], v[keep], rcond=None)[0]
        resid = v - a @ coef
        sig = _robust_sigma(resid[keep])
        if not (np.isfinite(sig) and sig > 0):
            break
        new = np.abs(resid) < 2.5 * sig
        if np.array_equal(new, keep):
            break
        keep = new
    yy = (np.arange(h, dtype=np.float32) / max(h - 1, 1) * 2 - 1)[:, None]
    xx = (np.arange(w, dtype=np.float32) / max(w - 1, 1) * 2 - 1)[None, :]
    surface = np.zeros((h, w), np.float32)
    for (i, j), cf in zip(terms, coef):
        surface += np.float32(cf) * (yy**i * xx**j)
    return surface


# ---------------------------------------------------------------------------
# Candidate analysis
# ---------------------------------------------------------------------------
class _Context:
    """Everything the per-candidate analysis needs, computed once per image."""

    def __init__(self, data, darkness, weight, valid, edge_distance, noise_pix, d_lo, d_hi):
        self.data = data
        self.darkness = darkness
        self.weight = weight
        self.valid = valid
        self.edge_distance = edge_distance
        self.noise_pix = noise_pix
        self.d_lo, self.d_hi = d_lo, d_hi
        self.shape = data.shape
        self.scale_diameters = self.scale_noises = None
        self.noise_factor = None      # per-pixel noise scaling (static map: fewer frames near edges)

    def scale_noise(self, diameter):
        """Robust scatter of the centre-minus-surround response at ``diameter`` (texture + noise)."""
        if self.scale_diameters is None:
            return 0.0
        return float(np.interp(np.log(diameter), np.log(self.scale_diameters), self.scale_noises))


def _box(center, radius, shape):
    y, x = center
    r = int(np.ceil(radius))
    y0, y1 = max(0, int(y) - r), min(shape[0], int(y) + r + 1)
    x0, x1 = max(0, int(x) - r), min(shape[1], int(x) + r + 1)
    return slice(y0, y1), slice(x0, x1)


def _radial_mean(values, rho, edges, weight):
    idx = np.digitize(rho.ravel(), edges) - 1
    ok = (idx >= 0) & (idx < len(edges) - 1) & (weight.ravel() > 0)
    s = np.bincount(idx[ok], values.ravel()[ok], minlength=len(edges) - 1)
    n = np.bincount(idx[ok], minlength=len(edges) - 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, s / np.maximum(n, 1), np.nan), n


def _crossing(profile, radii, level):
    """Outermost radius where a radial profile falls below ``level`` (linear interpolation)."""
    above = np.flatnonzero(np.nan_to_num(profile, nan=-np.inf) >= level)
    if above.size == 0:
        return np.nan
    i = above[-1]
    if i + 1 >= len(profile) or not np.isfinite(profile[i + 1]):
        return radii[i]
    p0, p1 = profile[i], profile[i + 1]
    if p0 == p1:
        return radii[i]
    return radii[i] + (p0 - level) / (p0 - p1) * (radii[i + 1] - radii[i])


def _analyse(ctx, peak, diameter0):
    """Measure one candidate around ``peak`` (y, x) of approximate diameter ``diameter0``.

    Returns a dict of features and the candidate's DUST pixels (slices + bool), or
    None when nothing significant is there.
    """
    d0 = max(float(diameter0), 3.0)
    radius = 2.7 * d0 + 10
    bin_ = max(1, int(radius // 80))   # keep large (deep-sky) cutouts ≤ ~160 px
    sl = _box(peak, radius, ctx.shape)
    dk = ctx.darkness[sl]
    wt = ctx.weight[sl]
    if bin_ > 1:
        dk, wt = _block(dk, bin_, wt)
    scale = float(bin_)
    ny, nx = dk.shape
    yy, xx = np.mgrid[0:ny, 0:nx].astype(np.float32)
    py, px = (peak[0] - sl[0].start - (bin_ - 1) / 2) / scale, (peak[1] - sl[1].start - (bin_ - 1) / 2) / scale
    rho = np.hypot(yy - py, xx - px) * scale         # full-resolution pixels
    # local baseline from an annulus well outside the candidate
    ann = (rho > 1.1 * d0 + 3) & (rho < 1.8 * d0 + 6) & (wt > 0.5)
    if ann.sum() < 8:
        ann = (rho > 0.6 * d0 + 2) & (wt > 0.5)
    if ann.sum() < 8:
        return None
    plane, base, base_scatter = _baseline_plane(dk, yy, xx, ann, py, px)
    dc = dk - plane
    # smoothing for the outline: enough to reach S/N ~ 8 per pixel, at most d0/8
    noise_bin = ctx.noise_pix / scale
    core = (rho < max(0.3 * d0, 1.5)) & (wt > 0.5)
    if not core.any():
        return None
    depth0 = max(float(np.percentile(dc[core], 75)), 1e-6)
    sigma = float(np.clip(8 * noise_bin / (2 * np.sqrt(np.pi) * depth0), 0.6, max(0.6, d0 / (8 * scale))))
    ds = _normconv(dc.astype(np.float32), wt, sigma)
    noise_s = noise_bin / (2 * np.sqrt(np.pi) * sigma) if sigma > 0.5 else noise_bin
    inner = (rho < max(0.55 * d0, 2.0)) & (wt > 0.5)
    depth = float(np.percentile(ds[inner], 95)) if inner.any() else 0.0
    if not depth > 3 * noise_s:
        return None
    # outline: the connected region above a fraction of the depth that touches the centre
    lab, _ = ndimage.label((ds > max(0.25 * depth, 3 * noise_s)) & (rho < 2 * d0 + 3))
    touching = np.unique(lab[(rho < max(0.45 * d0, 2.0)) & (lab > 0)])
    if touching.size == 0:
        return None
    shape_mask = np.isin(lab, touching)
    filled = ndimage.binary_fill_holes(shape_mask)
    # diameter at half depth (the pupil footprint, D = Δz / (N p)), central hole included
    half = ndimage.binary_fill_holes((ds > 0.5 * depth) & filled)
    d50 = 2 * np.sqrt(float(half.sum()) * scale**2 / np.pi)
    area_f = float(filled.sum()) * scale**2
    if area_f < 3:
        return None
    # DUST pixels: a lower threshold for the full extent of the soft edge
    lab2, _ = ndimage.label((ds > max(DUST_LEVEL * depth, 2.5 * noise_s)) & (rho < 2 * d0 + 3))
    keep = np.unique(lab2[shape_mask & (lab2 > 0)])
    pix_mask = np.isin(lab2, keep)
    # pixels left out of the measurement (stars, defects) inside the shadow are still shadowed
    holes = ndimage.binary_fill_holes(pix_mask) & ~pix_mask & (wt <= 0.5)
    pix_mask = (pix_mask & (wt > 0)) | holes
    # geometry from the darkness-weighted filled outline
    wts = np.clip(ds, 0, None) * filled
    tot = float(wts.sum())
    if tot <= 0:
        return None
    cy = float((wts * yy).sum() / tot)
    cx = float((wts * xx).sum() / tot)
    m = filled.astype(np.float64)
    mm = m.sum()
    my, mx = (m * yy).sum() / mm, (m * xx).sum() / mm
    cyy = (m * (yy - my) ** 2).sum() / mm
    cxx = (m * (xx - mx) ** 2).sum() / mm
    cxy = (m * (yy - my) * (xx - mx)).sum() / mm
    tr, det = cyy + cxx, cyy * cxx - cxy**2
    disc = np.sqrt(max(tr**2 / 4 - det, 0))
    l1, l2 = tr / 2 + disc, max(tr / 2 - disc, 1e-9)
    elong = 1 - np.sqrt(l2 / l1) if l1 > 0 else 0.0
    r_eq = np.sqrt(area_f / np.pi)
    gy = sl[0].start + (cy + 0.5) * scale - 0.5
    gx = sl[1].start + (cx + 0.5) * scale - 0.5
    if elong > 0.6:
        # a ridge (intergranular lane, filament, limb): no dust shadow is that elongated;
        # skip the costly measurements
        feat = dict(_RIDGE, y=gy, x=gx, depth=depth, diameter=2 * r_eq, elongation=float(elong),
                    area=float(pix_mask.sum()) * scale**2, snr=depth / max(noise_s, 1e-12),
                    noise=noise_s, sigma=sigma * scale)
        return feat, sl, np.zeros(0, bool), None
    # is the surrounding ring itself a local dark structure (a penumbra), or just a gradient?
    outer = (rho > 1.8 * d0 + 6) & (rho < 2.6 * d0 + 10) & (wt > 0.5)
    surround = 0.0
    if outer.sum() >= 12:
        surround = base - _baseline_plane(dk, yy, xx, outer, py, px)[1]
    # radial profile about the centroid, in units of the equivalent radius
    rho_c = np.hypot(yy - cy, xx - cx) * scale
    edges = np.linspace(0, 2.4, 25) * r_eq
    prof, counts = _radial_mean(ds, rho_c, edges, wt)
    mids = 0.5 * (edges[1:] + edges[:-1])
    pmax = np.nanmax(prof[:12]) if np.isfinite(prof[:12]).any() else depth
    pmax = max(pmax, 1e-9)
    center_ratio = float(np.nanmean(prof[:3]) / pmax) if np.isfinite(prof[:3]).any() else 1.0
    r50 = _crossing(prof, mids, 0.5 * pmax)
    r10 = _crossing(prof, mids, 0.1 * pmax)
    tail = float(r10 / r50) if np.isfinite(r10) and np.isfinite(r50) and r50 > 0 else np.nan
    # plateau: share of the outline within 75 % of the depth
    plateau = float((ds[shape_mask] > 0.75 * depth).sum() / max(shape_mask.sum(), 1))
    # bright rim just outside (Fresnel diffraction of the grain edge) in noise units
    rim_zone = (rho_c > 1.05 * r_eq) & (rho_c < 1.6 * r_eq + 2) & (wt > 0.5) & ~pix_mask
    rim = float(-np.mean(ds[rim_zone]) / max(noise_s / np.sqrt(max(rim_zone.sum(), 1)), 1e-9)) \
        if rim_zone.sum() > 4 else 0.0
    rim_frac = float(-np.mean(ds[rim_zone]) / depth) if rim_zone.sum() > 4 else 0.0
    # texture continuity (full resolution): rms of the fine structure inside vs outside
    texture = _texture_ratio(ctx, sl, bin_, cy, cx, r_eq, ds >= 0.8 * depth, depth)
    # place on the disc
    iy, ix = int(np.clip(round(gy), 0, ctx.shape[0] - 1)), int(np.clip(round(gx), 0, ctx.shape[1] - 1))
    edge_dist = float(ctx.edge_distance[iy, ix])
    # share of the grown outline where the map has no data (frame edge, limb margin, edge of
    # the area the frames cover): its shape is then cut, not elongated or ragged
    grown = ndimage.binary_dilation(filled, iterations=2)
    truncated = float(np.mean(wt[grown] <= 0.5)) if grown.any() else 0.0
    if bin_ == 1:
        ys_, xs_ = np.nonzero(grown)
        ys_, xs_ = ys_ + sl[0].start, xs_ + sl[1].start
        at_edge = (ys_ == 0) | (xs_ == 0) | (ys_ == ctx.shape[0] - 1) | (xs_ == ctx.shape[1] - 1)
        truncated = max(truncated, float(np.mean(at_edge)) * 10)
    feat = {
        "y": gy, "x": gx, "depth": depth, "area": float(pix_mask.sum()) * scale**2,
        "diameter": 2 * r_eq, "d50": d50, "elongation": float(elong),
        # area over that of the moment-equivalent ellipse: 1 for a disc, less for ragged shapes
        "solidity": float(min(1.0, filled.sum() / max(4 * np.pi * np.sqrt(l1 * l2), 1e-9))),
        "center_ratio": center_ratio, "tail": tail, "plateau": plateau,
        "rim": rim, "rim_frac": rim_frac, "texture": texture,
        "surround": surround, "surround_scatter": base_scatter, "snr": depth / max(noise_s, 1e-12),
        "edge_distance": edge_dist, "noise": noise_s, "sigma": sigma * scale, "truncated": truncated,
    }
    if bin_ > 1:
        full = _unblock(pix_mask, bin_, (sl[0].stop - sl[0].start, sl[1].stop - sl[1].start))
        tmpl = _unblock(np.clip(ds, 0, None), bin_, full.shape)
    else:
        full, tmpl = pix_mask, np.clip(ds, 0, None)
    return feat, sl, full & ctx.valid[sl], tmpl


def _baseline_plane(values, yy, xx, sel, py, px):
    """Robust plane fitted to ``values`` on ``sel``: (plane image, level at the centre, scatter)."""
    idx = np.flatnonzero(sel.ravel())
    idx = idx[:: max(1, idx.size // 1500)]
    v = values.ravel()[idx].astype(np.float64)
    a = np.column_stack([np.ones(v.size), yy.ravel()[idx] - py, xx.ravel()[idx] - px])
    keep = np.ones(v.size, bool)
    coef = np.array([np.median(v), 0.0, 0.0])
    for _ in range(3):
        if keep.sum() < 6:
            break
        coef = np.linalg.lstsq(a[keep], v[keep], rcond=None)[0]
        resid = v - a @ coef
        sig = _robust_sigma(resid[keep])
        if not (np.isfinite(sig) and sig > 0):
            break
        keep = np.abs(resid) < 3 * sig
    resid = v - a @ coef
    plane = coef[0] + coef[1] * (yy - py) + coef[2] * (xx - px)
    return plane.astype(np.float32), float(coef[0]), _robust_sigma(resid[keep] if keep.any() else resid)


def _ring_medians(values, rho, step, n_rings, min_count=6):
    """Median of ``values`` in rings of width ``step`` (the units of ``rho``); NaN where too few."""
    idx = (rho / step).astype(np.int64)
    sel = idx < n_rings
    idx, v = idx[sel], values[sel]
    counts = np.bincount(idx, minlength=n_rings)
    order = np.argsort(idx, kind="stable")
    idx, v = idx[order], v[order]
    starts = np.concatenate([[0], np.cumsum(counts)])
    med = np.full(n_rings, np.nan)
    for i in np.flatnonzero(counts >= min_count):
        med[i] = np.median(v[starts[i]:starts[i + 1]])
    return med, counts


def _refine_extent(ctx, c, others):
    """DUST pixels of an accepted shadow with the baseline where its own radial profile flattens.

    The first measurement takes the baseline from an annulus at a fixed multiple
    of the scale-space diameter: inside the wing of a large soft shadow whose
    size was underestimated, or on the neighbouring shadows of a dense field.
    Here the azimuthal medians of the darkness about the centroid (the other
    shadows, ``others``, left out) are followed outwards from the half-depth
    radius to where they stop falling; the baseline is a robust plane fitted on
    the next rings, the centroid is measured again above it (and the profile
    with it, until the centre settles), and the DUST pixels are those deeper
    than 10 % of the depth above it, within the flattening radius.

    Returns ``(slices, pixels, info)``, or None when the profile does not flatten
    inside the cut-out (the first measurement is kept).
    """
    f = c["feat"]
    r0 = 0.5 * max(f["diameter"], f.get("d50", 0.0), 3.0)
    reach = 3.0 * r0 + 12
    bin_ = max(1, int(reach // 80))
    sl = _box((f["y"], f["x"]), reach, ctx.shape)
    dk = ctx.darkness[sl]
    wt = ctx.weight[sl]
    wx = np.where(others[sl], 0.0, wt).astype(np.float32)
    if bin_ > 1:
        dk, wt = _block(dk, bin_, wt)
        wx = _block(np.zeros_like(ctx.darkness[sl]), bin_, ctx.weight[sl] * ~others[sl])[1]
    scale = float(bin_)
    ny, nx = dk.shape
    yy, xx = np.mgrid[0:ny, 0:nx].astype(np.float32)
    py = (f["y"] - sl[0].start - (bin_ - 1) / 2) / scale
    px = (f["x"] - sl[1].start - (bin_ - 1) / 2) / scale
    use = wx > 0.5
    step = scale
    n_rings = int(reach / step)
    width = max(4, round(EXTENT_WINDOW * r0 / step))
    depth1 = float(f["depth"])
    sigma = max(0.6, float(f["sigma"]) / scale)
    noise_bin = ctx.noise_pix / scale
    noise_s = noise_bin / (2 * np.sqrt(np.pi) * sigma) if sigma > 0.5 else noise_bin
    result = None
    for _ in range(EXTENT_ITERATIONS):
        rho = np.hypot(yy - py, xx - px) * scale
        prof, _ = _ring_medians(dk[use], rho[use], step, n_rings)
        if not np.isfinite(prof).sum() > 8:
            break
        smooth = ndimage.median_filter(np.nan_to_num(prof, nan=np.nanmedian(prof)), size=3, mode="nearest")
        smooth[~np.isfinite(prof)] = np.nan
        inner = np.arange(n_rings) * step < max(r0, 2 * step)
        if not np.isfinite(smooth[inner]).any():
            break
        top = float(np.nanmax(smooth[inner]))
        # start where the profile has fallen by half of the first depth
        below = np.flatnonzero((smooth < top - 0.5 * depth1) & ~inner)
        i0 = int(below[0]) if below.size else int(np.ceil(r0 / step))
        # noise of one ring median from its ring-to-ring scatter beyond the start
        d = np.diff(prof[i0:])
        sig_ring = _robust_sigma(d[np.isfinite(d)]) / np.sqrt(2) if np.isfinite(d).sum() >= 10 else np.nan
        if not np.isfinite(sig_ring):
            sig_ring = 0.0
        tol = max(EXTENT_TOL * sig_ring, EXTENT_TOL_DEPTH * depth1)
        # the first ring (median of three) not above the rings beyond it
        edge = None
        for i in range(i0, n_rings - width):
            nxt = prof[i + 1:i + 1 + width]
            if not (np.isfinite(smooth[i]) and np.isfinite(nxt).sum() >= width // 2):
                continue
            if smooth[i] - np.nanmedian(nxt) < tol:
                edge = i
                break
        if edge is None:
            break
        r_edge = edge * step
        ann = use & (rho >= r_edge) & (rho < r_edge + width * step)
        if ann.sum() < 8:
            break
        plane, base, _ = _baseline_plane(dk, yy, xx, ann, py, px)
        ds = _normconv((dk - plane).astype(np.float32), wt, sigma)
        core = (rho < max(1.1 * r0, 2 * scale)) & (wt > 0.5)
        if not core.any():
            break
        depth = float(np.percentile(ds[core], 95))
        if not depth > 3 * noise_s:
            break
        outline = ndimage.binary_fill_holes((ds > 0.25 * depth) & (rho < 1.2 * r0 + 2 * scale))
        lab, _ = ndimage.label((ds > max(DUST_LEVEL * depth, 2.5 * noise_s)) & (rho < r_edge + 2 * scale))
        keep = np.unique(lab[outline & (lab > 0)])
        if keep.size == 0:
            break
        result = (lab, keep, r_edge, base, depth, tol)
        # the centre above the new baseline (measured again about it when it moved): the
        # geometric centre of the half-depth region: the steepest, best-defined contour
        wts = ndimage.binary_fill_holes((ds > 0.5 * depth) & outline).astype(np.float32)
        tot = float(wts.sum())
        if tot <= 0:
            break
        ny_, nx_ = float((wts * yy).sum() / tot), float((wts * xx).sum() / tot)
        moved = np.hypot(ny_ - py, nx_ - px) * scale
        py, px = ny_, nx_
        if moved < 0.5:
            break
    if result is None:
        return None
    lab, keep, r_edge, base, depth, tol = result
    pix = np.isin(lab, keep)
    # pixels left out of the measurement inside the shadow are still shadowed
    holes = ndimage.binary_fill_holes(pix) & ~pix & (wt <= 0.5)
    pix = (pix & (wt > 0)) | holes
    if bin_ > 1:
        pix = _unblock(pix, bin_, (sl[0].stop - sl[0].start, sl[1].stop - sl[1].start))
    info = {"r_edge": r_edge, "base": base, "depth": depth, "tol": tol,
            "y": sl[0].start + (py + 0.5) * scale - 0.5, "x": sl[1].start + (px + 0.5) * scale - 0.5}
    return sl, pix & ctx.valid[sl], info


#: Features of a candidate rejected early as a ridge (only shape and depth are measured).
_RIDGE = {"solidity": 0.0, "center_ratio": 1.0, "tail": np.nan, "plateau": 0.0, "rim": 0.0, "rim_frac": 0.0,
          "texture": np.nan, "surround": 0.0, "surround_scatter": 0.0, "edge_distance": np.inf, "ridge": True}


def _texture_ratio(ctx, sl, bin_, cy, cx, r_eq, plateau, depth):
    """Relative rms of the fine texture on the plateau over that in a ring outside.

    Dust multiplies the scene, so its texture continues through the shadow
    (ratio ≈ 1); pores and umbrae replace it with a smooth dark patch (ratio
    ≪ 1).  The noise is subtracted in quadrature on both sides.  NaN when the
    plateau is too small or the scene has no texture above the noise.
    """
    if r_eq < 4:
        return np.nan
    if bin_ > 1:
        plateau = _unblock(plateau, bin_, (sl[0].stop - sl[0].start, sl[1].stop - sl[1].start))
    # a sub-box just large enough for the outer ring
    cyf, cxf = (cy + 0.5) * bin_ - 0.5, (cx + 0.5) * bin_ - 0.5
    reach = int(np.ceil(2.2 * r_eq + 6))
    y0, x0 = max(0, int(cyf) - reach), max(0, int(cxf) - reach)
    y1, x1 = min(plateau.shape[0], int(cyf) + reach + 1), min(plateau.shape[1], int(cxf) + reach + 1)
    sub = (slice(sl[0].start + y0, sl[0].start + y1), slice(sl[1].start + x0, sl[1].start + x1))
    img = ctx.data[sub].astype(np.float32)
    wt = ctx.weight[sub]
    inside = ndimage.binary_erosion(plateau[y0:y1, x0:x1], iterations=1) & (wt > 0)
    yy, xx = np.mgrid[0:img.shape[0], 0:img.shape[1]]
    rho = np.hypot(yy - (cyf - y0), xx - (cxf - x0))
    outside = (rho > 1.4 * r_eq + 2) & (rho < 2.2 * r_eq + 4) & (wt > 0)
    if inside.sum() < 12 or outside.sum() < 24:
        return np.nan
    logi = np.log(np.clip(img, 1e-6, None))
    hp = logi - _normconv(logi, wt, 1.5)
    noise = ctx.noise_pix * 0.8     # rms of this high-pass of white noise ≈ 0.8 σ
    t_out = float(np.mean(hp[outside] ** 2) - noise**2)
    t_in = float(np.mean(hp[inside] ** 2) - (noise / max(1 - depth, 0.05)) ** 2)
    if t_out < noise**2:
        return np.nan          # no texture to compare with
    return float(np.sqrt(max(t_in, 0) / t_out))


def _pixel_noise(darkness, valid):
    """White-noise sigma per pixel, insensitive to texture (Immerkær 1996 Laplacian estimator)."""
    kernel = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)
    resp = ndimage.convolve(darkness, kernel, mode="nearest")
    inner = ndimage.binary_erosion(valid, iterations=2)
    sigma = _robust_sigma(resp[inner]) / 6.0
    if not np.isfinite(sigma) or sigma <= 0:
        sigma = 1e-4
    return float(sigma)


# ---------------------------------------------------------------------------
# Scale space
# ---------------------------------------------------------------------------
def _scales(d_lo, d_hi, shape):
    """Diameters (px) to search: a geometric ladder from d_lo to d_hi, ratio 1.5."""
    d_hi = min(d_hi, 0.6 * min(shape))
    n = max(1, int(np.ceil(np.log(max(d_hi, d_lo) / d_lo) / np.log(1.5))) + 1)
    return d_lo * 1.5 ** np.arange(n)


def _significance(darkness, weight, diameters, shape):
    """Max over scales of the centre-minus-surround significance, and the best diameter.

    At diameter D the centre is a Gaussian of sigma D/4 and the surround one
    of 3 D/4; the response is divided by its robust scatter over the valid
    pixels at that scale.  Large scales run on binned images.
    """
    h, w = shape
    smax = np.zeros(shape, np.float32)
    dbest = np.zeros(shape, np.float32)
    noise = []
    cache = {}
    for diameter in diameters:
        sigma = diameter / 4.0
        b = int(2 ** max(0, np.floor(np.log2(max(sigma, 1)))))      # σ/b in [1, 2)
        while b > 1 and min(h, w) // b < 24:
            b //= 2
        if b not in cache:
            cache[b] = _block(darkness, b, weight)
        db, wb = cache[b]
        # darkness is 0 (neutral) where the weight is 0, so a plain Gaussian of d·w is unbiased
        # there; it costs half a normalised convolution
        dw = db * wb
        resp = (ndimage.gaussian_filter(dw, sigma / b, mode="nearest", truncate=3.0)
                - ndimage.gaussian_filter(dw, 3 * sigma / b, mode="nearest", truncate=3.0))
        ok = wb > 0.5
        n = _clipped_sigma(resp[ok])
        noise.append(n)
        if not (np.isfinite(n) and n > 0):
            continue
        sig = np.where(ok, resp / n, 0).astype(np.float32)
        if b > 1:
            sig = _unblock(sig, b, shape)
        better = sig > smax
        smax[better] = sig[better]
        dbest[better] = diameter
    return smax, dbest, noise


# ---------------------------------------------------------------------------
# Motion: fixed on the sensor or moving with the scene?
# ---------------------------------------------------------------------------
def _mono(frame):
    frame = np.asarray(frame, dtype=np.float32)
    return frame.mean(axis=-1) if frame.ndim == 3 else frame


class _MotionAccumulator:
    """Least-squares split of one candidate's frame-to-frame changes.

    For frame k with scene shift s_k, the log-frame minus the log-median,
    ``δ_k``, is fitted as ``β_f · m_k^feat + β_t · m_k^tex`` (per-pixel and
    per-frame constants removed), where ``m_k^feat`` is how the candidate's
    darkness in the median would change if it moved with the scene, and
    ``m_k^tex`` the same for the rest of the median (the texture).  Dust gives
    ``β_f ≈ 0``, scene features ``β_f ≈ 1``; ``β_t ≈ 1`` checks the shifts.
    Pixels that a frame does not see (outside the cutout after the shift, or
    on the sky beyond a drifting limb) are left out of that frame.
    """

    _KEYS = ("n", "d", "f", "t", "df", "dt", "ff", "tt", "ft", "dd")

    def __init__(self, median, sl, template, pix_mask, weight, radius):
        bin_ = max(1, int(max(sl[0].stop - sl[0].start, sl[1].stop - sl[1].start) // 160))
        self.sl, self.bin = sl, bin_
        med = np.clip(median[sl], 1e-6, None).astype(np.float32)
        grow = max(2, int(round(0.15 * radius)))
        support = ndimage.binary_dilation(pix_mask, iterations=grow)
        taper = ndimage.gaussian_filter(support.astype(np.float32), 1.0)
        tmpl = np.clip(template * taper, 0, 0.95)
        zone = ndimage.binary_dilation(pix_mask, iterations=grow + 3) & (weight[sl] > 0)
        if bin_ > 1:
            med, _ = _block(med, bin_)
            tmpl, _ = _block(tmpl, bin_)
            zone = _block(zone.astype(np.float32), bin_)[0] > 0.5
        self.L = np.log(med)
        self.lnT = np.log1p(-tmpl)
        self.Ltex = self.L - self.lnT
        self.zone = zone
        self.sums = {k: np.zeros(int(zone.sum())) for k in self._KEYS}
        self.k = 0

    def add(self, frame, level, shift):
        sub = frame[self.sl] / level
        if self.bin > 1:
            sub, _ = _block(sub, self.bin)
        s = np.asarray(shift, float) / self.bin
        ny, nx = self.L.shape
        # pixels whose scene position is inside the cutout, and not on the sky in this frame
        yy = np.arange(ny)[:, None] - s[0]
        xx = np.arange(nx)[None, :] - s[1]
        inside = (yy >= 0) & (yy <= ny - 1) & (xx >= 0) & (xx <= nx - 1)
        ok = (inside & (sub > 0.3 * np.exp(self.L)))[self.zone]
        if ok.sum() < 4:
            return
        d = (np.log(np.clip(sub, 1e-6, None)) - self.L)[self.zone]
        mf = (ndimage.shift(self.lnT, s, order=3, mode="nearest") - self.lnT)[self.zone]
        mt = (ndimage.shift(self.Ltex, s, order=3, mode="nearest") - self.Ltex)[self.zone]
        d = np.where(ok, d - d[ok].mean(), 0)
        mf = np.where(ok, mf - mf[ok].mean(), 0)
        mt = np.where(ok, mt - mt[ok].mean(), 0)
        a = self.sums
        a["n"] += ok
        for key, v in (("d", d), ("f", mf), ("t", mt), ("df", d * mf), ("dt", d * mt), ("ff", mf * mf),
                       ("tt", mt * mt), ("ft", mf * mt), ("dd", d * d)):
            a[key] += v
        self.k += 1

    def result(self):
        """(β_f, σ(β_f), β_t) or NaNs when the frames do not constrain the candidate."""
        a = self.sums
        n = a["n"]
        use = n >= 3
        if self.k < 5 or use.sum() < 4:
            return np.nan, np.nan, np.nan
        n = n[use]

        def c(x, y):  # centred cross-products, summed over pixels
            return float(np.sum(a[x + y][use] - a[x][use] * a[y][use] / n))

        cdf, cdt, cff, ctt, cft, cdd = c("d", "f"), c("d", "t"), c("f", "f"), c("t", "t"), c("f", "t"), c("d", "d")
        m = np.array([[cff, cft], [cft, ctt]])
        if not np.all(np.isfinite(m)) or np.linalg.det(m) <= 1e-12 * max(cff * ctt, 1e-300):
            return np.nan, np.nan, np.nan
        beta = np.linalg.solve(m, [cdf, cdt])
        rss = max(cdd - beta @ [cdf, cdt], 0.0)
        dof = max(float(np.sum(n - 1)) - self.k - 2, 1.0)
        cov = rss / dof * np.linalg.inv(m)
        return float(beta[0]), float(np.sqrt(max(cov[0, 0], 0))), float(beta[1])


def _motion_test(source, median, cands, weight, drift, *, max_frames):
    """Run `_MotionAccumulator` for every candidate over a subsample of the registered frames."""
    idx = np.asarray(drift.frame_index)
    shifts = np.asarray(drift.shifts, dtype=np.float64)
    if idx.size > max_frames:
        pick = np.unique(np.round(np.linspace(0, idx.size - 1, max_frames)).astype(int))
        idx, shifts = idx[pick], shifts[pick]
    accs = [_MotionAccumulator(median, c["sl"], c["template"], c["pix"], weight,
                               0.5 * c["feat"]["diameter"]) for c in cands]
    dust = np.zeros(median.shape, bool)
    for c in cands:
        dust[c["sl"]] |= c["pix"]
    sample = np.flatnonzero(((weight > 0) & ~dust).ravel())
    sample = sample[:: max(1, sample.size // 50_000)]
    ref_level = float(np.median(median.ravel()[sample]))
    for i, shift in zip(idx, shifts):
        frame = _mono(source.read(int(i)))
        level = float(np.median(frame.ravel()[sample])) / ref_level if ref_level > 0 else 1.0
        if not level > 0:
            continue
        for acc in accs:
            acc.add(frame, level, shift)
    return [acc.result() for acc in accs]


def _open_source(frames, shape):
    """An open frame source for ``frames`` (and whether we opened it), checked against ``shape``."""
    from ..io.frames import open_frames

    own = not (hasattr(frames, "read") and hasattr(frames, "n_frames"))
    source = open_frames(frames) if own else frames
    if tuple(source.frame_shape[:2]) != tuple(shape):
        if own:
            source.close()
        raise InputError(f"the frames ({source.frame_shape[0]}x{source.frame_shape[1]}) do not match "
                         f"the median ({shape[0]}x{shape[1]})")
    pattern = getattr(source, "bayer_pattern", None) or (source.meta or {}).get("BAYERPAT")
    if pattern and len(source.frame_shape) == 2:
        source = _CFANormalised(source, pattern, own=own)
    return source, own


class _CFANormalised(FrameSource):
    """Frames of a raw colour mosaic with their phases divided by their gains (as the median is)."""

    def __init__(self, source, pattern, *, own):
        self._source, self._own, self.pattern = source, own, pattern
        self.n_frames, self.frame_shape = source.n_frames, tuple(source.frame_shape)
        self.dtype = np.dtype(np.float32)
        self.paths, self.name = source.paths, source.name

    @property
    def meta(self):
        return self._source.meta

    def read(self, frame_index):
        return cfa_normalise(self._source.read(frame_index), self.pattern)

    def close(self):
        if self._own:
            self._source.close()


def _inside(shape, m, h, w, s):
    """Pixels of a grid padded by ``m`` that come from inside the (h, w) frame after a shift ``s``."""
    out = np.zeros(shape, bool)
    y0, y1 = int(np.ceil(m + s[0])), int(np.floor(m + s[0] + h - 1))
    x0, x1 = int(np.ceil(m + s[1])), int(np.floor(m + s[1] + w - 1))
    out[max(y0, 0):max(y1 + 1, 0), max(x0, 0):max(x1 + 1, 0)] = True
    return out


def _shift_mask(mask, s):
    """A boolean mask moved by the shift rounded to whole pixels and eroded by one pixel."""
    dy, dx = int(round(s[0])), int(round(s[1]))
    h, w = mask.shape
    out = np.zeros_like(mask)
    out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        mask[max(-dy, 0):h - max(dy, 0), max(-dx, 0):w - max(dx, 0)]
    return ndimage.binary_erosion(out)


def _staggered(g, ok, *, axis):
    """Centre gradients → forward differences: the mean of pixels i and i+1 along ``axis`` (one alone
    where only one is known, 0 where neither is; the last entry is unused by the solver)."""
    g = np.where(ok, g, 0).astype(np.float64)
    okf = ok.astype(np.float64)
    a = [slice(None)] * g.ndim
    b = [slice(None)] * g.ndim
    a[axis], b[axis] = slice(None, -1), slice(1, None)
    num = g[tuple(a)] + g[tuple(b)]
    cnt = okf[tuple(a)] + okf[tuple(b)]
    out = np.zeros_like(g)
    out[tuple(a)] = np.divide(num, cnt, out=np.zeros_like(num), where=cnt > 0)
    return out


def _poisson_integrate(gy, gx, weight):
    """Least-squares potential φ with ∇φ ≈ (gy, gx) (Neumann boundaries, DCT solver).

    ``gy``, ``gx`` are gradients *at the pixel centres*; the solver works on
    forward differences, which sit half-way between pixels, so each is first
    averaged with its neighbour below/right (integrating centre gradients as
    forward differences would shift φ by half a pixel on both axes).
    """
    from scipy import fft

    gy = _staggered(gy, weight > 0, axis=0)
    gx = _staggered(gx, weight > 0, axis=1)
    # divergence with backward differences (the adjoint of the forward gradient)
    div = np.zeros_like(gy)
    div[0, :] += gy[0, :]
    div[1:-1, :] += gy[1:-1, :] - gy[:-2, :]
    div[-1, :] -= gy[-2, :]
    div[:, 0] += gx[:, 0]
    div[:, 1:-1] += gx[:, 1:-1] - gx[:, :-2]
    div[:, -1] -= gx[:, -2]
    h, w = div.shape
    d = fft.dctn(div, type=2, norm="ortho", workers=2)
    ky = 2 * np.cos(np.pi * np.arange(h) / h) - 2
    kx = 2 * np.cos(np.pi * np.arange(w) / w) - 2
    denom = ky[:, None] + kx[None, :]
    denom[0, 0] = 1.0
    d /= denom
    d[0, 0] = 0.0
    return fft.idctn(d, type=2, norm="ortho", workers=2).astype(np.float32)


def _static_map(source, median, valid, drift, *, max_frames, highpass):
    """Log-transmission of what stays fixed on the sensor while the scene moves.

    The scene is estimated as the mean of the frames registered onto it
    (``scene``).  For frame k, ``r_k = ln F_k − ln scene(x − s_k)`` cancels the
    scene (granulation, pores, spots, stars) and leaves
    ``ln T(x) − ln T_s(x − s_k)``, where ``T_s`` is the dust as smeared in
    the registered mean.  Per pixel, the intercept of ``r_k`` against ``s_k``
    is ``ln T − ln T_s`` (all of ``ln T`` when the drift is large) and the
    slope is ``∇ ln T_s`` (informative when the motion is small), whose
    least-squares integral restores ``ln T_s``.  Their sum estimates ``ln T``
    in both regimes, free of the scene's texture.  Returns the map (0 where
    unknown), its weight, or None when the motion is too small to tell.
    """
    idx = np.asarray(drift.frame_index)
    shifts = np.asarray(drift.shifts, dtype=np.float64)
    if idx.size > max_frames:
        pick = np.unique(np.round(np.linspace(0, idx.size - 1, max_frames)).astype(int))
        idx, shifts = idx[pick], shifts[pick]
    cen = shifts - shifts.mean(axis=0)
    if idx.size < 5 or np.linalg.eigvalsh(cen.T @ cen / idx.size)[0] < 0.3**2:
        return None       # too little motion in some direction: the slope is undetermined
    shape = median.shape

    def load(i):
        return _mono(source.read(int(i)))

    # 1. the scene: registered mean over the frames that see each scene pixel, on a grid
    #    padded by the largest shift (near the frame edges the scene is seen by fewer frames)
    h, w = shape
    m = int(np.ceil(np.abs(shifts).max(initial=0.0))) + 2
    acc = np.zeros((h + 2 * m, w + 2 * m), np.float64)
    cnt = np.zeros(acc.shape, np.float32)
    for i, s in zip(idx, shifts):
        frame = np.pad(load(i), m, mode="edge")
        inb = _inside(acc.shape, m, h, w, -s)
        acc[inb] += ndimage.shift(frame, -s, order=3, mode="nearest")[inb]
        cnt[inb] += 1
    scene_valid = cnt >= 0.25 * idx.size
    scene = np.where(scene_valid, acc / np.maximum(cnt, 1), np.nan)
    del acc
    level_sky = _SKY_FRACTION * float(np.nanpercentile(scene[scene_valid], 90)) if scene_valid.any() else 0
    scene_valid &= scene > level_sky
    fill_idx = ndimage.distance_transform_edt(~scene_valid, return_distances=False, return_indices=True)
    scene_f = np.log(np.clip(scene[tuple(fill_idx)], 1e-6, None)).astype(np.float32)
    del scene, fill_idx
    # 2. per-pixel regression of r_k on the shift, over the frames that see the pixel's scene
    keys = ("n", "y", "x", "yy", "xx", "xy", "r", "ry", "rx")
    acc = {k: np.zeros(shape, np.float32) for k in keys}
    # the scene within a few pixels of the limb, of stars and of umbrae is too steep to
    # re-shift accurately: leave it out (interpolation residuals there look static)
    gyy, gxx = np.gradient(ndimage.gaussian_filter(scene_f, 0.7))
    steep = ndimage.binary_dilation(np.hypot(gyy, gxx) > 0.3, iterations=2)
    sv = ndimage.binary_erosion(scene_valid, iterations=4) & ~steep
    del gyy, gxx, steep
    for (i, s), c in zip(zip(idx, shifts), cen):
        frame = load(i)
        ok = _shift_mask(sv, s)[m:m + h, m:m + w] & valid
        r = np.log(np.clip(frame, 1e-6, None)) - ndimage.shift(scene_f, s, order=3, mode="nearest")[m:m + h, m:m + w]
        # the frame's own level (transparency, exposure), measured against the shifted scene
        sub = r[ok][:: max(1, int(ok.sum()) // 50_000)]
        r = np.where(ok, r - (np.median(sub) if sub.size else 0.0), 0.0)
        okf = ok.astype(np.float32)
        acc["n"] += okf
        acc["y"] += okf * c[0]
        acc["x"] += okf * c[1]
        acc["yy"] += okf * (c[0] * c[0])
        acc["xx"] += okf * (c[1] * c[1])
        acc["xy"] += okf * (c[0] * c[1])
        acc["r"] += r
        acc["ry"] += r * c[0]
        acc["rx"] += r * c[1]
    n = np.maximum(acc["n"], 1)
    # centred (per-pixel) second moments of the shifts and cross-moments with r
    cyy = acc["yy"] - acc["y"] ** 2 / n
    cxx = acc["xx"] - acc["x"] ** 2 / n
    cxy = acc["xy"] - acc["y"] * acc["x"] / n
    ry = acc["ry"] - acc["r"] * acc["y"] / n
    rx = acc["rx"] - acc["r"] * acc["x"] / n
    det = cyy * cxx - cxy**2
    # well-posed where the pixel is seen in enough frames with motion in both directions
    lam_min = 0.5 * (cyy + cxx) - np.sqrt(0.25 * (cyy - cxx) ** 2 + cxy**2)
    good = (acc["n"] >= 0.35 * idx.size) & (lam_min >= 0.3**2 * n) & (det > 0)
    # away from the limb and the edges of the covered area, where interpolation residuals of
    # steep moving edges would leak in
    good = ndimage.binary_erosion(good, iterations=4)
    safe_det = np.where(good, det, 1.0)
    gy = np.where(good, (cxx * ry - cxy * rx) / safe_det, 0.0)
    gx = np.where(good, (cyy * rx - cxy * ry) / safe_det, 0.0)
    intercept = (acc["r"] - gy * acc["y"] - gx * acc["x"]) / n
    # noise grows where fewer frames (or less motion) constrain the pixel, and where the scene
    # is faint (shot noise: an umbra at 20 % of the disc is twice as noisy in relative terms)
    level = ndimage.gaussian_filter(np.asarray(median, np.float32), 2.0)
    ref = float(np.median(level[valid])) if valid.any() else 1.0
    faint = np.sqrt(ref / np.clip(level, 0.05 * ref, None)) if ref > 0 else 1.0
    nfac = np.where(good, np.sqrt(idx.size / n) * np.maximum(faint, 1.0), 1.0).astype(np.float32)
    del acc
    wt = good.astype(np.float32)
    phi = _poisson_integrate(gy, gx, wt)
    lnt = np.where(good, intercept + phi, 0.0).astype(np.float32)
    # the largest scales of the integral are ill-determined (and vignetting is not dust)
    lnt -= _normconv(lnt, wt, highpass) * wt
    return lnt, wt, nfac


# ---------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------
def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _morphology_evidence(f, *, d_lo, d_hi, has_limb, optics, z_own=np.nan):
    """Log-odds that a candidate is dust from its shape alone, and the main reason against.

    Shape measurements of a barely significant candidate are noise: the terms
    in favour of dust are scaled by a reliability rising from 0 at 3 sigma to 1 at 10.
    """
    reliability = float(np.clip((z_own - 3) / 7, 0, 1)) if np.isfinite(z_own) else 0.0
    terms = {"prior": 0.5}
    e = f["elongation"]
    # a shadow cut by the edge of the data looks elongated and ragged: do not hold it against it
    cut = 1.0 if f.get("truncated", 0.0) < 0.05 else 0.3
    terms["elongated"] = -10.0 * max(e - 0.25, 0.0) * cut
    terms["irregular"] = -8.0 * max(0.8 - f["solidity"], 0.0) * cut
    annulus = f["center_ratio"] < 0.6 and f["diameter"] >= 8
    terms["annulus"] = 2.5 if annulus else 0.0
    if np.isfinite(f["tail"]) and not annulus:
        reliability = min(1.0, f["snr"] / 30.0)
        terms["profile"] = reliability * float(np.clip(-5.0 * (f["tail"] - 1.6), -3.0, 1.5))
    terms["plateau"] = float(np.clip(3.0 * (f["plateau"] - 0.3), -1.0, 1.5))
    t = f["texture"]
    if np.isfinite(t):
        terms["texture"] = 1.0 if 0.6 <= t <= 1.6 else (-2.5 if t < 0.3 else 0.0)
    if f["rim"] > 4 and f["rim_frac"] > 0.03:
        terms["rim"] = 1.0
    if f["surround"] > max(0.04, 5 * f["surround_scatter"]):
        terms["in_dark_structure"] = -2.5
    if has_limb and f["edge_distance"] < max(8.0, 0.6 * f["diameter"]):
        terms["at_limb"] = -2.0
    if f["diameter"] < 0.8 * d_lo:
        terms["size"] = -3.0          # smaller than any shadow searched for (defects, noise)
    elif optics and not f["diameter"] <= 1.3 * d_hi:
        terms["size"] = -2.0
    for key in ("annulus", "profile", "plateau", "texture", "rim"):
        if terms.get(key, 0) > 0:
            terms[key] *= reliability
    total = float(sum(terms.values()))
    worst = min(terms, key=terms.get)
    return total, terms, worst


def _footprint_depth(ctx, c, others_map=None, own_id=0):
    """Darkness of a candidate's core over its surroundings in one map, and that statistic's scatter.

    The scatter is measured by moving the same core/ring footprint to eight
    nearby places: it includes the scene's texture and the map's correlated
    noise, not only white noise.
    """
    pix, tmpl = c["pix"], c["template"]
    if not pix.any():
        return np.nan, np.nan
    core = pix & (tmpl >= 0.5 * tmpl[pix].max())
    d = c["feat"]["diameter"]
    r0 = max(2, int(round(0.15 * d)))
    r1 = r0 + max(3, int(round(0.3 * d)))
    grown = ndimage.binary_dilation(pix, iterations=r1, border_value=0)
    ring = grown & ~ndimage.binary_dilation(pix, iterations=r0)
    # pad the footprint box so the ring fits
    cy, cx = np.nonzero(core)
    ry, rx = np.nonzero(ring)
    if cy.size < 2 or ry.size < 8:
        return np.nan, np.nan
    oy, ox = c["sl"][0].start, c["sl"][1].start
    h, w = ctx.shape

    def stat(dy, dx):
        yc, xc, yr, xr = cy + oy + dy, cx + ox + dx, ry + oy + dy, rx + ox + dx
        if min(yc.min(), yr.min()) < 0 or min(xc.min(), xr.min()) < 0 or \
                max(yc.max(), yr.max()) >= h or max(xc.max(), xr.max()) >= w:
            return np.nan
        if others_map is not None and (dy or dx):
            # a place on another candidate (shadow, pore, spot) says nothing about the background
            lab = others_map[yr, xr]
            if np.mean((lab > 0) & (lab != own_id)) > 0.05:
                return np.nan
            lab = others_map[yc, xc]
            if np.mean((lab > 0) & (lab != own_id)) > 0.05:
                return np.nan
        wc, wr = ctx.weight[yc, xc] > 0, ctx.weight[yr, xr] > 0
        if wc.mean() < 0.7 or wr.mean() < 0.5:
            return np.nan
        return float(ctx.darkness[yc, xc][wc].mean() - np.median(ctx.darkness[yr, xr][wr]))

    value = stat(0, 0)
    boost = 1.0
    if ctx.noise_factor is not None:
        boost = float(np.mean(ctx.noise_factor[cy + oy, cx + ox]))
    step = int(round(d + r1 + 2))
    others = [stat(int(round(f * step * np.sin(a))), int(round(f * step * np.cos(a))))
              for f, a0 in ((0.8, 0.0), (1.2, np.pi / 8), (1.6, 0.0))
              for a in a0 + np.linspace(0, 2 * np.pi, 8, endpoint=False)]
    others = np.abs(np.array([o for o in others if np.isfinite(o)]))
    floor = ctx.noise_pix * np.sqrt(1.0 / cy.size + 1.0 / ry.size)
    if others.size >= 6:
        # the statistic is 0 on average at random places (the ring removes the local level);
        # the lower quartile of |value| (0.319 sigma for a normal law) stays robust when many
        # of the places land on other shadows or spots (a dense field of donuts)
        q = 25 if others.size >= 12 else 50
        spread = float(np.percentile(others, q)) / (0.3186 if q == 25 else 0.6745)
        return value, max(spread, floor * boost)
    return value, max(floor, ctx.scale_noise(d)) * boost


def _consistency(c, ctx, others_map=None, own_id=0):
    """Depth (and its scatter) of the candidate in the median and in the static map."""
    out = {}
    for name, cx in ctx.items():
        out[name] = _footprint_depth(cx, c, others_map, own_id)
    return out


def _candidate_map(cands, shape):
    """int32 map of every candidate's (slightly grown) footprint, ids 1..n in list order."""
    out = np.zeros(shape, np.int32)
    for k, c in enumerate(cands, start=1):
        grown = ndimage.binary_dilation(c["pix"], iterations=2)
        out[c["sl"]][grown] = k
    return out


def _median_z(c):
    dm, sm = c["consistency"].get("median", (np.nan, np.nan))
    return dm / sm if np.isfinite(dm) and sm > 0 else np.nan


def _static_evidence(c):
    """Log-odds terms from the static map (fixed on the sensor, or moving with the scene)."""
    terms = {}
    dm, sm = c["consistency"].get("median", (np.nan, np.nan))
    zm = _median_z(c)
    if "static" in c["consistency"]:
        ds, ss = c["consistency"]["static"]
        if np.isfinite(ds) and np.isfinite(dm) and ss > 0:
            zs = ds / ss
            gap = (dm - ds) / np.hypot(sm, ss)     # > 0: darker in the median than on the sensor
            strongly_static = zs >= 6 and ds >= 0.3 * dm
            if gap >= 3 and not strongly_static and ds < 0.5 * dm:
                # (mostly) moves with the scene
                terms["moves"] = -float(np.clip(gap / 1.5, 2.0, 6.0))
            elif gap <= -4 and dm < 0.5 * ds:
                terms["not_in_median"] = -3.0     # the static map sees what the median does not
            elif zs >= 4 and (ds > 0.5 * dm or strongly_static):
                # fixed on the sensor (possibly on top of a darker scene feature)
                terms["static"] = float(np.clip((zs - 4) / 2, 0.5, 4.0))
                f = c["feat"]
                if not zm >= 2 and (f["solidity"] < 0.8 or f["elongation"] > 0.3) \
                        and f.get("truncated", 0.0) < 0.05:
                    # only the static map sees it, and it is not a round disc: a weaker claim
                    terms["static"] *= 0.5
                if c.get("static_cover", np.inf) < 0.5 * c["feat"]["diameter"] + 6:
                    terms["static"] *= 0.25     # at the edge of the area the frames cover: noisier
    return terms


def _motion_test_applies(c):
    """The motion test is linear in the shift: valid when the motion is small against the shadow,
    and meaningful only for a feature the median shows."""
    return c.get("shift_rms", 0.0) < 0.25 * c["feat"]["diameter"] and _median_z(c) >= 2


def _beta_evidence(c):
    """Log-odds term of the motion test (β = 0 fixed, 1 moves), or None when not conclusive."""
    beta, sigma = c["beta"], c["beta_sigma"]
    # outside [0, 1] by more than 2σ the model does not describe the data (a template of
    # noise, a non-rigid scene)
    plausible = (np.isfinite(beta) and np.isfinite(sigma) and sigma <= 0.2
                 and beta + 2 * sigma >= -0.1 and beta - 2 * sigma <= 1.1)
    if not (plausible and _motion_test_applies(c)):
        return None
    return float(np.clip((0.5 - beta) / max(sigma, 0.06), -8.0, 8.0))


# ---------------------------------------------------------------------------
# The detector
# ---------------------------------------------------------------------------
class LocalDustDetector(DustDetector):
    """Offline dust detector: physics-based shape analysis plus the motion test.

    Parameters
    ----------
    threshold : float, optional
        Detection threshold of the scale-space significance, in robust sigmas
        of each scale; default 5.
    accept : float, optional
        Candidates with a confidence at or above this are dust; default 0.5.
    review_below : float, optional
        Accepted shadows with a confidence below this get the REVIEW bit;
        default 0.8.
    min_diameter, max_diameter : float, optional
        Range of shadow diameters (pixels) to search.  Defaults: 3 px and 60 %
        of the smaller side, or the range implied by ``f_ratio`` and
        ``pixel_size`` (dust 0.5–30 mm from the focal plane) when both are given.
    max_frames : int, optional
        At most this many frames, spread over the video, are read for the
        motion tests (bounded memory and time); default 24.
    progress_bar : bool, optional
        Show a progress bar while reading frames.
    refine_extent : bool, optional
        Experimental, off by default: take the DUST pixels and the centre of
        each accepted shadow from its own radial profile, with the baseline
        where the profile flattens, rather than from the first measurement's
        annulus at a fixed multiple of the scale-space diameter.  Better masks
        for large soft shadows, but not better flats on every held-out set
        (see :ref:`detect`).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> y, x = np.mgrid[:96, :96]
    >>> img = 500 * (1 - 0.1 * (np.hypot(y - 48, x - 48) < 9)) + rng.normal(0, 2, (96, 96))
    >>> det = LocalDustDetector()(img)
    >>> len(det.catalog), int(det.catalog["equivalent_diameter"][0].round())
    (1, 18)
    """

    name = "local"

    def __init__(self, *, threshold=5.0, accept=0.5, review_below=0.8, min_diameter=None,
                 max_diameter=None, max_frames=24, progress_bar=False, refine_extent=False):
        if not threshold > 0:
            raise InputError(f"threshold must be positive, got {threshold!r}")
        if not 0 <= accept <= review_below <= 1:
            raise InputError("need 0 <= accept <= review_below <= 1")
        self.threshold = float(threshold)
        self.accept = float(accept)
        self.review_below = float(review_below)
        self.min_diameter = min_diameter
        self.max_diameter = max_diameter
        self.max_frames = int(max_frames)
        self.progress_bar = bool(progress_bar)
        self.refine_extent = bool(refine_extent)

    def _size_range(self, shape, f_ratio, pixel_size):
        lo, hi = 3.0, min(0.6 * min(shape), 400.0)
        optics = f_ratio is not None and pixel_size is not None
        if optics:
            elo, ehi = expected_diameters(f_ratio, pixel_size)
            lo, hi = max(lo, 0.7 * elo), min(hi, 1.3 * ehi)
        if self.min_diameter is not None:
            lo = max(3.0, float(self.min_diameter))
        if self.max_diameter is not None:
            hi = float(self.max_diameter)
        if hi < lo:
            raise InputError(f"no shadow size to search: diameters {lo:.1f}-{hi:.1f} px "
                             f"(check f_ratio, pixel_size and the image size)")
        return lo, hi, optics

    def __call__(self, median, *, frames=None, mask=None, f_ratio=None, pixel_size=None):
        from ..dq import static_defects

        data = np.array(getattr(median, "data", median), dtype=np.float32)
        if data.ndim != 2:
            raise InputError(f"the median must be a 2-D image, got shape {data.shape}")
        shape = data.shape
        if frames is not None:      # fail before the work
            source, own = _open_source(frames, shape)
            if own:
                source.close()
        defects = static_defects(data)
        bad = ~np.isfinite(data) | ndimage.binary_dilation(defects > 0)
        if mask is not None:
            bad |= np.asarray(mask, bool)
        d_lo, d_hi, optics = self._size_range(shape, f_ratio, pixel_size)
        self._dhi = d_hi
        valid, _ = _valid_region(data, bad)
        has_limb = not valid.all()
        limb_distance = (ndimage.distance_transform_edt(valid).astype(np.float32) if has_limb
                         else np.full(shape, np.inf, np.float32))
        flat = data
        margin = 3
        if has_limb:
            limb = _limb_model(data, valid, bad)
            if limb is not None:
                flat = data / np.where(limb[0] > 0.05, limb[0], 1.0)
                margin = limb[1]
                log.debug("limb-darkening model; limb margin %d px", margin)
        box = int(np.clip(1.2 * d_hi, 32, max(32, min(shape) // 2)))
        darkness, _ = darkness_map(flat, valid=valid & ~bad, box_size=box)
        scatter = _robust_sigma(darkness[valid & ~bad])
        bright = darkness < -5 * scatter
        usable = valid & ~bad & ~ndimage.binary_dilation(bright, iterations=1) & (limb_distance > margin)
        weight = usable.astype(np.float32)
        diameters = _scales(d_lo, d_hi, shape)
        ctx = {"median": _Context(data, darkness, weight, valid, limb_distance,
                                  _pixel_noise(darkness, usable), d_lo, d_hi)}
        cands = self._candidates(ctx["median"], diameters, "median")
        params = {"THRESH": self.threshold, "NSCALES": len(diameters), "DMIN": round(float(d_lo), 2),
                  "DMAX": round(float(d_hi), 2), "NOISEPIX": float(f"{ctx['median'].noise_pix:.4g}"),
                  "EXTPROF": self.refine_extent}
        drift = None
        if frames is not None:
            drift, static = self._use_frames(frames, data, usable, weight, cands)
        if drift is not None:
            if static is not None:
                sdark, sweight, nfac = static
                ctx["static"] = _Context(data, sdark, weight * sweight, valid, limb_distance,
                                         _pixel_noise(sdark, weight * sweight > 0), d_lo, d_hi)
                ctx["static"].noise_factor = nfac
                ctx["static"].coverage = sweight > 0
                cands += self._candidates(ctx["static"], diameters, "static")
            params["NFRMOT"] = int(min(drift.frame_index.size, self.max_frames))
            params["STATMAP"] = static is not None
        cands = _merge_duplicates(cands)
        cover = None
        if "static" in ctx:     # distance to the edge of the area the frames cover
            cover = ndimage.distance_transform_edt(ndimage.binary_fill_holes(ctx["static"].coverage))
        cand_map = _candidate_map(cands, shape)
        for k, c in enumerate(cands, start=1):
            c["consistency"] = _consistency(c, ctx, cand_map, k)
            if cover is not None:
                iy = int(np.clip(round(c["feat"]["y"]), 0, shape[0] - 1))
                ix = int(np.clip(round(c["feat"]["x"]), 0, shape[1] - 1))
                c["static_cover"] = float(cover[iy, ix])
        for c in cands:
            c["beta"] = c["beta_sigma"] = c["beta_tex"] = np.nan
            c["shift_rms"] = drift.rms if drift is not None else 0.0
            # the candidate must stand out of its own map's local scatter (texture + noise)
            own, own_sig = c["consistency"].get(c["map"], (np.nan, np.nan))
            z_own = own / own_sig if np.isfinite(own) and own_sig > 0 else np.nan
            c["z_own"] = z_own
            c["morph"], c["terms"], c["worst"] = _morphology_evidence(
                c["feat"], d_lo=d_lo, d_hi=d_hi, has_limb=has_limb, optics=optics, z_own=z_own)
            if not np.isfinite(z_own) or z_own < 8:
                c["terms"]["weak"] = -4.0 if not z_own >= 4 else -2.0
            if c["map"] == "static" and c.get("static_cover", np.inf) < 0.5 * c["feat"]["diameter"] + 6:
                # found at the edge of the area the frames cover, where the static map is least sure
                c["terms"]["weak"] = c["terms"].get("weak", 0.0) - 2.0
            c["mterms"] = _static_evidence(c)
        # the static map, when it speaks, is the primary motion evidence; the motion test is
        # the fallback (no static map, a shadow outside the area it covers, inconclusive), run
        # only where it can change the verdict
        # It is also the second opinion on "moves": under a drift smaller than a large shadow
        # the static map recovers only part of it
        need = [c for c in cands if drift is not None and _motion_test_applies(c)
                and (not c["mterms"] or "moves" in c["mterms"])
                and c["morph"] + c["terms"].get("weak", 0.0) > -4]
        if need:
            source, own = _open_source(frames, shape)
            try:
                results = _motion_test(source, data, need, weight, drift, max_frames=self.max_frames)
            finally:
                if own:
                    source.close()
            for c, (beta, sig, beta_t) in zip(need, results):
                c["beta"], c["beta_sigma"], c["beta_tex"] = beta, sig, beta_t
                term = _beta_evidence(c)
                if term is None:
                    continue
                if "moves" not in c["mterms"]:
                    c["mterms"]["motion"] = term
                elif beta < 0.3 and sig < 0.1:
                    # confidently fixed on the sensor: the partial static map was misleading
                    del c["mterms"]["moves"]
                    c["mterms"]["motion"] = term
        for c in cands:
            mterms = c["mterms"]
            motion = float(np.clip(sum(mterms.values()), -10, 10))
            c["terms"].update(mterms)
            c["motion"] = motion
            logit = c["morph"] + motion + c["terms"].get("weak", 0.0)
            if not mterms:
                if drift is not None and c["terms"].get("annulus", 0.0) < 1.5:
                    # the frames were given but say nothing here (edge of the area the motion
                    # covers, too faint): a disc's shape alone cannot tell a pore from dust
                    # (an annulus can); left for review
                    c["terms"]["unverified"] = min(0.0, -0.1 - logit)
                    logit = min(logit, -0.1)
                else:
                    logit = min(logit, 2.2)   # shape alone never gives more than ~0.9
            c["confidence"] = float(_sigmoid(logit))
        return self._build(data, cands, f_ratio=f_ratio, pixel_size=pixel_size, drift=drift,
                           params=params, used_frames=drift is not None, ctx=ctx)

    def _use_frames(self, frames, data, usable, weight, cands):
        """Register the frames and build the static (sensor-fixed) darkness map."""
        from ..registration import register_frames

        source, own = _open_source(frames, data.shape)
        try:
            # mask the compact dark candidates (deep dust would pull the correlation to zero
            # shift); large shadows are smooth and the high-pass of the registration ignores
            # them, while masking them would hide much of the scene
            dust = np.zeros(data.shape, bool)
            for c in cands:
                if c["feat"]["diameter"] <= 64:
                    dust[c["sl"]] |= c["pix"]
            dust = ndimage.binary_dilation(dust, iterations=3)
            drift = register_frames(source, dust_mask=dust if dust.mean() < 0.1 else None,
                                    max_frames=self.max_frames, n_reference=min(12, self.max_frames),
                                    progress_bar=self.progress_bar)
            if drift.rms > 0.25 * min(data.shape):
                warn_user(f"the registration of the frames failed (shift rms {drift.rms:.0f} px); "
                          "dust is told from the scene by its shape only", DetectorFallbackWarning)
                return None, None
            static = _static_map(source, data, usable, drift, max_frames=self.max_frames,
                                  highpass=max(20.0, self._dhi))
        finally:
            if own:
                source.close()
        if static is None:
            log.info("the scene hardly moves (rms %.2f px): no static map", drift.rms)
            return drift, None
        lnt, wst, nfac = static
        return drift, ((-np.expm1(lnt)).astype(np.float32), wst.astype(np.float32), nfac)

    def _candidates(self, ctx, diameters, name):
        """Analyse the local maxima of one map's scale-space significance."""
        from photutils.segmentation import detect_sources
        from photutils.utils.exceptions import NoDetectionsWarning

        smax, dbest, noise = _significance(ctx.darkness, ctx.weight, diameters, ctx.shape)
        ok = np.isfinite(noise)
        if ok.any():
            ctx.scale_diameters, ctx.scale_noises = np.asarray(diameters)[ok], np.asarray(noise)[ok]
        with warnings.catch_warnings():
            # "no sources found" is an answer here, not a problem
            warnings.filterwarnings("ignore", category=NoDetectionsWarning)
            segm = detect_sources(smax, self.threshold, 5, mask=ctx.weight <= 0)
        if segm is None:
            return []
        chosen = _peaks(smax, dbest, segm.data > 0)
        cands = []
        for y, x, d in chosen:
            cand = self._measure(ctx, (int(y), int(x)), float(d))
            if cand is not None:
                cand["map"], cand["sig"] = name, float(smax[y, x])
                cands.append(cand)
        return cands

    @staticmethod
    def _measure(ctx, peak, diameter0):
        res = _analyse(ctx, peak, diameter0)
        if res is None:
            return None
        feat = res[0]
        if feat.get("ridge"):
            return None
        # re-centre and re-size once when the first guess was far off
        if not 0.6 <= feat["diameter"] / max(diameter0, 1) <= 1.6 or \
                np.hypot(feat["y"] - peak[0], feat["x"] - peak[1]) > 0.3 * feat["diameter"] + 1:
            again = _analyse(ctx, (feat["y"], feat["x"]), feat["diameter"])
            if again is not None:
                res = again
        feat, sl, pix, tmpl = res
        if feat.get("ridge") or not pix.any():
            return None
        return {"feat": feat, "sl": sl, "pix": pix, "template": tmpl}

    def _build(self, data, cands, *, f_ratio, pixel_size, drift, params, used_frames, ctx=None):
        shape = data.shape
        dq = np.zeros(shape, np.uint8)
        labels = np.zeros(shape, np.int32)
        with_distance = f_ratio is not None and pixel_size is not None
        catalog = empty_catalog(with_distance=with_distance)
        rejected = []
        accepted = []
        duplicates = []
        # most confident first; a candidate mostly covered by a more confident one is a duplicate
        for c in sorted(cands, key=lambda c: -c["confidence"]):
            reason = None
            if c["confidence"] < self.accept:
                reason = min(c["terms"], key=c["terms"].get)
            elif _duplicate(c, accepted):
                duplicates.append(c)
                continue
            if reason:
                rejected.append((c, reason))
            else:
                accepted.append(c)
        if ctx is not None and self.refine_extent and accepted:
            _refine_accepted(accepted, ctx, shape)
            # a "duplicate" that only the first, too large outline of a neighbour covered is a
            # shadow of its own
            for c in duplicates:
                if not _duplicate(c, accepted):
                    _refine_accepted(accepted + [c], ctx, shape, only=c)
                    if not _duplicate(c, accepted):
                        accepted.append(c)
                        continue
                rejected.append((c, "overlaps a better shadow"))
        else:
            rejected += [(c, "overlaps a better shadow") for c in duplicates]
        rejected = [(c["feat"]["x"], c["feat"]["y"], c["feat"]["diameter"], c["feat"]["depth"], c["confidence"],
                     reason, c["beta"], c["map"]) for c, reason in sorted(rejected, key=lambda r: -r[0]["confidence"])]
        n = 0
        for c in sorted(accepted, key=lambda c: (c["feat"]["y"], c["feat"]["x"])):
            f = c["feat"]
            pix = c["pix"] & (labels[c["sl"]] == 0)
            if not pix.any():
                continue
            n += 1
            labels[c["sl"]][pix] = n
            review = c["confidence"] < self.review_below
            bits = np.uint8(DustDQ.DUST | (DustDQ.REVIEW if review else 0))
            dq[c["sl"]][pix] |= bits
            row = {"id": n, "x_centroid": f["x"], "y_centroid": f["y"], "area": float(pix.sum()),
                   "equivalent_diameter": f["d50"], "depth": f["depth"],
                   "confidence": c["confidence"], "review": review, "method": self.name}
            if with_distance:
                row["distance_mm"] = f["d50"] * pixel_size * f_ratio * 1e-3
            catalog.add_row([row[k] for k in catalog.colnames])
        rej = Table(rows=rejected or None,
                    names=("x_centroid", "y_centroid", "equivalent_diameter", "depth", "confidence",
                           "reason", "beta", "map"),
                    dtype=("f8", "f8", "f8", "f8", "f8", "U32", "f8", "U8"))
        prov = {"detector": self.name, "params": dict(params),
                "history": [f"local dust detector: {n} shadows from {len(cands)} candidates"
                            + (" (motion test on the frames)" if used_frames else " (median only)")]}
        if drift is not None:
            prov["drift"] = drift.summary()
        log.info("local detector: %d candidates, %d accepted", len(cands), n)
        return DustDetection(dq=dq, weight=(dq > 0).astype(np.float32), catalog=catalog,
                             detector=self.name, provenance=prov, labels=labels, rejected=rej)


def _duplicate(c, accepted):
    """Whether candidate ``c`` is mostly covered by one of the ``accepted`` shadows."""
    npix = int(c["pix"].sum())
    return any(_overlap(c, a) > 0.3 * min(npix, int(a["pix"].sum())) for a in accepted)


def _refine_accepted(accepted, ctx, shape, only=None):
    """Replace the DUST pixels of the accepted shadows (or of ``only``) by those of `_refine_extent`.

    Each shadow's profile leaves out the others' pixels, grown by 3 px.
    """
    owner = np.zeros(shape, np.int32)
    for k, c in enumerate(accepted, start=1):
        owner[c["sl"]][c["pix"]] = k
    grown = ndimage.grey_dilation(owner, size=7)
    todo = [(k, c) for k, c in enumerate(accepted, start=1) if only is None or c is only]
    results = []
    for k, c in todo:
        m = ctx.get(c["map"], ctx["median"])
        others = (grown > 0) & (grown != k) | (owner > 0) & (owner != k)
        results.append(_refine_extent(m, c, others))
    for (_, c), res in zip(todo, results):
        n0 = int(c["pix"].sum())
        if res is None or not EXTENT_AREA_RANGE[0] * n0 <= int(res[1].sum()) <= EXTENT_AREA_RANGE[1] * n0:
            log.debug("extent of the shadow at (%.1f, %.1f) kept", c["feat"]["x"], c["feat"]["y"])
            continue
        sl, pix, info = res
        log.debug("shadow at (%.1f, %.1f): profile flat from %.1f px, %d -> %d pixels", c["feat"]["x"],
                  c["feat"]["y"], info["r_edge"], n0, int(pix.sum()))
        c["sl"], c["pix"] = sl, pix
        c["feat"]["y"], c["feat"]["x"] = info["y"], info["x"]


def _peaks(smax, dbest, inside):
    """Local maxima of the significance, strongest first; a weaker maximum closer than half
    the larger of the two diameters to a stronger one is dropped."""
    from scipy.spatial import cKDTree

    is_max = (smax == ndimage.maximum_filter(smax, size=5, mode="nearest")) & inside
    # flat-topped maxima (coarse scales are block-upsampled): one point per plateau
    lab, n = ndimage.label(is_max, structure=np.ones((3, 3), bool))
    if n == 0:
        return []
    centres = np.array(ndimage.center_of_mass(is_max, lab, np.arange(1, n + 1))).reshape(n, 2)
    ys = np.clip(np.round(centres[:, 0]).astype(int), 0, smax.shape[0] - 1)
    xs = np.clip(np.round(centres[:, 1]).astype(int), 0, smax.shape[1] - 1)
    sig = smax[ys, xs]
    order = np.argsort(-sig, kind="stable")
    ys, xs, ds = ys[order], xs[order], dbest[ys[order], xs[order]]
    tree = cKDTree(np.column_stack([ys, xs]))
    kept = np.zeros(ys.size, bool)
    for i in range(ys.size):
        # a stronger kept maximum within half of this one's diameter, or this one within half
        # of a stronger kept one's (its own query below covered it)
        near = tree.query_ball_point((ys[i], xs[i]), 0.5 * ds[i])
        if any(kept[j] for j in near if j < i):
            continue
        kept[i] = True
    chosen = []
    for i in np.flatnonzero(kept):
        far = tree.query_ball_point((ys[i], xs[i]), 0.5 * ds[i])
        for j in far:
            if j > i and kept[j] and np.hypot(ys[j] - ys[i], xs[j] - xs[i]) < 0.5 * ds[i]:
                kept[j] = False
    for i in np.flatnonzero(kept):
        chosen.append((int(ys[i]), int(xs[i]), float(ds[i])))
    return chosen


def _overlap(a, b):
    """Pixels shared by two candidates' DUST masks."""
    ys = slice(max(a["sl"][0].start, b["sl"][0].start), min(a["sl"][0].stop, b["sl"][0].stop))
    xs = slice(max(a["sl"][1].start, b["sl"][1].start), min(a["sl"][1].stop, b["sl"][1].stop))
    if ys.start >= ys.stop or xs.start >= xs.stop:
        return 0
    pa = a["pix"][ys.start - a["sl"][0].start:ys.stop - a["sl"][0].start,
                  xs.start - a["sl"][1].start:xs.stop - a["sl"][1].start]
    pb = b["pix"][ys.start - b["sl"][0].start:ys.stop - b["sl"][0].start,
                  xs.start - b["sl"][1].start:xs.stop - b["sl"][1].start]
    return int(np.count_nonzero(pa & pb))


def _merge_duplicates(cands):
    """Keep one of several candidates describing the same dark feature (same place, similar size)."""
    cands = sorted(cands, key=lambda c: -c["sig"])
    kept = []
    for c in cands:
        f = c["feat"]
        same = False
        for k in kept:
            g = k["feat"]
            ratio = f["diameter"] / max(g["diameter"], 1e-6)
            # only within one map: the median and the static map may see different things at
            # one place (a sunspot in the median, dust on it in the static map)
            if k["map"] == c["map"] and 0.6 < ratio < 1.67 and \
                    np.hypot(f["y"] - g["y"], f["x"] - g["x"]) < 0.3 * g["diameter"] + 1:
                same = True
                break
        if not same:
            kept.append(c)
    return kept
