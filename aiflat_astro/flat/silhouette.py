"""Transmission of a shadow that is not one round speck: its silhouette convolved with the pupil.

The shadow of an opaque silhouette ``S`` (a grain, a clump of grains, a
fibre) at a distance ``d`` in front of the sensor is ``S`` convolved with the
image of the pupil there, a disc of diameter ``D = d / N``::

    T = 1 - (S * P_D)

A clump's grains sit at one distance and share one footprint, so its shadow
is the sum of overlapping discs whose minima are where they overlap.  This
module estimates ``S`` on the pixel grid by a non-negative, L1-regularised
deconvolution of the ratio ``median / clean`` by the disc (FISTA, opacity
bounded to ``[0, 1]``), with the pixels beyond the texture rejected as in
the radial fit, for a few footprint diameters tied to the shadow's own
width, and keeps the diameter with the lowest Bayesian information
criterion, the lasso's degrees of freedom being its active pixels
(``0 < S < 1``).  `~aiflat_astro.flat.make_flat` compares that criterion with
the radial profile's and keeps the lower.
"""

import numpy as np
from scipy import ndimage, fft

__all__ = []

#: Footprint diameters tried, as fractions of the core's inscribed diameter.
_DIAMETER_FRACTIONS = (0.6, 0.8, 1.0, 1.2)
#: L1 weight on the opacity, in texture sigmas per footprint (noise-only solutions vanish).
_LAMBDA_SIGMA = 2.0
_ITERATIONS = 150
_REJECT_SIGMA = 3.0
#: Score on every fitted pixel (True) or on those the texture rejection kept.
_SCORE_ALL = True
#: Shadows larger than this (pixels in the window) keep the radial profile (cost).
_MAX_WINDOW = 160 * 160


def disc_kernel(diameter, *, oversample=4):
    """The pupil's image: a disc of ``diameter`` px, area-sampled, unit sum.

    Examples
    --------
    >>> k = disc_kernel(3.0)
    >>> k.shape, round(float(k.sum()), 6)
    ((5, 5), 1.0)
    """
    r = max(0.5 * float(diameter), 0.5)
    n = int(np.ceil(r))
    sub = (np.arange(oversample) + 0.5) / oversample - 0.5
    ax = (np.arange(-n, n + 1)[:, None] + sub[None, :]).ravel()
    inside = (ax[:, None] ** 2 + ax[None, :] ** 2) <= r * r
    k = inside.reshape(2 * n + 1, oversample, 2 * n + 1, oversample).mean(axis=(1, 3))
    return k / k.sum()


class _Convolver:
    """FFT convolution by a fixed centred kernel, cropped to the image ('same')."""

    def __init__(self, shape, kernel):
        self.shape = shape
        self.full = [fft.next_fast_len(a + b - 1, real=True) for a, b in zip(shape, kernel.shape)]
        self.kf = fft.rfft2(kernel, self.full)
        self.off = (kernel.shape[0] // 2, kernel.shape[1] // 2)

    def __call__(self, image):
        out = fft.irfft2(fft.rfft2(image, self.full) * self.kf, self.full)
        return out[self.off[0]:self.off[0] + self.shape[0], self.off[1]:self.off[1] + self.shape[1]]


def _fista(data, weights, support, conv, lam, n_iter=_ITERATIONS):
    """Opacity ``O`` in [0, 1] on ``support`` minimising ``½ Σ w (1 − O*P − data)² + λ Σ O``."""
    o = np.zeros(data.shape)
    z, t = o.copy(), 1.0
    for _ in range(n_iter):
        resid = weights * (1.0 - conv(z) - data)
        o_new = np.clip(z + conv(resid) - lam, 0.0, 1.0) * support   # step 1: ||P||op <= 1
        t_new = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * t * t))
        z = o_new + ((t - 1.0) / t_new) * (o_new - o)
        o, t = o_new, t_new
    return o


#: Pixels per independent texture sample (the scene's texture is correlated over a few px).
_CORRELATION_AREA = 1.0


def _bic(rss, n, dof):
    """Bayesian information criterion with ``n / _CORRELATION_AREA`` independent samples."""
    n_eff = max(n / _CORRELATION_AREA, 2.0)
    return n_eff * np.log(max(rss, 1e-30) / n) + dof * np.log(n_eff)


def _fit_one_diameter(data, fit, support, diameter, sigma, slack):
    """Silhouette for one footprint diameter, the texture rejected: (model, rss, dof, kept)."""
    conv = _Convolver(data.shape, disc_kernel(diameter))
    area = np.pi * diameter**2 / 4.0
    lam = _LAMBDA_SIGMA * sigma / np.sqrt(max(area, 1.0))
    weights = fit.astype(np.float64)
    for _ in range(2):
        opacity = _fista(data, weights, support, conv, lam)
        model = 1.0 - conv(opacity)
        bad = fit & (np.abs(data - model) > _REJECT_SIGMA * sigma + slack)
        if np.mean(bad[fit]) > 0.5:
            break
        weights = (fit & ~bad).astype(np.float64)
    kept = fit if _SCORE_ALL else weights > 0
    rss = float(np.sum((data - model)[kept] ** 2))
    dof = int(np.count_nonzero((opacity > 1e-3) & (opacity < 1.0 - 1e-3)))
    return model, rss, dof, kept


def fit_silhouette(data, fit, support, core, *, sigma, slack=0.0):
    """Transmission of a shadow as its silhouette convolved with a disc footprint.

    Parameters
    ----------
    data : ndarray
        Ratio ``median / clean`` on the shadow's window (any value where not ``fit``).
    fit : ndarray of bool
        Pixels the fit uses (the shadow's valid pixels, and 1.0 known around it).
    support : ndarray of bool
        Where the silhouette may be non-zero.
    core : ndarray of bool
        The shadow's core (its inscribed diameter sets the footprints tried).
    sigma : float
        Relative texture level; pixels beyond 3 sigma (plus ``slack``) are rejected.

    Returns
    -------
    dict or None
        ``model`` (T on the window), ``diameter`` (px), ``rss`` and ``n`` (over
        the pixels kept, so that the radial model can be scored on the same),
        ``dof``, ``kept``; None when the window is too large or too small.

    Examples
    --------
    >>> import numpy as np
    >>> yy, xx = np.mgrid[:41, :41]
    >>> sil = ((yy - 20)**2 + (xx - 17)**2 <= 4) | ((yy - 20)**2 + (xx - 24)**2 <= 4)
    >>> conv = _Convolver(sil.shape, disc_kernel(10.0))
    >>> data = 1.0 - conv(sil.astype(float))
    >>> core = data < 0.95
    >>> out = fit_silhouette(data, np.ones_like(core), core, core, sigma=0.002)
    >>> bool(np.sqrt(np.mean((out['model'] - data) ** 2)) < 0.01)
    True
    """
    if data.size > _MAX_WINDOW or core.sum() < 4 or not np.isfinite(sigma) or sigma <= 0:
        return None
    inscribed = 2.0 * float(ndimage.distance_transform_edt(np.pad(core, 1)).max())
    best = None
    for frac in _DIAMETER_FRACTIONS:
        diameter = max(1.0, frac * inscribed)
        model, rss, dof, kept = _fit_one_diameter(data, fit, support, diameter, sigma, slack)
        n = int(kept.sum())
        score = _bic(rss, n, dof)
        if best is None or score < best["bic"]:
            best = {"model": model, "diameter": diameter, "rss": rss, "n": n, "dof": dof,
                    "kept": kept, "bic": score}
    return best
