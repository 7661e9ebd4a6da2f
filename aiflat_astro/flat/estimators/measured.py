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
import warnings
from dataclasses import InitVar, dataclass, field

import numpy as np
from astropy.table import Table
from scipy import ndimage as ndi

from ..._imaging.robust import block_mean, robust_sigma
from ...io.frames import opened_frames, spread_indices
from ...registration import DriftPath, _binned_frames, register_frames
from ...utils._atomic import parse_size
from ...utils._colour import mono_frame
from ...utils.exceptions import DetectorFallbackWarning, InputError, renamed_keyword, warn_user
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

_MAD_TO_SIGMA = 1.4826
_MEDIAN_EFFICIENCY = 1.2533  # std of the median / std of the mean, Gaussian noise


@dataclass
class MeasuredTransmission:
    """Dust transmission measured from the drift, with its diagnostics.

    Attributes
    ----------
    transmission : `~numpy.ndarray`
        float32 (H, W); measured inside the shadows whose ``method`` is
        ``'measured'``, 1.0 everywhere else.
    uncertainty : `~numpy.ndarray`
        float32 (H, W) standard error of ``transmission`` (0 where not measured).
    measured : `~numpy.ndarray`
        bool (H, W): pixels whose value was measured.
    shadows : `~astropy.table.Table`
        One row per region (a connected piece of the dust mask with the
        pixels to correct nearest to it): ``id`` (catalog id, or negative for
        dust without catalog row; a shadow in several pieces has several
        rows), ``x_centroid``, ``y_centroid``,
        ``diameter`` (px, bounding size of the dust mask), ``drift_ok``
        (drift extent ≥ diameter along both principal axes), ``coverage``
        (fraction of the region's pixels with enough usable frames),
        ``n_frames_used``, ``trans_err`` (median standard error inside),
        ``measured_depth`` (1 - the 1st percentile of the measured
        transmission: about 0 for a false detection),
        ``profile`` (``'radial'`` when the radial profile replaced the
        measured values, ``'plain'`` otherwise), ``chi2`` (reduced chi^2 of
        the measured values about the radial profile), ``method``
        (``'measured'`` or ``'local'``) and ``reason``.
    drift : `~aiflat_astro.registration.DriftPath`
        The registration result.
    params : dict
        Parameters of the measurement.
    """

    transmission: np.ndarray
    uncertainty: np.ndarray
    measured: np.ndarray
    shadows: Table
    drift: DriftPath
    params: dict = field(default_factory=dict)

    @property
    def n_measured(self):
        """Number of regions (rows of ``shadows``) whose transmission was measured."""
        return int(np.sum(self.shadows["method"] == "measured")) if len(self.shadows) else 0

    def methods_by_id(self):
        """``{id: 'measured' | 'local' | 'mixed'}`` per catalog id (over its regions)."""
        return _methods_by_id(zip(self.shadows["id"], self.shadows["method"], strict=True))

    def provenance(self):
        """JSON-serialisable record: drift path, per-shadow decision, parameters."""
        rows = []
        for row in self.shadows:
            rec = {}
            for name in self.shadows.colnames:
                value = row[name]
                if isinstance(value, (np.floating, float)):
                    value = None if not np.isfinite(value) else round(float(value), 5)
                elif isinstance(value, (np.integer, int)):
                    value = int(value)
                elif isinstance(value, (np.bool_, bool)):
                    value = bool(value)
                else:
                    value = str(value)
                rec[name] = value
            rows.append(rec)
        return {"drift": self.drift.provenance(), "shadows": rows, "params": dict(self.params)}


def _methods_by_id(pairs):
    """Aggregate per-region methods into one per id: measured, local, or mixed."""
    seen = {}
    for sid, method in pairs:
        seen.setdefault(int(sid), set()).add(str(method))
    return {sid: (methods.pop() if len(methods) == 1 else "mixed")
            for sid, methods in seen.items()}


