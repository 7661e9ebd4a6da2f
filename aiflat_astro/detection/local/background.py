"""Backgrounds of the scene at several scales, the usable region, robust scatter.

A dust shadow is a dip of the transmission *relative to the scene around it*.
The scene has structure on every scale (granulation, plage, filaments,
sunspots, the limb; stars and nebulae on the sky), so the background of a
speck of diameter ``d`` is a robust median of the image over a window a few
times ``d``: large enough that the speck does not pull it down, small enough
to follow the scene.  `median_background` computes it fast on a block grid.
"""

import warnings

import numpy as np
from scipy import ndimage

from ..._imaging.robust import robust_sigma
from ...utils.exceptions import InputError, renamed_keyword

__all__ = ["darkness_map"]

#: A pixel is "sky" when the smoothed image is below this fraction of the disc level.
SKY_FRACTION = 0.12
#: Smallest scatter of a darkness map (0.1 %): a noise-free image still has its quantisation.
SIGMA_FLOOR = 1e-3
#: Width of a background window in blocks (the median runs over this many blocks a side).
BLOCKS_PER_WINDOW = 5


def block_mean(a, b, w=None):
    """Block means of ``a`` (weighted by ``w``) over b×b blocks; returns (mean, weight fraction)."""
    if w is None:
        return _block_mean_unweighted(np.asarray(a, np.float32), b)
    ww = w.astype(np.float32)
    if b == 1:
        return np.where(ww > 0, a, 0).astype(np.float32), ww
    h, wd = a.shape
    ph, pw = (-h) % b, (-wd) % b
    aw = np.where(ww > 0, a, 0).astype(np.float32) * ww
    if ph or pw:
        aw = np.pad(aw, ((0, ph), (0, pw)))
        ww = np.pad(ww, ((0, ph), (0, pw)))
    hb, wb = aw.shape[0] // b, aw.shape[1] // b
    s = aw.reshape(hb, b, wb, b).sum(axis=(1, 3))
    n = ww.reshape(hb, b, wb, b).sum(axis=(1, 3))
    mean = np.where(n > 0, s / np.maximum(n, 1e-12), 0).astype(np.float32)
    return mean, (n / (b * b)).astype(np.float32)


def _block_mean_unweighted(a, b):
    """`block_mean` without weights: every pixel counts (the last blocks' mean is over the pixels they hold)."""
    h, wd = a.shape
    if b == 1:
        return a, np.ones(a.shape, np.float32)
    ph, pw = (-h) % b, (-wd) % b
    hb, wb = (h + ph) // b, (wd + pw) // b
    s = (np.pad(a, ((0, ph), (0, pw))) if ph or pw else a).reshape(hb, b, wb, b).sum(axis=(1, 3))
    ny = np.minimum(b, h - b * np.arange(hb))
    nx = np.minimum(b, wd - b * np.arange(wb))
    n = (ny[:, None] * nx[None, :]).astype(np.float32)
    return (s / n).astype(np.float32), n / (b * b)


def _axis_weights(n, b, m):
    """Indices and weights of a linear interpolation from ``m`` block centres to ``n`` pixels."""
    pos = np.clip((np.arange(n, dtype=np.float32) + 0.5) / b - 0.5, 0, m - 1)
    i0 = np.floor(pos).astype(np.intp)
    i1 = np.minimum(i0 + 1, m - 1)
    return i0, i1, (pos - i0).astype(np.float32)


def upsample(grid, b, shape):
    """Bilinear expansion of a block grid (values at block centres) back to ``shape``."""
    grid = np.asarray(grid, np.float32)
    if b == 1:
        return grid[: shape[0], : shape[1]]
    y0, y1, fy = _axis_weights(shape[0], b, grid.shape[0])
    x0, x1, fx = _axis_weights(shape[1], b, grid.shape[1])
    # along the columns on the small grid first: the full-size pass then gathers whole rows
    cols = grid[:, x0] * (1 - fx)[None, :] + grid[:, x1] * fx[None, :]
    return cols[y0] * (1 - fy)[:, None] + cols[y1] * fy[:, None]


