"""Robust statistics and binning on plain arrays, from astropy where astropy has them."""

import numpy as np

__all__ = ["robust_sigma", "block_mean"]


def robust_sigma(values):
    """Gaussian-equivalent scatter of the finite values: the MAD times 1.4826 (0.0 when none).

    `astropy.stats.mad_std` over the finite values, so that NaN and infinite
    pixels (masked out, beyond a limb) are ignored and an empty selection is
    no error.

    Parameters
    ----------
    values : array-like
        Any shape; flattened.

    Returns
    -------
    float

    Examples
    --------
    >>> import numpy as np
    >>> round(robust_sigma([1.0, 2.0, 3.0, 4.0, 100.0, np.nan]), 4)
    1.4826
    >>> robust_sigma([np.nan])
    0.0
    """
    from astropy.stats import mad_std

    values = np.asarray(values, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0
    return float(mad_std(values))


def block_mean(image, factor):
    """Mean over ``factor`` x ``factor`` blocks; rows and columns beyond a whole block are dropped.

    `astropy.nddata.block_reduce` with `numpy.mean`; ``factor == 1`` returns
    ``image`` itself.

    Parameters
    ----------
    image : `numpy.ndarray`
        2-D.
    factor : int
        Block side in pixels (>= 1).

    Examples
    --------
    >>> import numpy as np
    >>> block_mean(np.arange(20.0).reshape(4, 5), 2)
    array([[ 3.,  5.],
           [13., 15.]])
    """
    factor = int(factor)
    if factor == 1:
        return image
    from astropy.nddata import block_reduce

    h, w = (image.shape[0] // factor) * factor, (image.shape[1] // factor) * factor
    return block_reduce(np.asarray(image)[:h, :w], factor, func=np.mean)