# ---------------------------------------------------------------------------
# regions
# ---------------------------------------------------------------------------
@dataclass
class _Region:
    id: int                   # catalog id (negative: dust without a catalog row)
    key: int                  # this region's value in the owner map
    pixels: np.ndarray        # bool, box-shaped: pixels of this region whose value we set
    box: tuple                # (y0, y1, x0, x1) sensor box
    diameter: float
    centroid: tuple           # (y, x)
    sbox: tuple = None        # (v0, v1, u0, u1) scene box
    clean: np.ndarray = None  # bool, box-shaped: outside the exclusion (clean samples)
    ring: np.ndarray = None   # bool, box-shaped: far enough from any dust to set the level
    raw: np.ndarray = None    # (n, bh, bw) float32 frames on the sensor box
    reg: np.ndarray = None    # (n, sh, sw) float32 frames resampled on the scene box
    reg_ok: np.ndarray = None  # (n, sh, sw) bool: scene sample clean and inside the frame
    reg_inframe: np.ndarray = None  # (n, sh, sw) bool: scene sample inside the frame


def _regions(shape, dust_mask, weight, labels, exclude_extra, margin_frac):
    """Split the area to correct into regions with boxes.

    One region per connected component of the dust mask (a catalog shadow in
    several pieces gives several regions with the same id: each piece is
    measured, or not, on its own), plus the pixels to correct nearest to it.
    """
    target = dust_mask | (weight > 0)
    eight = np.ones((3, 3), bool)
    comp, n_comp = ndi.label(dust_mask, structure=eight)
    labels = None if labels is None else np.asarray(labels, dtype=np.int64)
    ids = {}
    for c, sl in enumerate(ndi.find_objects(comp), start=1):
        if sl is None:
            continue
        values = labels[sl][comp[sl] == c] if labels is not None else np.zeros(0, np.int64)
        values = values[values > 0]
        ids[c] = int(np.bincount(values).argmax()) if values.size else -c
    # every pixel to correct belongs to the region of the nearest dust pixel
    if n_comp:
        _, (iy, ix) = ndi.distance_transform_edt(comp == 0, return_indices=True)
        owner = np.where(target, comp[iy, ix], 0)
    else:
        owner = np.zeros(shape, np.int64)
    # an isolated weight area without any dust pixel: its own region
    stray, n_stray = ndi.label(target & (owner == 0), structure=eight)
    if n_stray:
        owner = np.where(stray > 0, stray + n_comp, owner)
        for k in range(1, n_stray + 1):
            ids[n_comp + k] = -(n_comp + k)

    regions = []
    for key, sl in enumerate(ndi.find_objects(owner), start=1):
        if sl is None:
            continue
        sel = owner == key
        core = sel & dust_mask if np.any(sel & dust_mask) else sel
        ys, xs = np.nonzero(core)
        diameter = float(max(ys.max() - ys.min() + 1, xs.max() - xs.min() + 1))
        ys_all, xs_all = np.nonzero(sel)
        pad = int(np.ceil(exclude_extra(diameter) + max(4.0, margin_frac * diameter)))
        y0 = max(0, ys_all.min() - pad)
        y1 = min(shape[0], ys_all.max() + 1 + pad)
        x0 = max(0, xs_all.min() - pad)
        x1 = min(shape[1], xs_all.max() + 1 + pad)
        regions.append(_Region(id=ids[key], key=key, pixels=sel[y0:y1, x0:x1],
                               box=(y0, y1, x0, x1), diameter=diameter,
                               centroid=(float(ys.mean()), float(xs.mean()))))
    return regions, owner


def _exclusion(shape, target, regions, reach_of, owner):
    """Pixels within ``reach_of(diameter)`` of the area to correct (per nearest region)."""
    if not target.any():
        return np.zeros(shape, bool)
    dist, (iy, ix) = ndi.distance_transform_edt(~target, return_indices=True)
    nearest = owner[iy, ix]
    reach = np.zeros(shape, np.float64)
    for region in regions:
        reach[nearest == region.key] = reach_of(region.diameter)
    return dist <= reach


# ---------------------------------------------------------------------------
# resampling helpers
# ---------------------------------------------------------------------------
_PAD = 3