def fill_invalid(grid, good):
    """Grid values where ``good`` is False replaced by the nearest good value."""
    if good.all() or not good.any():
        return grid
    idx = ndimage.distance_transform_edt(~good, return_distances=False, return_indices=True)
    return grid[tuple(idx)]


def median_background(data, valid, size):
    """Robust background of ``data`` over windows of about ``size`` pixels.

    The image is averaged over blocks of ``size / 5`` pixels (valid pixels
    only), the blocks are median-filtered over 5×5 blocks and the result is
    expanded bilinearly.  Invalid pixels (sky, defects) take the nearest valid
    block, so the background does not sink at the limb.
    """
    b = max(1, int(round(size / BLOCKS_PER_WINDOW)))
    grid, frac = block_mean(data, b, valid)
    good = frac > 0.5
    if not good.any():
        return np.full(data.shape, np.float32(np.median(data[valid])) if valid.any() else 1.0)
    grid = fill_invalid(grid, good)
    n = max(3, int(round(size / b)) | 1)
    grid = ndimage.median_filter(grid, size=n, mode="nearest")
    return upsample(grid, b, data.shape)


def local_sigma(values, valid, block):
    """Map of the robust scatter of ``values`` over ``block``-pixel tiles (valid pixels only).

    The scene's texture varies over the field (quiet Sun, plage, umbra): a
    speck must stand out of the scatter *where it is*.  Each tile's scatter is
    read from about 1024 of its pixels (`tile_samples`).
    """
    h, w = values.shape
    block = int(max(16, min(block, h, w)))
    tiles = tile_samples(values, valid, block)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)     # all-NaN tiles (sky) are expected
        med = np.nanmedian(tiles, axis=0)
        sig = 1.4826 * np.nanmedian(np.abs(tiles - med[None]), axis=0)
        count = np.sum(np.isfinite(tiles), axis=0)
    good = np.isfinite(sig) & (count >= 0.2 * tiles.shape[0]) & (sig > 0)
    if not good.any():
        sig_all = robust_sigma(values[valid])      # 0.0 when nothing is valid: the floor then
        return np.full(values.shape, max(sig_all, SIGMA_FLOOR), np.float32)
    sig = fill_invalid(np.where(good, sig, 0), good)
    sig = ndimage.median_filter(sig, size=3, mode="nearest")
    return np.maximum(upsample(sig.astype(np.float32), block, values.shape), SIGMA_FLOOR)


