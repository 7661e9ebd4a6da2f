"""Colour medians: dust is located and corrected on one achromatic image."""

import logging

import numpy as np

__all__ = ["cfa_normalise", "is_colour", "to_mono", "mono_frame"]

log = logging.getLogger(__name__)


def is_colour(data):
    """True for an RGB image of shape ``(ny, nx, 3)``.

    Examples
    --------
    >>> import numpy as np
    >>> is_colour(np.zeros((4, 5, 3))), is_colour(np.zeros((4, 5)))
    (True, False)
    """
    return np.ndim(data) == 3 and np.shape(data)[-1] == 3


def to_mono(data, *, what="median"):
    """The mean of the three channels of an RGB image; a 2-D image unchanged.

    A dust shadow is a geometric shadow: its transmission ``T`` is the same
    in every channel, so ``mean(T * clean_c) = T * mean(clean_c)`` and the
    shadow, its mask and its flat are found on the channel mean.  The flat so
    made is 2-D and divides the three channels alike.

    Examples
    --------
    >>> import numpy as np
    >>> rgb = np.stack([np.full((2, 2), v) for v in (30.0, 60.0, 90.0)], axis=-1)
    >>> to_mono(rgb)
    array([[60., 60.],
           [60., 60.]], dtype=float32)
    """
    if is_colour(data):
        log.info("colour %s: dust located and corrected on the mean of the three channels "
                 "(dust shadows are achromatic)", what)
        return np.asarray(data, dtype=np.float32).mean(axis=-1, dtype=np.float64).astype(np.float32)
    return data


def mono_frame(frame, *, dtype=np.float64):
    """A frame as a new 2-D array of ``dtype``; a 3-D (colour) frame is averaged over its last axis.

    The one conversion for frames read from a video (`to_mono` is the one for
    a median, which logs the colour case once).

    Examples
    --------
    >>> import numpy as np
    >>> mono_frame(np.ones((2, 2, 3), np.uint16)).dtype, mono_frame(np.ones((2, 2, 3))).shape
    (dtype('float64'), (2, 2))
    """
    a = np.array(frame, dtype=dtype)
    return a.mean(axis=2) if a.ndim == 3 else a


def cfa_normalise(data, pattern):
    """Divide each of the four phases of a raw colour mosaic by its gain.

    In a raw Bayer (or CMY) mosaic neighbouring pixels see different colour
    filters, so the image carries a 2 × 2 pattern that a dust detector would
    take for texture.  Each phase is divided by the median, over the brighter
    three quarters of the image, of its ratio to the mean of its 2 × 2 cell:
    the mosaic then looks like a mono image.  The dust transmission is the same
    behind every filter, so ``median / clean`` — the flat — is unchanged by
    this per-phase scaling and applies to the raw mosaic as it is.

    Parameters
    ----------
    data : `~numpy.ndarray`
        2-D mosaic.
    pattern : str or None
        The CFA pattern (``BAYERPAT``, e.g. ``'RGGB'``); nothing is done
        without one.

    Returns
    -------
    `~numpy.ndarray`
        A new float32 array, or ``data`` itself when there is nothing to do.

    Examples
    --------
    >>> import numpy as np
    >>> mosaic = np.full((4, 4), 100.0); mosaic[0::2, 0::2] = 150.0; mosaic[1::2, 1::2] = 50.0
    >>> flat = cfa_normalise(mosaic, "RGGB")
    >>> float(flat.max() - flat.min())
    0.0
    """
    data = np.asarray(data)
    if not pattern or data.ndim != 2 or min(data.shape) < 4:
        return data
    d = np.array(data, dtype=np.float32)
    h2, w2 = d.shape[0] // 2 * 2, d.shape[1] // 2 * 2
    with np.errstate(invalid="ignore", divide="ignore"):
        cell = d[:h2, :w2].reshape(h2 // 2, 2, w2 // 2, 2).mean(axis=(1, 3))
        finite = np.isfinite(cell) & (cell > 0)
        if not finite.any():
            return d
        bright = finite & (cell >= np.percentile(cell[finite], 25))
        gains = {}
        for dy in (0, 1):
            for dx in (0, 1):
                ratio = d[dy:h2:2, dx:w2:2][bright] / cell[bright]
                ratio = ratio[np.isfinite(ratio)]
                gains[dy, dx] = float(np.median(ratio)) if ratio.size else 1.0
    for (dy, dx), gain in gains.items():
        if gain > 0:
            d[dy::2, dx::2] /= gain
    log.info("CFA mosaic (%s): phases divided by their gains %s", pattern,
             ", ".join(f"{g:.3g}" for g in gains.values()))
    return d