def _sample_box(image, v0, v1, u0, u1, dy, dx, *, order, prefiltered=False):
    """``image(v + dy, u + dx)`` on the grid v in [v0, v1), u in [u0, u1).

    Returns (values float64, inside bool).  Samples outside the image are
    taken from the nearest edge and flagged ``inside = False``.  With
    ``prefiltered``, ``image`` holds spline coefficients
    (`scipy.ndimage.spline_filter` of the same ``order``, mode ``'nearest'``).
    """
    iy, ix = int(np.floor(dy)), int(np.floor(dx))
    fy, fx = dy - iy, dx - ix
    r0, r1 = v0 + iy - _PAD, v1 + iy + _PAD + 1
    c0, c1 = u0 + ix - _PAD, u1 + ix + _PAD + 1
    h, w = image.shape
    crop = image[max(r0, 0):min(r1, h), max(c0, 0):min(c1, w)]
    if crop.size == 0:
        return np.zeros((v1 - v0, u1 - u0)), np.zeros((v1 - v0, u1 - u0), bool)
    before = (max(0, -r0), max(0, -c0))
    after = (max(0, r1 - h), max(0, c1 - w))
    if any(before) or any(after):
        crop = np.pad(crop, ((before[0], after[0]), (before[1], after[1])), mode="edge")
    crop = crop.astype(np.float64, copy=False)
    if order == 3 and not prefiltered:
        crop = ndi.spline_filter(crop, order=3, mode="nearest")
    values = _shifted_interior(crop, fy, fx, (v1 - v0, u1 - u0), order=order)
    vv = np.arange(v0, v1)[:, None] + dy
    uu = np.arange(u0, u1)[None, :] + dx
    inside = (vv >= 0) & (vv <= h - 1) & (uu >= 0) & (uu <= w - 1)
    return values, inside


def _spline_weights(t, order):
    """Offsets and weights of the samples ``c[i + o]`` that give ``f(i + t)``, ``0 <= t < 1``."""
    if order == 1:
        return (0, 1), (1.0 - t, t)
    if order != 3:
        raise ValueError(f"order must be 1 or 3, got {order}")
    u = 1.0 - t
    return (-1, 0, 1, 2), (u**3 / 6, 2 / 3 - t**2 + t**3 / 2, 2 / 3 - u**2 + u**3 / 2, t**3 / 6)


def _shifted_interior(coeffs, fy, fx, size, *, order):
    """The spline of ``coeffs`` (order 1 or 3) at ``(_PAD + v + fy, _PAD + u + fx)``, v, u < size.

    One fractional shift for the whole box, so the B-spline is separable:
    a few weighted slices along x, then along y -- what
    ``scipy.ndimage.shift(coeffs, (-fy, -fx), prefilter=False)`` gives on the
    interior (to rounding), for a fraction of its cost.  ``_PAD`` rows and
    columns of margin cover the taps.
    """
    nv, nu = size
    offs_x, wts_x = _spline_weights(fx, order)
    offs_y, wts_y = _spline_weights(fy, order)
    rows = coeffs[_PAD + offs_y[0]:_PAD + offs_y[-1] + nv]
    along_x = sum(w * rows[:, _PAD + o:_PAD + o + nu] for o, w in zip(offs_x, wts_x, strict=True))
    first = offs_y[0]
    return sum(w * along_x[o - first:o - first + nv] for o, w in zip(offs_y, wts_y, strict=True))


def _edge_crop(image, r0, r1, c0, c1):
    """``image[r0:r1, c0:c1]``, rows and columns beyond the image repeating its edge."""
    h, w = image.shape
    crop = image[max(r0, 0):min(max(r1, 0), h), max(c0, 0):min(max(c1, 0), w)]
    if crop.size == 0:  # the window lies wholly beyond the image: the nearest edge pixels
        rr = np.clip(np.arange(r0, r1), 0, h - 1)
        cc = np.clip(np.arange(c0, c1), 0, w - 1)
        return image[np.ix_(rr, cc)]
    before = (max(0, -r0), max(0, -c0))
    after = (max(0, r1 - h), max(0, c1 - w))
    if any(before) or any(after):
        crop = np.pad(crop, ((before[0], after[0]), (before[1], after[1])), mode="edge")
    return crop


def _frame_windows(image, v0, v1, u0, u1, iy, ix, margin):
    """(n, nv + 2 margin... ) windows of ``image`` at integer offsets ``(iy[k], ix[k])``.

    Window ``k`` covers rows ``v0 + iy[k] - margin[0] .. v1 + iy[k] + margin[1]`` (and
    the same for the columns), edge-extended beyond the image.
    """
    lo, hi = margin
    ext = _edge_crop(image, v0 + int(iy.min()) - lo, v1 + int(iy.max()) + hi,
                     u0 + int(ix.min()) - lo, u1 + int(ix.max()) + hi)
    size = (v1 - v0 + lo + hi, u1 - u0 + lo + hi)
    view = np.lib.stride_tricks.sliding_window_view(ext, size)
    return view[iy - iy.min(), ix - ix.min()]