def tile_samples(values, valid, block):
    """Every ``step``-th pixel (row-major) of each ``block``×``block`` tile; shape (n, tiles_y, tiles_x).

    ``step`` keeps about 1024 pixels a tile.  Pixels not valid, or beyond the
    image in the last row or column of tiles, are NaN.  Only the samples are
    gathered (the image is neither padded nor copied).

    Examples
    --------
    >>> import numpy as np
    >>> t = tile_samples(np.arange(16.0).reshape(4, 4), np.ones((4, 4), bool), 2)
    >>> t.shape, t[:, 0, 1].tolist()
    ((4, 2, 2), [2.0, 3.0, 6.0, 7.0])
    """
    h, w = values.shape
    hb, wb = -(-h // block), -(-w // block)
    step = max(1, block * block // 1024)
    flat = np.arange(0, block * block, step)
    yy = np.arange(hb)[None, :, None] * block + (flat // block)[:, None, None]
    xx = np.arange(wb)[None, None, :] * block + (flat % block)[:, None, None]
    inside = (yy < h) & (xx < w)
    yy, xx = np.minimum(yy, h - 1), np.minimum(xx, w - 1)
    ok = inside & valid[yy, xx]
    return np.where(ok, values[yy, xx], np.nan).astype(values.dtype, copy=False)


def valid_region(data, bad):
    """Pixels on the solar/planetary disc (or everywhere for a sky field).

    Returns ``valid`` (bool) and whether the frame holds a limb.
    """
    h, w = data.shape
    b = max(1, min(h, w) // 128)
    fill = np.where(bad, np.nan, data)
    coarse, frac = block_mean(np.nan_to_num(fill), b, np.isfinite(fill))
    good = frac > 0.5
    if not good.any():
        raise InputError("the median has no usable pixel")
    level = float(np.percentile(coarse[good], 90))
    if not level > 0:
        level = float(np.max(coarse[good])) if np.max(coarse[good]) > 0 else 1.0
    smooth = ndimage.gaussian_filter(np.nan_to_num(fill).astype(np.float32), 2.0)
    valid = smooth > SKY_FRACTION * level
    if valid.mean() < 0.999:
        # keep the disc: fill enclosed dark holes (umbrae, deep dust), drop small islands
        valid = ndimage.binary_fill_holes(valid)
        lab, n = ndimage.label(valid)
        if n > 1:
            sizes = ndimage.sum_labels(valid, lab, np.arange(1, n + 1))
            valid = np.isin(lab, 1 + np.flatnonzero(sizes >= 0.01 * valid.size))
    if valid.mean() < 0.02:
        raise InputError("the median is almost entirely dark: no disc or sky background to search for dust")
    return valid & ~bad, bool(valid.mean() < 0.98)


def darkness_map(median, *, ignore=None, box_size=None, valid=None, exclude=None):
    """Darkness ``1 − median / background`` with a robust background.

    The background is a median over windows of ``box_size`` pixels of the
    pixels not ignored (ignored pixels, non-finite pixels do not enter it;
    they take the background around them), so a known shadow's depth is read
    against the scene around it.

    Parameters
    ----------
    median : `numpy.ndarray`
        2-D image.
    ignore : `numpy.ndarray`, optional
        Boolean, True for pixels kept out of the background estimate (known
        dust, the sky beyond a limb, defects).  Their darkness is still
        measured; it is 0 only where the image is not finite.
    box_size : int, optional
        Background window in pixels; by default about 1/8 of the smaller
        side (at least 64).
    valid, exclude : `numpy.ndarray`, optional
        Deprecated: use ``ignore=exclude | ~valid``.  With ``valid`` the
        darkness is 0 outside it, as before.

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
    data = np.asarray(median, dtype=np.float32)
    if data.ndim != 2:
        raise InputError(f"the image must be 2-D, got shape {data.shape}")
    ignore, shown = _darkness_ignore(data.shape, ignore, valid, exclude)
    finite = np.isfinite(data)
    use = finite if ignore is None else (finite & ~ignore)
    shown = finite if shown is None else (finite & shown)
    if box_size is None:
        box_size = max(64, min(data.shape) // 8)
    fill = np.where(finite, data, 0).astype(np.float32)
    background = median_background(fill, use, int(min(box_size, max(data.shape))))
    safe = np.where(background > 0, background, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        darkness = np.where(shown, 1.0 - fill / safe, 0.0)
    return np.nan_to_num(darkness, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32), background


def _darkness_ignore(shape, ignore, valid, exclude):
    """``(ignore, shown)`` of `darkness_map`: its deprecated ``valid``/``exclude`` folded into ``ignore``.

    ``shown`` is where the darkness is measured (``valid`` of the old call,
    None for everywhere finite).
    """
    arrays = {"ignore": ignore, "valid": valid, "exclude": exclude}
    for label, value in arrays.items():
        if value is not None and np.shape(value) != tuple(shape):
            raise InputError(f"{label} shape {np.shape(value)} differs from the image's {tuple(shape)}")
    if valid is None and exclude is None:
        return (None if ignore is None else np.asarray(ignore, bool)), None
    old = np.zeros(shape, bool)
    shown = None
    if valid is not None:
        shown = np.asarray(valid, bool)
        old |= ~shown
    if exclude is not None:
        old |= np.asarray(exclude, bool)
    which = "valid" if exclude is None else ("exclude" if valid is None else "valid/exclude")
    return renamed_keyword("darkness_map", which, "ignore=exclude | ~valid", old,
                           given=ignore, stacklevel=2), shown
