"""Simulated KLL sets: a few full-disc frames off-pointed by large offsets, with their gain.

The classic input of solar flat-fielding (Kuhn, Lin & Loranz 1991; Chae 2004):
the telescope is pointed so that the solar disc lands at several positions on
the sensor, offsets of tens to hundreds of pixels, while the sensor's gain
(pixel-to-pixel response, vignetting, dust) stays put.  `make_kll_set`
renders such a set over a solar disc scene from `aiflat_astro.datasets.scenes`
with its ground truth.
"""

from dataclasses import dataclass

import numpy as np
from astropy.table import Table
from scipy import ndimage, special

from ..utils._options import merged_options
from ..utils.exceptions import InputError
from .dust import make_dust_transmission
from .scenes import LIMB_DARKENING, make_solar_scene, make_vignetting

__all__ = ["KLLSet", "KLLSetOptions", "make_kll_set", "kll_offsets"]


@dataclass(frozen=True)
class KLLSetOptions:
    """The options of `make_kll_set` (the same names and defaults as its keywords).

    Examples
    --------
    >>> KLLSetOptions(n_frames=9).max_offset
    330.0
    """

    shape: tuple = (1024, 1024)
    n_frames: int = 16
    min_offset: float = 5.0
    max_offset: float = 330.0
    disc_radius: object = None
    prnu: float = 0.01
    vignetting: float = 0.05
    n_dust: int = 6
    level: float = 80000.0
    read_noise: float = 10.0
    transparency: float = 0.02
    seeing: float = 1.0
    scene_style: str = "realistic"
    seed: object = None


@dataclass(frozen=True)
class KLLSet:
    """A simulated off-pointed set and its truth.

    Attributes
    ----------
    frames : ndarray, float32, (n_frames, H, W)
        Frames in electrons (shot and read noise included).
    shifts : ndarray, (n_frames, 2)
        True ``(dy, dx)`` of the scene on the sensor, ``frame_k(y, x) = gain(y, x) *
        scene(y - dy_k, x - dx_k)`` (relative to the first frame).
    gain : ndarray, float32, (H, W)
        The whole gain table: ``prnu * vignetting * transmission``, median 1.
    prnu, vignetting, transmission : ndarray, float32
        Its factors (``transmission`` is the dust; 1 outside the shadows).
    dust_labels : ndarray, int32
        Catalog id of each dust pixel.
    dust : `~astropy.table.Table`
        The dust catalog (`~aiflat_astro.datasets.make_dust_transmission`).
    levels : ndarray
        Relative exposure of each frame (transparency), mean 1.
    disc_radius : float
        Radius of the solar disc in pixels.
    """

    frames: np.ndarray
    shifts: np.ndarray
    gain: np.ndarray
    prnu: np.ndarray
    vignetting: np.ndarray
    transmission: np.ndarray
    dust_labels: np.ndarray
    dust: Table
    levels: np.ndarray
    disc_radius: float


def kll_offsets(n_frames, *, min_offset=5.0, max_offset=330.0, seed=None):
    """Offsets of a KLL pointing pattern: the first frame at 0, the others from 5 to 330 px.

    Offset lengths are spread geometrically from ``min_offset`` to
    ``max_offset`` in random directions, with random sub-pixel parts.

    Parameters
    ----------
    n_frames : int
        At least 2.
    min_offset, max_offset : float, optional
        Smallest and largest offset length from the first frame (px).
    seed : int or `numpy.random.Generator`, optional

    Returns
    -------
    ndarray, (n_frames, 2)

    Examples
    --------
    >>> s = kll_offsets(9, seed=1)
    >>> s.shape, bool(np.allclose(s[0], 0))
    ((9, 2), True)
    >>> r = np.hypot(*s[1:].T)
    >>> round(float(r.min()), 1), round(float(r.max()), 1)
    (5.0, 330.0)
    """
    n_frames = int(n_frames)
    if n_frames < 2:
        raise InputError(f"a KLL set needs at least 2 frames, got {n_frames}")
    if not 0 < float(min_offset) <= float(max_offset):
        raise InputError(f"need 0 < min_offset <= max_offset, got {min_offset}, {max_offset}")
    rng = np.random.default_rng(seed)
    radii = np.geomspace(float(min_offset), float(max_offset), n_frames - 1)
    # directions spread around the circle (a golden-angle walk, randomly started)
    angles = rng.uniform(0, 2 * np.pi) + np.arange(n_frames - 1) * np.pi * (3 - np.sqrt(5))
    rng.shuffle(angles)
    out = np.zeros((n_frames, 2))
    out[1:, 0] = radii * np.sin(angles)
    out[1:, 1] = radii * np.cos(angles)
    return out


def _disc(shape, radius):
    """Limb-darkened disc (1 at centre) on faint sky, centred on ``shape``."""
    h, w = shape
    yy, xx = np.ogrid[0:h, 0:w]
    r = np.hypot(yy - (h - 1) / 2, xx - (w - 1) / 2)
    mu = np.sqrt(np.clip(1 - (r / radius) ** 2, 0, 1))
    on = 0.5 * (1 + special.erf(-(r - radius) / (np.sqrt(2) * 1.5)))
    return ((1 - LIMB_DARKENING * (1 - mu)) * on + 0.02 * (1 - on)).astype(np.float32)