def _sample_stack(image, v0, v1, u0, u1, dys, dxs, *, order):
    """`_sample_box` (``prefiltered``) for many shifts at once: ``(n, nv, nu)`` values and flags.

    ``image(v + dys[k], u + dxs[k])`` for every ``k``, the separable B-spline
    of `_shifted_interior` vectorised over the shifts (the same numbers as
    one `_sample_box` call per shift).  ``image`` holds spline coefficients
    for ``order`` 3, values for ``order`` 1.
    """
    dys, dxs = np.asarray(dys, np.float64), np.asarray(dxs, np.float64)
    iy, ix = np.floor(dys).astype(np.int64), np.floor(dxs).astype(np.int64)
    fy, fx = dys - iy, dxs - ix
    nv, nu = v1 - v0, u1 - u0
    win = _frame_windows(np.asarray(image, np.float64), v0, v1, u0, u1, iy, ix, (_PAD, _PAD + 1))
    offs_x, wts_x = _spline_weights(fx, order)
    offs_y, wts_y = _spline_weights(fy, order)
    rows = win[:, _PAD + offs_y[0]:_PAD + offs_y[-1] + nv]
    along_x = sum(wt[:, None, None] * rows[:, :, _PAD + o:_PAD + o + nu]
                  for o, wt in zip(offs_x, wts_x, strict=True))
    first = offs_y[0]
    values = sum(wt[:, None, None] * along_x[:, o - first:o - first + nv]
                 for o, wt in zip(offs_y, wts_y, strict=True))
    h, w = np.shape(image)
    vv = np.arange(v0, v1)[None, :, None] + dys[:, None, None]
    uu = np.arange(u0, u1)[None, None, :] + dxs[:, None, None]
    inside = (vv >= 0) & (vv <= h - 1) & (uu >= 0) & (uu <= w - 1)
    return values, inside


def _sample_mask_stack(mask, v0, v1, u0, u1, dys, dxs):
    """`_sample_mask` for many shifts at once: ``(n, nv, nu)`` bool."""
    iy = np.floor(np.asarray(dys, np.float64)).astype(np.int64)
    ix = np.floor(np.asarray(dxs, np.float64)).astype(np.int64)
    win = _frame_windows(np.asarray(mask, bool), v0, v1, u0, u1, iy, ix, (0, 1))
    return win[:, :-1, :-1] | win[:, 1:, :-1] | win[:, :-1, 1:] | win[:, 1:, 1:]


def _sample_mask(mask, v0, v1, u0, u1, dy, dx):
    """True where ``mask`` is set at any of the 4 pixels around ``(v + dy, u + dx)``.

    Beyond the mask its nearest edge pixel counts.
    """
    iy, ix = int(np.floor(dy)), int(np.floor(dx))
    h, w = mask.shape
    if v0 + iy >= 0 and v1 + iy < h and u0 + ix >= 0 and u1 + ix < w:   # inside: four slices
        win = mask[v0 + iy:v1 + iy + 1, u0 + ix:u1 + ix + 1]
        return win[:-1, :-1] | win[1:, :-1] | win[:-1, 1:] | win[1:, 1:]
    return _sample_mask_stack(mask, v0, v1, u0, u1, [dy], [dx])[0]


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
# survey: static dark features the dust mask missed
# ---------------------------------------------------------------------------
_SURVEY_FRAMES = 40
_SURVEY_SIZE = 512


