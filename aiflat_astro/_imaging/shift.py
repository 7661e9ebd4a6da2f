"""Moving an image by a sub-pixel shift (bilinear), fast."""

import numpy as np

__all__ = ["bilinear_shift"]


def bilinear_shift(image, shift, *, dtype=np.float32):
    """``image`` moved by ``shift`` ``(dy, dx)`` px with bilinear interpolation, 0 outside.

    ``out(y, x) = image(y - dy, x - dx)``: the values of
    `scipy.ndimage.shift` with ``order=1, mode='grid-constant', cval=0``
    (within rounding), as four weighted slices, several times faster.

    Parameters
    ----------
    image : `numpy.ndarray`
        2-D.
    shift : tuple of float
        ``(dy, dx)`` in pixels.
    dtype : dtype, optional
        Of the result; default float32.

    Examples
    --------
    >>> import numpy as np
    >>> bilinear_shift(np.arange(4.0).reshape(1, 4), (0, 0.5))
    array([[0. , 0.5, 1.5, 2.5]], dtype=float32)
    """
    image = np.asarray(image)
    out = np.zeros(image.shape, dtype)
    whole = np.floor(np.asarray(shift, float)).astype(int)
    fy, fx = np.asarray(shift, float) - whole
    for ky, wy in ((whole[0], 1 - fy), (whole[0] + 1, fy)):
        for kx, wx in ((whole[1], 1 - fx), (whole[1] + 1, fx)):
            if wy * wx == 0:
                continue
            dst, src = _shifted_slices(image.shape, (ky, kx))
            if dst is not None:
                out[dst] += (wy * wx) * image[src]
    return out


def _shifted_slices(shape, d):
    """Slices ``(dst, src)`` with ``dst = src + d`` inside ``shape`` (None when they miss)."""
    dst, src = [], []
    for n, k in zip(shape, d, strict=True):
        lo, hi = max(0, k), min(n, n + k)
        if hi <= lo:
            return None, None
        dst.append(slice(lo, hi))
        src.append(slice(lo - k, hi - k))
    return tuple(dst), tuple(src)