def make_kll_set(*, options=None, **keywords):
    """Render an off-pointed (KLL) set of full-disc frames with a known gain table.

    The scene is a solar disc (limb-darkened, with the granulation, sunspots,
    pores, filaments and faculae of `~aiflat_astro.datasets.make_solar_scene`)
    larger than the sensor canvas needs; frame ``k`` is the scene shifted by
    ``shifts[k]`` (cubic spline, sub-pixel), times the gain, times a frame
    level (transparency), in electrons with Poisson and read noise.

    Parameters
    ----------
    options : `KLLSetOptions`, optional
        The options below as one object; keywords given as well override it.
    shape : tuple of int, optional
        Sensor ``(height, width)``.  Default ``(1024, 1024)``.
    n_frames : int, optional
        Default 16.
    min_offset, max_offset : float, optional
        Offset lengths from the first frame (px), `kll_offsets`.  Defaults 5 and 330.
    disc_radius : float, optional
        Radius of the disc (px); default 0.42 of the smaller side.
    prnu : float, optional
        Rms of the pixel-to-pixel response (white).  Default 0.01.
    vignetting : float, optional
        Light loss at the farthest corner (`~aiflat_astro.datasets.make_vignetting`).
        Default 0.05.
    n_dust : int, optional
        Dust shadows (solar regime).  Default 6.
    level : float, optional
        Electrons at disc centre.  Default 80000 (a large-well solar camera).
    read_noise : float, optional
        Electrons rms.  Default 10.
    transparency : float, optional
        Rms of the frame levels.  Default 0.02.
    seeing : float, optional
        Gaussian sigma (px) of the seeing and optics blur of the scene (a
        full-disc image at about 1 arcsec/px under 2 arcsec seeing).
        Default 1.0.
    scene_style : {'realistic', 'soft'}, optional
        The disc texture's style (`~aiflat_astro.datasets.make_solar_scene`):
        the realistic default, or the former soft scene (the figures of
        ``docs/measured.rst`` were measured on it).
    seed : int or `numpy.random.Generator`, optional

    Returns
    -------
    KLLSet

    Examples
    --------
    >>> s = make_kll_set(shape=(96, 96), n_frames=4, max_offset=20, n_dust=1, seed=0)
    >>> s.frames.shape, round(float(np.median(s.gain)), 6)
    ((4, 96, 96), 1.0)
    """
    o = merged_options(KLLSetOptions, options, keywords, "make_kll_set")
    if len(tuple(o.shape)) != 2 or min(o.shape) < 32:
        raise InputError(f"shape must be (height, width) of at least 32 px, got {o.shape}")
    shape = (int(o.shape[0]), int(o.shape[1]))
    rng = np.random.default_rng(o.seed)
    shifts = kll_offsets(o.n_frames, min_offset=o.min_offset, max_offset=o.max_offset, seed=rng)
    radius = float(o.disc_radius) if o.disc_radius is not None else 0.42 * min(shape)
    margin = int(np.ceil(np.abs(shifts).max())) + 8
    scene = _kll_scene(o, shape, margin, radius, rng)
    gain, prnu_map, vig, trans, labels, dust = _kll_gain(o, shape, radius, rng)
    frames, levels = _kll_frames(o, scene, gain, shifts, margin, rng)
    return KLLSet(frames=frames, shifts=shifts, gain=gain, prnu=prnu_map, vignetting=vig,
                  transmission=trans, dust_labels=labels, dust=dust, levels=levels,
                  disc_radius=radius)


def _kll_scene(o, shape, margin, radius, rng):
    """The solar disc scene on a canvas ``margin`` px larger than the sensor on each side, blurred by the seeing."""
    canvas = (shape[0] + 2 * margin, shape[1] + 2 * margin)
    texture = make_solar_scene(canvas, limb=False, features=True, style=o.scene_style, seed=rng)
    scene = texture * _disc(canvas, radius)
    if o.seeing:
        scene = ndimage.gaussian_filter(scene, float(o.seeing))
    return scene


def _kll_gain(o, shape, radius, rng):
    """The gain table ``prnu * vignetting * dust`` (median 1) and its factors."""
    prnu_map = (1 + float(o.prnu) * rng.standard_normal(shape)).astype(np.float32)
    vig = make_vignetting(shape, amplitude=float(o.vignetting), seed=rng)
    yy, xx = np.ogrid[0:shape[0], 0:shape[1]]
    # dust where the disc goes in most frames: within the disc at its central position
    allowed = np.hypot(yy - (shape[0] - 1) / 2, xx - (shape[1] - 1) / 2) < 0.8 * radius
    trans, labels, dust = make_dust_transmission(shape, regime="solar", n_dust=int(o.n_dust),
                                                 allowed=allowed, seed=rng)
    gain = prnu_map * vig * trans
    norm = np.median(gain)
    return ((gain / norm).astype(np.float32), (prnu_map / norm).astype(np.float32), vig, trans, labels, dust)


def _kll_frames(o, scene, gain, shifts, margin, rng):
    """The frames: the scene shifted (cubic spline), times the gain and a frame level, with shot and read noise."""
    shape = gain.shape
    n_frames = len(shifts)
    levels = 1 + float(o.transparency) * rng.standard_normal(n_frames)
    levels /= levels.mean()
    coeffs = ndimage.spline_filter(scene, order=3, mode="nearest")
    frames = np.empty((n_frames,) + shape, np.float32)
    for k, (dy, dx) in enumerate(shifts):
        # frame(y, x) = scene(y - dy, x - dx): canvas coordinates (y - dy + margin)
        yk = np.arange(shape[0]) - dy + margin
        xk = np.arange(shape[1]) - dx + margin
        sky = ndimage.map_coordinates(coeffs, np.meshgrid(yk, xk, indexing="ij"), order=3,
                                      mode="nearest", prefilter=False)
        electrons = np.clip(float(o.level) * levels[k] * gain * sky, 0, None)
        frames[k] = rng.poisson(electrons) + float(o.read_noise) * rng.standard_normal(shape)
    return frames, levels