def _static_survey(source, frame_index, shifts, known, *, nsigma=5.0, min_depth=0.005):
    """Find static dark features outside ``known``: dust the detector missed.

    A coarse version of the measurement over the whole frame, on a binned
    subset of frames: the scene is the median of the registered frames (the
    known dust left out), the sensor pattern the median of frame / shifted
    scene, divided by its large-scale shape.  Pixels darker than
    ``max(nsigma * noise, min_depth)`` there, outside the known dust, are
    returned (full resolution, dilated) with a list of features.
    Unmasked, such dust would contaminate the clean samples of the scene.

    Why not the project's detector (`aiflat_astro.detection.detect_dust`):
    the survey looks at another image, the static sensor pattern left once
    the registered scene is divided out, on binned frames, where the scene
    (granulation, spots, the limb) is gone and the only question is "darker
    than its smooth surroundings by more than the noise".  The detector
    works on the median, where it must tell dust from the scene (its
    hard negatives, the motion test); run on the pattern it would re-open the
    frames and re-register them.  The survey only *excludes* pixels from the
    clean samples; it never adds shadows to the catalogue.
    """
    shape = known.shape
    b = max(1, int(np.ceil(max(shape) / _SURVEY_SIZE)))
    pick = spread_indices(frame_index.size, _SURVEY_FRAMES) if frame_index.size else np.arange(0)
    if pick.size < 8:
        return np.zeros(shape, bool), []
    known_b = ndi.binary_dilation(block_mean(known.astype(np.float32), b) > 0, iterations=1)
    frames = list(_binned_frames(source, frame_index[pick], b))
    offsets = [shifts[i] / b for i in pick]
    scene = _survey_scene(frames, offsets, known_b)
    pattern = _survey_pattern(frames, offsets, scene)
    del frames
    keep, features = _dark_features(pattern, scene, known_b, b, nsigma=nsigma,
                                    min_depth=min_depth)
    if not features:
        return np.zeros(shape, bool), []
    full = np.zeros(shape, bool)
    up = np.repeat(np.repeat(keep, b, axis=0), b, axis=1)
    full[: up.shape[0], : up.shape[1]] = up
    # the faint tail of a shadow extends beyond its threshold crossing
    reach = [max(3.0, 0.5 * np.sqrt(f["area_px"] / np.pi)) for f in features]
    full = ndi.binary_dilation(full, iterations=int(np.ceil(max(reach))))
    log.info("survey: %d static dark feature(s) outside the dust mask excluded from the clean "
             "samples (possible undetected dust)", len(features))
    return full & ~known, features


def _survey_scene(frames, offsets, known_b):
    """The scene: median of the binned frames shifted onto it, the known dust left out."""
    stack = [ndi.shift(np.where(known_b, np.nan, frame), (-dy, -dx), order=1, mode="constant",
                       cval=np.nan) for frame, (dy, dx) in zip(frames, offsets, strict=True)]
    return _nanmedian(np.array(stack), axis=0)


def _survey_pattern(frames, offsets, scene):
    """The static sensor pattern: median over frames of frame / shifted scene (level 1)."""
    ratios = []
    for frame, (dy, dx) in zip(frames, offsets, strict=True):
        o_k = ndi.shift(np.nan_to_num(scene, nan=0.0), (dy, dx), order=1, mode="constant", cval=0)
        o_ok = ndi.shift(np.isfinite(scene).astype(np.float32), (dy, dx), order=1,
                         mode="constant", cval=0) > 0.999
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(o_ok & (o_k > 0), frame / o_k, np.nan)
        level = np.nanmedian(ratio) if np.isfinite(ratio).any() else np.nan
        ratios.append(ratio / level if np.isfinite(level) and level > 0 else ratio)
    return _nanmedian(np.array(ratios), axis=0)


