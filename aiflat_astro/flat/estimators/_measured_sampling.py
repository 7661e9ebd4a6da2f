"""Resampling of the measured flat's boxes: one fractional shift per box and frame.

Part of the measured flat (`aiflat_astro.flat.estimators.measured`).  Within
a box every sample has the same shift, so a B-spline evaluation is separable
with the same weights per axis (the numbers of `scipy.ndimage.map_coordinates`
to rounding).
"""

import numpy as np
from scipy import ndimage as ndi


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