def _dark_features(pattern, scene, known_b, b, *, nsigma, min_depth):
    """Pixels of ``pattern`` darker than its smooth shape by the threshold: ``(keep, features)``.

    Only on the bright scene (no sky beyond the limb), outside the known dust;
    features of at least 3 binned pixels, centroids in full-resolution pixels.
    """
    scene_level = np.nanmedian(scene) if np.isfinite(scene).any() else 0.0
    valid = np.isfinite(pattern) & ~known_b
    if valid.sum() < 100 or not np.isfinite(scene_level) or scene_level <= 0:
        return np.zeros(pattern.shape, bool), []
    bright = np.nan_to_num(scene, nan=0.0) > 0.1 * scene_level
    # the large-scale shape (vignetting, level) from the valid pixels only
    sigma = max(4.0, 32.0 / b)
    w = valid.astype(np.float64)
    smooth = (ndi.gaussian_filter(np.where(valid, pattern, 0.0), sigma, mode="nearest")
              / np.maximum(ndi.gaussian_filter(w, sigma, mode="nearest"), 1e-6))
    rel = np.where(valid, pattern / smooth, np.nan)
    rel_s = (ndi.gaussian_filter(np.nan_to_num(rel - 1.0), 1.0)
             / np.maximum(ndi.gaussian_filter(w, 1.0), 1e-6))
    threshold = max(nsigma * robust_sigma(rel_s[valid]), min_depth)
    lab, _ = ndi.label(valid & (rel_s < -threshold) & bright)
    features = []
    keep = np.zeros(pattern.shape, bool)
    for k, sl in enumerate(ndi.find_objects(lab), start=1):
        sel = lab[sl] == k
        if sel.sum() < 3:
            continue
        keep[sl] |= sel
        ys, xs = np.nonzero(sel)
        features.append({"x_centroid": round(float((xs.mean() + sl[1].start + 0.5) * b - 0.5), 2),
                         "y_centroid": round(float((ys.mean() + sl[0].start + 0.5) * b - 0.5), 2),
                         "area_px": int(sel.sum() * b * b),
                         "depth": round(float(-rel_s[sl][sel].min()), 5)})
    return keep, features


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
_MIN_FRAMES_ONE_PASS = 20  # below this many frames in one pass, pass over the frames per batch


def _default_min_frames(n):
    """``n_min``: 5 (or a tenth of the frames) on videos, fewer on small sets (KLL-class)."""
    return max(min(5, max(3, int(0.4 * n))), n // 10)


def _region_storage(r):
    y0, y1, x0, x1 = r.box
    v0, v1, u0, u1 = r.sbox
    return 4 * (y1 - y0) * (x1 - x0) + 6 * (v1 - v0) * (u1 - u0)


def _stream_boxes(source, regions, use_idx, shifts, excl, near, excl_any, progress_bar):
    """One pass over the frames: the sensor and scene boxes of ``regions``."""
    n = use_idx.size
    for r in regions:
        y0, y1, x0, x1 = r.box
        v0, v1, u0, u1 = r.sbox
        r.clean = ~excl[y0:y1, x0:x1]
        r.ring = ~near[y0:y1, x0:x1]
        r.raw = np.empty((n, y1 - y0, x1 - x0), np.float32)
        r.reg = np.empty((n, v1 - v0, u1 - u0), np.float32)
        r.reg_ok = np.empty((n, v1 - v0, u1 - u0), bool)
        r.reg_inframe = np.empty((n, v1 - v0, u1 - u0), bool)

    order = np.argsort(use_idx, kind="stable")  # stream in file order
    iterator = order
    if progress_bar:
        from tqdm.auto import tqdm

        iterator = tqdm(order, desc="measuring", unit="frame", leave=False)
    for k in iterator:
        frame = mono_frame(source.read(int(use_idx[k])))
        bad_px = ~np.isfinite(frame)
        frame_excl = excl_any
        if bad_px.any():  # a NaN would spread along its row and column in the spline
            frame = np.where(bad_px, np.nanmedian(frame) if (~bad_px).any() else 0.0, frame)
            frame_excl = excl_any | ndi.binary_dilation(bad_px, iterations=3)
        coeffs = ndi.spline_filter(frame, order=3, mode="nearest")
        dy, dx = shifts[k]
        for r in regions:
            y0, y1, x0, x1 = r.box
            v0, v1, u0, u1 = r.sbox
            r.raw[k] = np.where(bad_px[y0:y1, x0:x1], np.nan, frame[y0:y1, x0:x1])
            values, inside = _sample_box(coeffs, v0, v1, u0, u1, dy, dx, order=3,
                                         prefiltered=True)
            dusty = _sample_mask(frame_excl, v0, v1, u0, u1, dy, dx)
            r.reg[k] = values
            r.reg_inframe[k] = inside
            r.reg_ok[k] = inside & ~dusty


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


def _memory_plan(regions, shifts_all, n_registered, budget, mem_limit):
    """Scene boxes (``r.sbox``, set here) and how the regions and frames fit ``budget``.

    Returns ``(batches, pick)``: the regions of each pass over the frames, and
    the registered frames used (indices into the drift path).
    """
    lo = shifts_all.min(axis=0)
    hi = shifts_all.max(axis=0)
    storage = 0
    work = 0
    for r in regions:
        y0, y1, x0, x1 = r.box
        r.sbox = (int(np.floor(y0 - hi[0])), int(np.ceil(y1 - lo[0])),
                  int(np.floor(x0 - hi[1])), int(np.ceil(x1 - lo[1])))
        v0, v1, u0, u1 = r.sbox
        box_px, scene_px = (y1 - y0) * (x1 - x0), (v1 - v0) * (u1 - u0)
        storage += 4 * box_px + 6 * scene_px  # raw f4, reg f4, two bool maps
        work = max(work, 16 * box_px + 16 * scene_px)  # float32 work stacks, one region
    n_fit = max(1, int(budget // max(1, storage + work)))
    batches = [regions]
    if n_fit < min(n_registered, _MIN_FRAMES_ONE_PASS) and len(regions) > 1:
        # large offsets make big scene boxes: several passes over the frames, each for the
        # regions that fit, rather than too few frames
        sizes = [_region_storage(r) for r in regions]
        n_fit = max(1, min(n_registered, int(budget // max(1, max(sizes) + work))))
        batches, current, used = [], [], 0
        for r, size in zip(regions, sizes, strict=True):
            if current and (used + size) * n_fit + work > budget:
                batches.append(current)
                current, used = [], 0
            current.append(r)
            used += size
        batches.append(current)
        log.info("memory limit %s: %d passes over the frames", mem_limit, len(batches))
    if n_registered > n_fit:
        pick = spread_indices(n_registered, n_fit)
        log.info("memory limit %s: using %d of %d registered frames", mem_limit, pick.size,
                 n_registered)
    else:
        pick = np.arange(n_registered)
    return batches, pick


def _shadow_table(rows):
    """The per-shadow table of `MeasuredTransmission`."""
    return Table(rows=rows or None,
                 names=("id", "x_centroid", "y_centroid", "diameter", "drift_ok", "coverage",
                        "n_frames_used", "trans_err", "measured_depth", "profile", "chi2",
                        "method", "reason"),
                 dtype=(np.int64, np.float64, np.float64, np.float64, bool, np.float64,
                        np.int64, np.float64, np.float64, "U6", np.float64, "U8", "U160"))


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


@dataclass
class _ExclusionMaps:
    """The regions and the pixel maps that keep dust out of the clean samples."""

    regions: list
    excl: np.ndarray       # never a clean sample (dilated dust, defects, surveyed dust)
    near: np.ndarray       # too near a shadow to set a box's level
    excl_any: np.ndarray   # ``excl`` grown by one pixel (for the scene boxes' masks)

    def add(self, extra):
        """Add pixels (dust found by the survey) to the exclusion maps."""
        self.excl |= extra
        self.near |= extra
        self.excl_any = ndi.binary_dilation(self.excl, structure=np.ones((3, 3), bool))


def _exclusion_maps(dust_mask, weight, labels, ignore, opts):
    """The regions around the shadows and the exclusion maps (`_ExclusionMaps`)."""
    shape = dust_mask.shape
    target = dust_mask | (weight > 0)
    regions, owner = _regions(shape, dust_mask, weight, labels, opts.level_gap, margin_frac=0.2)
    excl = _exclusion(shape, target, regions, opts.exclude_extra, owner)
    if ignore is not None:
        ignore = np.asarray(ignore, dtype=bool)
        if ignore.shape != shape:
            raise InputError(f"ignore shape {ignore.shape} differs from the dust mask {shape}")
        excl |= ndi.binary_dilation(ignore, iterations=1)
    near = _exclusion(shape, target, regions, opts.level_gap, owner) | excl
    return _ExclusionMaps(regions, excl, near,
                          ndi.binary_dilation(excl, structure=np.ones((3, 3), bool)))


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


def _survey_static_dust(source, drift, maps, opts):
    """Dust the detector missed (`_static_survey`), added to ``maps``; its list."""
    if not (opts.survey and drift.extent[0] >= 5.0):  # without drift everything looks static
        return []
    extra, static_features = _static_survey(source, np.asarray(drift.frame_index),
                                            np.asarray(drift.shifts), maps.excl)
    if static_features:
        maps.add(extra)
    return static_features


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


def add_flat_method(catalog, info):
    """Return a copy of a dust catalog with the per-shadow decision of ``'measured'``.

    Adds ``flat_method`` (``'measured'`` or ``'local'``: which method set the
    flat inside the shadow; ``'mixed'`` for a shadow in several pieces of
    which only some were measured), ``drift_ok (the drift spans the shadow
    diameter along both principal axes), ``coverage``, ``trans_err``
    (median standard error of the measured transmission) and
    ``measured_depth`` (about 0 for a detection that is not dust), matched
    on ``id``.
    The summary of the drift goes to ``meta['drift']``.  (The existing
    ``method`` column says how the shadow was *found*.)

    Parameters
    ----------
    catalog : `~astropy.table.Table`
        The detection catalog (column ``id``).
    info : dict or `MeasuredTransmission`
        The ``info`` returned by `inpaint_measured` (or found under
        ``inpaint_info`` in a flat's ``PROVJSON``), or a measurement.

    Returns
    -------
    `~astropy.table.Table`
    """
    if isinstance(info, MeasuredTransmission):
        info = {"shadows": [dict(rec, flat_method=rec["method"])
                            for rec in info.provenance()["shadows"]],
                "drift": info.drift.provenance()}
    records = {}
    for rec in info.get("shadows", []):
        records.setdefault(int(rec["id"]), []).append(rec)
    methods = _methods_by_id((rec["id"], rec["flat_method"]) for rec in info.get("shadows", []))

    def agg(i, name, func, default):
        values = [r.get(name) for r in records.get(i, []) if r.get(name) is not None]
        return func(values) if values else default

    out = catalog.copy()
    ids = [int(i) for i in out["id"]] if "id" in out.colnames else []
    out["flat_method"] = np.array([methods.get(i, "") for i in ids], dtype="U8")
    out["drift_ok"] = np.array([agg(i, "drift_ok", all, False) for i in ids], dtype=bool)
    out["coverage"] = np.array([agg(i, "coverage", min, 0.0) for i in ids], dtype=float)
    out["trans_err"] = np.array([agg(i, "trans_err", max, np.nan) for i in ids], dtype=float)
    out["measured_depth"] = np.array([agg(i, "measured_depth", max, np.nan) for i in ids],
                                     dtype=float)
    out["flat_method"].description = "which method set the flat inside the shadow"
    out["drift_ok"].description = "drift extent >= shadow diameter along both principal axes"
    out["coverage"].description = ("fraction of the shadow's pixels with enough "
                                   "drift-uncovered frames")
    out["trans_err"].description = "median standard error of the measured transmission"
    out["measured_depth"].description = ("1 - 1st percentile of the measured transmission "
                                         "(about 0: not a dust shadow)")
    drift = info.get("drift") or {}
    if "summary" in drift:
        out.meta["drift"] = drift["summary"]
    return out


def write_measured_catalog(path, detection, info, *, overwrite=False):
    """Write the dust catalog with the per-shadow method of ``inpaint='measured'`` (ECSV).

    The columns of the detection catalog plus those of `add_flat_method`;
    ``meta`` holds the detector, the drift summary (``drift``: extents,
    rms, number of frames), ``n_measured`` and ``n_local``.

    Parameters
    ----------
    path : str or path-like
        Output ``.ecsv`` file (written atomically).
    detection : `~aiflat_astro.detection.DustDetection`
    info : dict
        The ``info`` of `inpaint_measured` (``PROVJSON['inpaint_info']`` of a flat).
    overwrite : bool, optional
        Default `False`.
    """
    from ...io.catalog import write_catalog_ecsv

    drift = (info.get("drift") or {}).get("summary", {})
    meta = {"detector": detection.detector, "n_shadows": len(detection.catalog),
            "inpaint": "measured", "n_measured": int(info.get("n_measured", 0)),
            "n_local": int(info.get("n_local", 0)), "drift": drift}
    comment = ("flat_method: how the flat was set inside the shadow (measured from the drift "
               "of the scene, or local interpolation)")
    write_catalog_ecsv(path, add_flat_method(detection.catalog, info), comments=[comment],
                       meta=meta, overwrite=overwrite)
    log.info("wrote %s (%d shadows, %d measured)", path, meta["n_shadows"], meta["n_measured"])
