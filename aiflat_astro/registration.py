"""Sub-pixel registration of video frames and the drift path of the scene.

When a video drifts (mount tracking, dither, seeing), the scene moves across
the sensor while sensor dust stays put.  `register_frames` measures, for every
frame, the shift ``(dy, dx)`` of the scene on the sensor, with the convention
of the simulator: ``frame_k(y, x) = scene(y - dy_k, x - dx_k)``.

Static sensor features (dust shadows, vignetting, hot pixels) pull a naive
correlation towards zero shift.  The registration therefore

* fills the dust mask (when given) and removes large scales with a high-pass
  filter that ignores masked pixels (vignetting and smooth shading are static);
* apodises the frame with a Tukey window;
* measures the shift by phase correlation with a low-pass frequency taper,
  refined to ``1/upsample_factor`` px with the matrix-multiply upsampled DFT of
  Guizar-Sicairos, Thurman & Fienup (2008, Opt. Lett. 33, 156);
* registers against a reference that is first the median of the first frames
  and then, iterated once, the median of a spread subset of frames shifted
  back onto the scene, where any remaining static pattern is smeared out.

Frames are streamed one at a time: memory does not grow with the length of
the video.  `DriftPath` holds the result, its principal-axis extents, a table
for the catalog and provenance, and a PNG plot.
"""

import contextlib
import logging
from dataclasses import dataclass, field

import numpy as np
from astropy.table import Table
from scipy import fft as _fft
from scipy import ndimage as ndi

from ._imaging.robust import block_mean
from ._imaging.shift import bilinear_shift
from .io.frames import opened_frames, select_frames
from .utils._colour import mono_frame
from .utils._options import merged_options
from .utils._threads import serial_blas
from .utils.exceptions import InputError

__all__ = [
    "DriftPath",
    "register_frames",
    "RegisterOptions",
    "measure_shift",
    "shift_extent",
    "drift_constraint",
    "plot_drift",
]

log = logging.getLogger(__name__)


def _open_source(frames):
    """The frames as a source, opened (and closed after) unless already one: `~aiflat_astro.io.frames.opened_frames`.

    Anything with ``read`` and ``n_frames`` (and ``frame_shape``) is used as
    it is: the registration reads nothing else.  A 2-D array is refused clearly.
    """
    if hasattr(frames, "read") and hasattr(frames, "n_frames"):
        return contextlib.nullcontext(frames)
    if isinstance(frames, np.ndarray) and frames.ndim not in (3, 4):
        raise InputError(f"frames must be a 3-D array (n_frames, ny, nx), got shape {frames.shape}")
    return opened_frames(frames)


def tukey(n, alpha=0.5):
    """Symmetric Tukey (tapered cosine) window of ``n`` points, as `scipy.signal.windows.tukey`.

    Here so that registering does not import `scipy.signal` (about 2 s on a busy
    machine, for one window).
    """
    n = int(n)
    if n <= 1 or alpha <= 0:
        return np.ones(max(n, 0))
    if alpha >= 1:
        return 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / (n - 1))
    k = np.arange(n, dtype=np.float64)
    width = int(np.floor(alpha * (n - 1) / 2.0))
    w = np.ones(n)
    w[:width + 1] = 0.5 * (1 + np.cos(np.pi * (-1 + 2.0 * k[:width + 1] / alpha / (n - 1))))
    w[n - width - 1:] = 0.5 * (1 + np.cos(np.pi * (-2.0 / alpha + 1 + 2.0 * k[n - width - 1:] / alpha / (n - 1))))
    return w


def _half_weights(nx):
    """Weights of the columns of a real image's half spectrum (``rfft2``) in a sum over the full one.

    Column 0 (and the Nyquist column of an even width) stands for itself, every
    other column for itself and its Hermitian mirror.
    """
    w = np.full(nx // 2 + 1, 2.0)
    w[0] = 1.0
    if nx % 2 == 0:
        w[-1] = 1.0
    return w


def _upsampled_dft(data, nx, region_size, upsample_factor, offsets):
    """Real part of the upsampled inverse DFT of a half spectrum on a small region.

    Guizar-Sicairos et al. (2008): two matrix products, ``row_kernel @ data @
    col_kernel``, the large one first in the fast memory order.  ``data`` is the
    half (``rfft2``) spectrum of a real correlation, ``nx`` the full width: the
    sum over the full spectrum is the real part of the column-weighted sum over
    the half (`_half_weights`).
    """
    ny, oy, ox = data.shape[0], offsets[0], offsets[1]
    col = np.exp(2j * np.pi * np.fft.rfftfreq(nx, upsample_factor)[:, None]
                 * (np.arange(region_size) - ox)[None, :]) * _half_weights(nx)[:, None]
    row = np.exp(2j * np.pi * (np.arange(region_size) - oy)[:, None]
                 * np.fft.fftfreq(ny, upsample_factor)[None, :])
    return (row @ (data @ col)).real


def _spectrum(image):
    """Half spectrum (``rfft2``) of a real image."""
    return _fft.rfft2(np.asarray(image, dtype=np.float64))


def _taper(shape, cutoff):
    """Gaussian low-pass weight on the half spectrum of ``shape`` (cutoff in cycles/px, 1 sigma)."""
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.rfftfreq(shape[1])[None, :]
    return np.exp(-0.5 * (fy**2 + fx**2) / cutoff**2)


def _amplitude_power(spec, power):
    """``|spec| ** power`` (``spec`` complex or a non-negative amplitude); fast for 0.5 and 1."""
    amp = np.abs(spec)
    if power == 1:
        return amp
    if power == 0.5:
        return np.sqrt(amp, out=amp)
    return amp**power


def _correlate(ref_spec, mov_spec, *, shape, taper, upsample_factor, whiten=0.5, search=None):
    """Return (shift, peak): ``mov(y) ~ ref(y - shift)``; peak in 0..1.

    ``ref_spec`` and ``mov_spec`` are half spectra (`_spectrum`) of real images
    of ``shape``; ``taper`` is on the same half grid (`_taper`).
    ``search`` (px), when given, restricts the peak to shifts within that
    distance of zero on each axis (a refinement around a known coarse shift).

    ``whiten`` is the power of the cross-power amplitude divided out: 1 is
    classical phase correlation, 0 plain cross-correlation.  0.5 is robust
    both to noise and to the edges of masked (dust) regions.
    """
    product = mov_spec * ref_spec.conj()
    if whiten:
        amp = np.abs(product)
        np.maximum(amp, 1e-12 * amp.max() + 1e-300, out=amp)
        product /= _amplitude_power(amp, whiten) if whiten != 1 else amp
    product *= taper
    corr = _fft.irfft2(product, s=tuple(shape))
    shape = np.array(corr.shape)
    if search is None:
        peak_idx = np.unravel_index(np.argmax(corr), corr.shape)
    else:
        lag = [np.minimum(np.arange(n), n - np.arange(n)) for n in corr.shape]
        near = (lag[0][:, None] <= search) & (lag[1][None, :] <= search)
        peak_idx = np.unravel_index(np.argmax(np.where(near, corr, -np.inf)), corr.shape)
    shift = np.array(peak_idx, dtype=float)
    wrap = shift > shape // 2
    shift[wrap] -= shape[wrap]
    colw = _half_weights(int(shape[1]))
    power = 2 - 2 * whiten
    norm = np.sqrt(np.sum(_amplitude_power(ref_spec, power) * taper * colw)
                   * np.sum(_amplitude_power(mov_spec, power) * taper * colw))
    norm = norm if norm > 0 else 1.0
    peak = corr[peak_idx] * corr.size / norm
    if upsample_factor > 1:
        shift = np.round(shift * upsample_factor) / upsample_factor
        region = int(np.ceil(upsample_factor * 1.5))
        centre = np.fix(region / 2.0)
        offsets = centre - shift * upsample_factor
        up = _upsampled_dft(product, int(shape[1]), region, upsample_factor, offsets)
        sub = np.unravel_index(np.argmax(up), up.shape)
        shift = shift + (np.array(sub, dtype=float) - centre) / upsample_factor
        peak = up[sub] / norm
    return shift, float(peak)


def _fill_highpass(image, valid, sigma, *, den=None):
    """High-pass ``image`` ignoring invalid pixels (normalised convolution); invalid → 0.

    ``den``, when given, is the smoothed ``valid`` (the same for every frame
    of one mask: computed once, `_SmoothedMask`).
    """
    w = valid.astype(np.float64)
    num = ndi.gaussian_filter(image * w, sigma, mode="nearest")
    if den is None:
        den = ndi.gaussian_filter(w, sigma, mode="nearest")
    low = num / np.maximum(den, 1e-6)
    out = (image - low) * w
    return out


class _SmoothedMask:
    """The normalisation of `_fill_highpass` for one mask, computed on first use."""

    def __init__(self, valid, sigma):
        self.valid, self.sigma, self._den = valid, sigma, None

    def highpass(self, image, good):
        """`_fill_highpass` of ``image`` on ``good`` (cached when ``good`` is the mask)."""
        if good is not self.valid and not np.array_equal(good, self.valid):
            return _fill_highpass(image, good, self.sigma)
        if self._den is None:
            self._den = ndi.gaussian_filter(self.valid.astype(np.float64), self.sigma,
                                            mode="nearest")
        return _fill_highpass(image, good, self.sigma, den=self._den)


_SOFT_EDGE = 3  # px: erosion and Gaussian taper of the dust mask in registration
_CACHE_BYTES = 192 * 2**20  # preprocessed frames kept between the passes of the drift path


def _soft_weight(valid):
    """0..1 weight: ``valid`` eroded and smoothed by `_SOFT_EDGE` px (1 where all valid)."""
    if valid.all():
        return np.ones(valid.shape)
    soft = ndi.binary_erosion(valid, iterations=_SOFT_EDGE, border_value=1)
    return ndi.gaussian_filter(soft.astype(np.float64), _SOFT_EDGE)


class _Preprocessor:
    """Dust filling, high-pass, normalisation and apodisation of a frame."""

    def __init__(self, frame_shape, *, dust_mask, region, highpass, apodize):
        self.region = region
        shape = (region[0].stop - region[0].start, region[1].stop - region[1].start)
        self.shape = shape
        if dust_mask is not None:
            valid = ~np.asarray(dust_mask, dtype=bool)[region]
        else:
            valid = np.ones(shape, dtype=bool)
        self.valid = valid
        self.highpass = highpass
        wy = tukey(shape[0], apodize)
        wx = tukey(shape[1], apodize)
        self.tukey = np.outer(wy, wx)
        # soft-edged mask: a hard static edge would pull the correlation to zero shift
        self.window = self.tukey * _soft_weight(valid)
        self._smooth = _SmoothedMask(valid, highpass)
        self._cache = {}
        self._cache_limit = max(1, _CACHE_BYTES // (4 * shape[0] * shape[1]))

    def read(self, source, frame_index):
        """``self(source.read(frame_index))``, kept (float32) for the next pass over the same frame.

        The drift path reads a frame up to three times (first reference,
        refined reference, final pass); at most `_CACHE_BYTES` are kept, so
        memory does not grow with the video.
        """
        i = int(frame_index)
        hp = self._cache.get(i)
        if hp is None:
            hp = self._filtered(mono_frame(_read_region(source, i, self.region))).astype(np.float32)
            if len(self._cache) < self._cache_limit:
                self._cache[i] = hp
        return hp

    def __call__(self, frame):
        """High-passed, normalised frame (masked pixels 0), before windowing."""
        return self._filtered(mono_frame(frame[self.region]))

    def _filtered(self, img):
        """`__call__` of the region ``img`` (float64, mono) already cut out of the frame."""
        good = self.valid & np.isfinite(img)
        img = np.where(good, img, 0.0)
        # the high-pass is linear and its result is scaled to unit rms below: no level to divide by
        hp = self._smooth.highpass(img, good)
        rms = np.sqrt(np.mean(hp[good] ** 2)) if good.any() else 0.0
        if rms > 0:
            hp /= rms
        return hp


def _read_region(source, frame_index, region):
    """``source.read(frame_index)[region]``, reading only the region's rows when the source can.

    A frame source's ``read_rows`` reads the rows at their place in the file
    (a central region of 512 rows of a 960-row frame is half the bytes); any
    other object with ``read`` is read whole.
    """
    rows, cols = region
    if hasattr(source, "read_rows") and (rows.start, rows.stop) != (0, source.frame_shape[0]):
        return source.read_rows([int(frame_index)], rows.start, rows.stop)[0][:, cols]
    return source.read(int(frame_index))[region]


_STATIC_FRAMES = 15     # frames used to find static features
_STATIC_Z = 6.0         # significance of a static feature (median / its standard error)
_STATIC_MAX_FRACTION = 0.10


def _static_pattern(source, idx, prep):
    """Pixels whose high-passed value is the same in every frame (dust, defects).

    On a drifting video the scene averages out of the median of the
    high-passed frames, static features do not.  Returns a bool map of the
    registration region (dilated by the soft-edge width), empty when it
    would cover more than `_STATIC_MAX_FRACTION` (no drift: everything is
    static) or with fewer than 5 frames.
    """
    pick = np.unique(np.round(np.linspace(0, idx.size - 1, min(_STATIC_FRAMES, idx.size))))
    if pick.size < 5:
        return np.zeros(prep.shape, bool)
    stack = np.empty((pick.size,) + prep.shape, np.float32)
    for n, i in enumerate(pick.astype(int)):
        stack[n] = prep.read(source, idx[i])
    med = _nanmedian_first_axis(stack)
    mad = _MAD_SIGMA * _nanmedian_first_axis(np.abs(stack - med[None].astype(np.float32)))
    rms = float(np.sqrt(np.mean(stack**2)))
    del stack
    z = np.abs(med) / (1.2533 * mad / np.sqrt(pick.size) + 1e-6 * rms + 1e-30)
    static = (z > _STATIC_Z) & (np.abs(med) > 0.5 * rms) & prep.valid
    if static.mean() > _STATIC_MAX_FRACTION:
        log.info("static features cover %.0f %% of the frame (little or no drift): not masked",
                 100 * static.mean())
        return np.zeros(prep.shape, bool)
    if static.any():
        static = ndi.binary_dilation(static, iterations=_SOFT_EDGE)
        log.info("masked %d px of static features for the registration", int(static.sum()))
    return static


_MAD_SIGMA = 1.4826


def measure_shift(reference, image, *, upsample_factor=20, lowpass=0.25, whiten=0.5):
    """Shift ``(dy, dx)`` of ``image`` relative to ``reference`` by phase correlation.

    ``image(y, x) ≈ reference(y - dy, x - dx)``.  No filling or high-pass is
    done here; see `register_frames` for the full, dust-robust procedure.

    Parameters
    ----------
    reference, image : `~numpy.ndarray`
        2-D arrays of the same shape (apodise them first for best results).
    upsample_factor : int, optional
        Sub-pixel refinement: the shift is found to ``1/upsample_factor`` px.
        Default is 20.
    lowpass : float, optional
        1-sigma width, in cycles/px, of the Gaussian taper applied to the
        whitened cross-power spectrum (suppresses noise-dominated high
        frequencies).  Default is 0.25.
    whiten : float, optional
        Power of the cross-power amplitude divided out: 1 is classical phase
        correlation, 0 plain cross-correlation.  Default is 0.5.

    Returns
    -------
    shift : `~numpy.ndarray`
        ``(dy, dx)`` in pixels.
    peak : float
        Height of the normalised correlation peak (1 = identical images).

    Examples
    --------
    >>> import numpy as np
    >>> from scipy import ndimage
    >>> rng = np.random.default_rng(1)
    >>> ref = ndimage.gaussian_filter(rng.normal(size=(64, 64)), 2)
    >>> spec = ndimage.fourier_shift(np.fft.fft2(ref), (2.3, -1.6))  # exact periodic shift
    >>> img = np.fft.ifft2(spec).real
    >>> shift, peak = measure_shift(ref, img)
    >>> np.round(shift, 1)
    array([ 2.3, -1.6])
    """
    reference = np.asarray(reference, dtype=np.float64)
    image = np.asarray(image, dtype=np.float64)
    if reference.shape != image.shape or reference.ndim != 2:
        raise InputError(
            f"reference and image must be 2-D arrays of the same shape, "
            f"got {reference.shape} and {image.shape}"
        )
    taper = _taper(reference.shape, lowpass)
    return _correlate(
        _spectrum(reference), _spectrum(image), shape=reference.shape, taper=taper,
        upsample_factor=upsample_factor, whiten=float(whiten),
    )


# ---------------------------------------------------------------------------
# Drift path
# ---------------------------------------------------------------------------
def median_pair_distance(shifts):
    """Median distance between the positions of two frames, px.

    How far the scene typically moves under a sensor-fixed shadow between
    two frames: the median over all pairs of frames of ``|s_i - s_j|``.

    Parameters
    ----------
    shifts : array-like
        ``(n, 2)`` shifts ``(dy, dx)`` in pixels.

    Returns
    -------
    float
        0.0 for fewer than two frames.

    Examples
    --------
    >>> median_pair_distance([[0, 0], [0, 3], [4, 0]])
    4.0
    """
    s = np.asarray(shifts, dtype=np.float64).reshape(-1, 2)
    if len(s) < 2:
        return 0.0
    iu = np.triu_indices(len(s), 1)
    return float(np.median(np.hypot(s[iu[0], 0] - s[iu[1], 0], s[iu[0], 1] - s[iu[1], 1])))


def shift_extent(shifts, *, percentiles=(2.0, 98.0)):
    """Extent of a set of 2-D shifts along its two principal axes.

    The extent along an axis is the distance between the low and high
    percentiles of the shifts projected on it (robust to a few outliers).

    Parameters
    ----------
    shifts : array-like
        ``(n, 2)`` shifts ``(dy, dx)`` in pixels.
    percentiles : tuple of float, optional
        Default is ``(2, 98)``.

    Returns
    -------
    major, minor : float
        Extents in pixels along the major and minor principal axes.
    angle : float
        Angle of the major axis in degrees, counted from +x towards +y.

    Examples
    --------
    >>> import numpy as np
    >>> t = np.linspace(0, 1, 101)
    >>> major, minor, angle = shift_extent(np.c_[0.5 * t, 40 * t], percentiles=(0, 100))
    >>> round(major, 1), round(minor, 1)
    (40.0, 0.0)
    """
    shifts = np.asarray(shifts, dtype=np.float64).reshape(-1, 2)
    if shifts.shape[0] < 2:
        return 0.0, 0.0, 0.0
    centred = shifts - np.median(shifts, axis=0)
    cov = np.cov(centred.T)
    evals, evecs = np.linalg.eigh(cov)
    proj = centred @ evecs  # columns: minor, major
    lo, hi = np.percentile(proj, percentiles, axis=0)
    extents = hi - lo
    major_vec = evecs[:, 1]  # (y, x) components
    angle = float(np.degrees(np.arctan2(major_vec[0], major_vec[1])))
    angle = (angle + 90.0) % 180.0 - 90.0
    return float(extents[1]), float(extents[0]), angle


@dataclass
class DriftPath:
    """The measured shift of the scene on the sensor, frame by frame.

    Attributes
    ----------
    frame_index : `~numpy.ndarray`
        Indices of the registered frames in the video.
    shifts : `~numpy.ndarray`
        ``(n, 2)`` float64 ``(dy, dx)`` of the scene on the sensor, in pixels,
        relative to the median position (``frame(y, x) = scene(y - dy, x - dx)``).
    peak : `~numpy.ndarray`
        Height of the phase-correlation peak per frame (quality; 1 = perfect).
    n_frames : int
        Number of frames of the video.
    reference_frames : list of int
        Frames whose registered median is the final reference.
    params : dict
        Registration parameters.
    """

    frame_index: np.ndarray
    shifts: np.ndarray
    peak: np.ndarray
    n_frames: int
    reference_frames: list = field(default_factory=list)
    params: dict = field(default_factory=dict)

    @property
    def extent(self):
        """``(major, minor, angle_deg)`` principal-axis extents of the shifts (2–98 %)."""
        return shift_extent(self.shifts)

    @property
    def rms(self):
        """RMS distance of the shifts from their median position, in pixels."""
        centred = self.shifts - np.median(self.shifts, axis=0)
        return float(np.sqrt(np.mean(np.sum(centred**2, axis=1))))

    def constrains(self, diameter, *, factor=1.0):
        """Whether the drift spans ``factor * diameter`` along both principal axes.

        Parameters
        ----------
        diameter : float or array-like
            Shadow diameter(s) in pixels.
        factor : float, optional
            Required extent in units of the diameter. Default is 1.

        Returns
        -------
        bool or `~numpy.ndarray` of bool
        """
        minor = self.extent[1]
        return np.asarray(diameter, dtype=float) * factor <= minor

    def summary(self):
        """A small JSON-serialisable dict describing the drift."""
        major, minor, angle = self.extent
        return {
            "n_registered": int(self.frame_index.size),
            "n_frames": int(self.n_frames),
            "extent_major_px": round(major, 3),
            "extent_minor_px": round(minor, 3),
            "major_axis_angle_deg": round(angle, 2),
            "rms_px": round(self.rms, 3),
            "dy_range_px": [round(float(self.shifts[:, 0].min()), 3),
                            round(float(self.shifts[:, 0].max()), 3)],
            "dx_range_px": [round(float(self.shifts[:, 1].min()), 3),
                            round(float(self.shifts[:, 1].max()), 3)],
            "median_peak": round(float(np.median(self.peak)), 4),
        }

    def to_table(self):
        """The path as an `~astropy.table.Table` (frame_index, dy, dx, peak)."""
        table = Table(
            [self.frame_index.astype(np.int64), self.shifts[:, 0], self.shifts[:, 1],
             self.peak.astype(np.float64)],
            names=("frame_index", "dy", "dx", "peak"),
        )
        table["dy"].unit = "pix"
        table["dx"].unit = "pix"
        table.meta["drift"] = self.summary()
        return table

    def provenance(self):
        """Dict for ``PROVJSON``: the summary plus every frame's shift (1e-3 px)."""
        return {
            "summary": self.summary(),
            "params": dict(self.params),
            "reference_frames": [int(i) for i in self.reference_frames],
            "frame_index": [int(i) for i in self.frame_index],
            "dy": [round(float(v), 3) for v in self.shifts[:, 0]],
            "dx": [round(float(v), 3) for v in self.shifts[:, 1]],
            "peak": [round(float(v), 4) for v in self.peak],
        }

    def interpolate(self, frame_index):
        """Shifts at arbitrary frame indices (linear interpolation along the video)."""
        frame_index = np.asarray(frame_index, dtype=float)
        dy = np.interp(frame_index, self.frame_index, self.shifts[:, 0])
        dx = np.interp(frame_index, self.frame_index, self.shifts[:, 1])
        return np.stack([dy, dx], axis=-1)


def drift_constraint(drift, diameters, *, factor=1.0):
    """Per shadow: does the drift span the shadow diameter in two directions?

    Parameters
    ----------
    drift : `DriftPath` or array-like
        A drift path, or ``(n, 2)`` shifts.
    diameters : array-like
        Shadow diameters in pixels.
    factor : float, optional
        Required extent along the minor principal axis, in diameters.
        Default is 1.

    Returns
    -------
    `~numpy.ndarray` of bool

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> shifts = rng.uniform(-20, 20, size=(200, 2))   # a 40 x 40 px dither
    >>> drift_constraint(shifts, [10, 30, 60]).tolist()
    [True, True, False]
    """
    shifts = drift.shifts if isinstance(drift, DriftPath) else np.asarray(drift, dtype=float)
    minor = shift_extent(shifts)[1]
    return np.asarray(diameters, dtype=float) * factor <= minor


# ---------------------------------------------------------------------------
# Registration
# ---------------------------------------------------------------------------
def _central_region(frame_shape, max_size):
    slices = []
    for n in frame_shape[:2]:
        size = n if max_size is None else min(n, int(max_size))
        start = (n - size) // 2
        slices.append(slice(start, start + size))
    return tuple(slices)


def _progress(iterable, enabled, desc, total=None):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, unit="frame", leave=False)


# ---------------------------------------------------------------------------
# Large offsets: coarse step on a binned grid, refinement on the overlap
# ---------------------------------------------------------------------------
_COARSE_SIZE = 512      # px per side of the binned grid of the coarse step
_PROBE_FRAMES = 9       # frames (spread over the selection) probed for large offsets
_LARGE_FRACTION = 0.15  # a probe shift above this fraction of the frame size: off-pointed set
_FEW_FRAMES = 25        # a set this small (no video) is off-pointed above _FEW_FRACTION
_FEW_FRACTION = 0.04


def _binned_frames(source, indices, b):
    """The frames ``indices`` of ``source``, one at a time: mono, ``b`` × ``b`` binned, float32.

    The read-and-bin loop of the full flat (`aiflat_astro.flat.fullflat`) and of
    the measured flat's static survey (`aiflat_astro.flat.estimators.measured`).
    """
    for i in indices:
        yield block_mean(mono_frame(source.read(int(i))), b).astype(np.float32)


class _Coarse:
    """Binned, dust-filled, high-passed and windowed frames for the coarse step."""

    def __init__(self, frame_shape, dust_mask):
        # at least 2 x 2: binning and the taper below suppress the static pixel response
        self.bin = max(2, int(np.ceil(max(frame_shape) / _COARSE_SIZE)))
        valid = np.ones(frame_shape, bool) if dust_mask is None else ~dust_mask
        # a binned pixel is valid when most of it is outside the dust
        self.valid = block_mean(valid.astype(np.float64), self.bin) > 0.75
        shape = self.valid.shape
        self.window = np.outer(tukey(shape[0], 0.5), tukey(shape[1], 0.5))
        self.taper = _taper(shape, 0.12)
        self._smooth = _SmoothedMask(self.valid, 8.0)

    def spectrum(self, frame):
        img = block_mean(mono_frame(frame), self.bin)
        good = self.valid & np.isfinite(img)
        img = np.where(good, img, 0.0)
        hp = self._smooth.highpass(img, good)     # linear, then scaled to unit rms
        rms = np.sqrt(np.mean(hp[good] ** 2)) if good.any() else 0.0
        if rms > 0:
            hp /= rms
        return _spectrum(hp * self.window * _soft_weight(good))

    def shift(self, ref_spec, frame):
        """Integer-bin shift of ``frame`` against the reference spectrum, in full pixels."""
        shift, peak = _correlate(ref_spec, self.spectrum(frame), shape=self.valid.shape,
                                 taper=self.taper,
                                 upsample_factor=1, whiten=0.75)
        return shift * self.bin, peak


def _overlap(frame_shape, d, max_size):
    """Slices (ref, moving) of the overlap of two frames offset by integer ``d``.

    ``moving(y) = ref(y - d)``: the scene at ref row ``y`` is at moving row
    ``y + d``.  The overlap is cut to its central ``max_size`` per side.
    """
    ref_sl, mov_sl = [], []
    for n, di in zip(frame_shape, d, strict=True):
        lo, hi = max(0, -di), min(n, n - di)
        size = hi - lo if max_size is None else min(hi - lo, int(max_size))
        start = lo + ((hi - lo) - size) // 2
        ref_sl.append(slice(start, start + size))
        mov_sl.append(slice(start + di, start + di + size))
    return tuple(ref_sl), tuple(mov_sl)


def _register_large(source, idx, coarse, frame_shape, dust_mask, *, max_size, highpass, lowpass,
                    whiten, apodize, upsample_factor, progress_bar):
    """Shifts of an off-pointed set: coarse binned correlation, then sub-pixel on the overlaps.

    The reference is the frame nearest the median coarse position (the
    largest overlaps).  Returns (shifts, peaks, reference frame index).
    """
    n = idx.size
    shifts = np.empty((n, 2))
    peaks = np.empty(n)
    centre = np.median(coarse, axis=0)
    r = int(np.argmin(np.sum((coarse - centre) ** 2, axis=1)))
    ref_frame = mono_frame(source.read(int(idx[r])))
    search = 2 * max(2, int(np.ceil(max(frame_shape) / _COARSE_SIZE))) + 2
    for k in _progress(range(n), progress_bar, "registering", total=n):
        d = np.round(coarse[k] - coarse[r]).astype(int)
        if np.any(np.abs(d) >= np.array(frame_shape) - 32):
            raise InputError(f"frame {int(idx[k])} does not overlap the reference frame "
                             f"{int(idx[r])} (offset {d[0]} x {d[1]} px)")
        ref_sl, mov_sl = _overlap(frame_shape, d, max_size)
        frame = ref_frame if k == r else mono_frame(source.read(int(idx[k])))
        size = (ref_sl[0].stop - ref_sl[0].start, ref_sl[1].stop - ref_sl[1].start)
        full = (slice(0, size[0]), slice(0, size[1]))
        masks = []
        for sl in (ref_sl, mov_sl):
            m = None if dust_mask is None else dust_mask[sl]
            masks.append(m)
        # one window for both crops: the union of both dust masks, in overlap coordinates
        union = None
        if dust_mask is not None:
            union = masks[0] | masks[1]
        prep = _Preprocessor(size, dust_mask=union, region=full, highpass=highpass,
                             apodize=apodize)
        ref_img = prep(ref_frame[ref_sl]) * prep.window
        mov_img = prep(frame[mov_sl]) * prep.window
        resid, peaks[k] = _correlate(_spectrum(ref_img), _spectrum(mov_img), shape=size,
                                     taper=_taper(size, lowpass),
                                     upsample_factor=upsample_factor, whiten=whiten,
                                     search=search)
        shifts[k] = coarse[r] + d + resid
    return shifts, peaks, int(idx[r])


@dataclass(frozen=True)
class RegisterOptions:
    """The options of `register_frames` besides its inputs (the same names as its keywords).

    Parameters
    ----------
    step, max_frames, n_reference, n_initial, upsample_factor
        Which frames, the references, the shift resolution (see `register_frames`).
    highpass, lowpass, whiten, apodize, max_size, static_mask, progress_bar
        The filters, the region and the static-feature mask (see `register_frames`).

    Raises
    ------
    InputError
        ``upsample_factor`` below 1.

    Examples
    --------
    >>> RegisterOptions(max_size=512).upsample_factor
    20
    """

    step: int = 1
    max_frames: int = None
    n_reference: int = 25
    n_initial: int = 5
    upsample_factor: int = 20
    highpass: float = 4.0
    lowpass: float = 0.25
    whiten: float = 0.5
    apodize: float = 0.25
    max_size: object = 1024
    static_mask: bool = True
    progress_bar: bool = False

    def __post_init__(self):
        if int(self.upsample_factor) < 1:
            raise InputError(f"upsample_factor must be >= 1, got {self.upsample_factor}")
        for name in ("highpass", "lowpass", "whiten", "apodize"):
            object.__setattr__(self, name, float(getattr(self, name)))
        object.__setattr__(self, "upsample_factor", int(self.upsample_factor))


def register_frames(frames, *, dust_mask=None, options=None, **keywords):
    """Measure the sub-pixel shift of the scene in every frame of a video.

    Parameters
    ----------
    frames : str, path, list, `~numpy.ndarray` or frame source
        Anything `aiflat_astro.io.open_frames` accepts (SER, FITS cube, FITS
        files, 3-D array) or an open frame source.  Frames are read one at a
        time.
    dust_mask : `~numpy.ndarray` of bool, optional
        Pixels to ignore (dust shadows and their halo, defects); strongly
        recommended: static shadows otherwise pull the correlation towards
        zero shift.
    step, max_frames : int, optional
        Register every ``step``-th frame, at most ``max_frames`` frames spread
        over the whole video.  Defaults: every frame.
    n_reference : int, optional
        Number of frames (spread over the selection) whose registered median is
        the final reference. Default is 25.
    n_initial : int, optional
        Number of first frames whose plain median is the first reference.
        Default is 5.
    upsample_factor : int, optional
        Shifts are refined to ``1/upsample_factor`` px. Default is 20.
    highpass : float, optional
        Gaussian sigma (px) of the high-pass filter removing large static
        structure (vignetting, shading). Default is 4.
    lowpass : float, optional
        Taper of the cross-power spectrum, cycles/px. Default is 0.25.
    whiten : float, optional
        Power of the cross-power amplitude divided out (1: classical phase
        correlation, 0: plain cross-correlation). Default is 0.5, robust to
        noise and to the edges of the masked dust.
    apodize : float, optional
        Tukey-window taper fraction. Default is 0.25.
    max_size : int or None, optional
        Register on a central region of at most this size per side (speed on
        large frames). Default is 1024.
    static_mask : bool, optional
        Also mask features that stay put on the sensor while the scene moves
        (dust not in ``dust_mask``, defects), found in a spread subset of
        frames: pixels whose high-passed value is the same in every frame.
        Skipped when they would cover more than 10 % of the frame (a video
        without drift).  Default is `True`.
    progress_bar : bool, optional
        Show a tqdm progress bar. Default is `False`.
    options : `RegisterOptions`, optional
        All of the options above (except ``dust_mask``) as one object; a
        keyword given as well wins.

    Returns
    -------
    `DriftPath`

    Raises
    ------
    InputError
        If the frames cannot be read or the options are invalid (an unknown
        option included).

    Notes
    -----
    Any shift size.  A coarse step first probes up to 9 frames spread over
    the selection on a binned grid (at most 512 px a side; dust-filled,
    high-passed, Tukey window, low-pass tapered, partly whitened phase
    correlation).  When every
    probe shift is below 15 % of the frame size (4 % for fewer than 25
    frames: a set that is no video), the drifting or seeing-limited case,
    the procedure above runs unchanged.  Otherwise (an off-pointed,
    KLL-class set, offsets up to most of the frame) every frame gets its
    coarse shift, to one binned pixel, against the frame nearest the median
    position, and is then refined to ``1/upsample_factor`` px on the overlap
    of the two frames (dust masked, peak searched within two binned pixels
    of the coarse shift).  ``params['mode']`` says which path ran.

    Examples
    --------
    >>> import numpy as np
    >>> from scipy import ndimage
    >>> rng = np.random.default_rng(2)
    >>> scene = ndimage.gaussian_filter(rng.normal(size=(96, 96)), 1.5) + 10
    >>> true = [(0.0, 0.0), (1.5, -2.25), (-3.0, 4.5), (2.0, 2.0)]
    >>> def shifted(s):  # exact periodic shift
    ...     return np.fft.ifft2(ndimage.fourier_shift(np.fft.fft2(scene), s)).real
    >>> video = np.array([shifted(s) for s in true])
    >>> drift = register_frames(video, n_reference=4, n_initial=1)
    >>> err = (drift.shifts - drift.shifts[0]) - (np.array(true) - true[0])
    >>> bool(np.abs(err).max() < 0.1)
    True
    """
    opts = merged_options(RegisterOptions, options, keywords, "register_frames")
    step, max_frames, max_size = opts.step, opts.max_frames, opts.max_size
    upsample_factor, progress_bar = opts.upsample_factor, opts.progress_bar
    with serial_blas(), _open_source(frames) as source:  # small products: no thread pool (utils._threads)
        n_frames = int(source.n_frames)
        idx = select_frames(n_frames, step=step, max_frames=max_frames)
        frame_shape = tuple(source.frame_shape)[:2]
        dust_mask = _checked_mask(dust_mask, frame_shape)
        coarse_step = _Coarse(frame_shape, dust_mask)
        probe = idx[np.unique(np.round(np.linspace(0, idx.size - 1,
                                                   min(_PROBE_FRAMES, idx.size))).astype(int))]
        if _large_offsets(source, idx, probe, coarse_step, frame_shape):
            return _large_path(source, idx, coarse_step, probe, frame_shape, dust_mask,
                               n_frames=n_frames, step=step, max_frames=max_frames,
                               max_size=max_size, highpass=opts.highpass,
                               lowpass=opts.lowpass, whiten=opts.whiten,
                               apodize=opts.apodize, upsample_factor=upsample_factor,
                               progress_bar=progress_bar)
        region = _central_region(frame_shape, max_size)
        prep, n_static = _drift_preprocessor(source, idx, frame_shape, dust_mask, region, opts,
                                             static_mask=opts.static_mask)
        taper = _taper(prep.shape, opts.lowpass)

        def corr(ref_spec, image):
            return _correlate(ref_spec, _spectrum(image), shape=prep.shape, taper=taper,
                              upsample_factor=upsample_factor, whiten=opts.whiten)

        ref_spec, ref_frames = _drift_reference(source, idx, prep, corr, n_initial=opts.n_initial,
                                                n_reference=opts.n_reference)
        # 3. register every selected frame against the refined reference (one streaming pass).
        shifts = np.empty((idx.size, 2))
        peaks = np.empty(idx.size)
        for n, i in enumerate(_progress(idx, progress_bar, "registering", total=idx.size)):
            shifts[n], peaks[n] = corr(ref_spec, prep.read(source, i) * prep.window)

    shifts -= np.median(shifts, axis=0)
    params = {
        "method": "phase correlation, upsampled DFT",
        "mode": "drift",
        "upsample_factor": upsample_factor,
        "highpass_sigma_px": opts.highpass,
        "lowpass_cycles_per_px": opts.lowpass,
        "whiten": opts.whiten,
        "apodize": opts.apodize,
        "region": [[region[0].start, region[0].stop], [region[1].start, region[1].stop]],
        "dust_masked": dust_mask is not None,
        "static_masked_px": n_static,
        "step": int(step),
        "max_frames": None if max_frames is None else int(max_frames),
    }
    drift = DriftPath(frame_index=idx, shifts=shifts, peak=peaks, n_frames=n_frames,
                      reference_frames=[int(i) for i in ref_frames], params=params)
    log.info("registered %d frames: drift extent %.1f x %.1f px, rms %.2f px",
             idx.size, drift.extent[0], drift.extent[1], drift.rms)
    return drift


def _checked_mask(dust_mask, frame_shape):
    """The dust mask as bool of the frames' shape (or None)."""
    if dust_mask is None:
        return None
    dust_mask = np.asarray(dust_mask, dtype=bool)
    if dust_mask.shape != frame_shape:
        raise InputError(
            f"dust_mask shape {dust_mask.shape} does not match the frames {frame_shape}"
        )
    return dust_mask


def _large_offsets(source, idx, probe, coarse_step, frame_shape):
    """Whether the probe frames show an off-pointed set (coarse shifts beyond the drift case)."""
    probe_ref = coarse_step.spectrum(source.read(int(probe[0])))
    probe_shifts = np.array([coarse_step.shift(probe_ref, source.read(int(i)))[0]
                             for i in probe[1:]]).reshape(-1, 2)
    biggest = float(np.abs(probe_shifts).max()) if probe_shifts.size else 0.0
    return (biggest > _LARGE_FRACTION * min(frame_shape)
            or (idx.size < _FEW_FRAMES and biggest > _FEW_FRACTION * min(frame_shape)))


def _drift_preprocessor(source, idx, frame_shape, dust_mask, region, opts, *, static_mask):
    """The frame preprocessor of the drift path, static features masked; and their pixel count."""
    prep = _Preprocessor(frame_shape, dust_mask=dust_mask, region=region,
                         highpass=opts.highpass, apodize=opts.apodize)
    if not static_mask:
        return prep, 0
    static = _static_pattern(source, idx, prep)
    n_static = int(static.sum())
    if n_static:
        full = np.zeros(frame_shape, bool)
        full[region] = static
        if dust_mask is not None:
            full |= dust_mask
        prep = _Preprocessor(frame_shape, dust_mask=full, region=region,
                             highpass=opts.highpass, apodize=opts.apodize)
    return prep, n_static


def _drift_reference(source, idx, prep, corr, *, n_initial, n_reference):
    """Spectrum of the reference of the drift path, and the frames it is the median of.

    1. the plain median of the first frames (dust masked);
    2. the median of a spread subset registered on it and shifted back onto
       the scene, each frame's masked dust left out.
    """
    n_init = max(1, min(int(n_initial), idx.size))
    first = _nanmedian_first_axis(np.stack([prep.read(source, i) for i in idx[:n_init]]))
    first_spec = _spectrum(first * prep.window)
    n_ref = max(1, min(int(n_reference), idx.size))
    ref_frames = idx[np.unique(np.round(np.linspace(0, idx.size - 1, n_ref)).astype(int))]
    stack = np.empty((ref_frames.size,) + prep.shape, np.float32)
    valid_w = prep.valid.astype(np.float32)
    for n, i in enumerate(ref_frames):
        img = prep.read(source, i)
        shift, _ = corr(first_spec, img * prep.window)
        stack[n] = bilinear_shift(img, -shift)
        inside = bilinear_shift(valid_w, -shift) > 0.99
        stack[n][~inside] = np.nan
    reference = _nanmedian_first_axis(stack)
    del stack
    ref_valid = np.isfinite(reference)
    reference = np.where(ref_valid, reference, 0.0) * prep.tukey * _soft_weight(ref_valid)
    return _spectrum(reference), ref_frames


def _nanmedian_first_axis(stack):
    """`numpy.nanmedian` along the first axis (NaN where every value is NaN), by one sort.

    The same values as ``nanmedian`` (NaNs sort last; the middle of the finite
    ones is taken), several times faster on a short first axis.
    """
    count = np.sum(np.isfinite(stack), axis=0)
    ordered = np.sort(stack, axis=0)
    lo = np.maximum((count - 1) // 2, 0)[None]
    hi = np.maximum(count // 2, 0)[None]
    mid = 0.5 * (np.take_along_axis(ordered, lo, 0)[0].astype(np.float64)
                 + np.take_along_axis(ordered, hi, 0)[0])
    return np.where(count > 0, mid, np.nan)


def _large_path(source, idx, coarse_step, probe, frame_shape, dust_mask, *, n_frames, step,
                max_frames, max_size, highpass, lowpass, whiten, apodize, upsample_factor,
                progress_bar):
    """`register_frames` for an off-pointed set (offsets of up to most of the frame)."""
    # coarse shifts of every frame against the first, then against the central frame
    first = coarse_step.spectrum(source.read(int(idx[0])))
    coarse = np.array([coarse_step.shift(first, source.read(int(i)))[0] for i in idx])
    centre = int(np.argmin(np.sum((coarse - np.median(coarse, axis=0)) ** 2, axis=1)))
    if centre != 0:
        ref = coarse_step.spectrum(source.read(int(idx[centre])))
        coarse = np.array([coarse_step.shift(ref, source.read(int(i)))[0] for i in idx])
    shifts, peaks, ref_index = _register_large(
        source, idx, coarse, frame_shape, dust_mask, max_size=max_size, highpass=highpass,
        lowpass=lowpass, whiten=whiten, apodize=apodize, upsample_factor=upsample_factor,
        progress_bar=progress_bar)
    shifts -= np.median(shifts, axis=0)
    params = {
        "method": "coarse binned phase correlation + upsampled-DFT refinement on the overlaps",
        "mode": "large offsets",
        "coarse_bin": int(coarse_step.bin),
        "coarse_dy": [round(float(v), 1) for v in coarse[:, 0] - np.median(coarse[:, 0])],
        "coarse_dx": [round(float(v), 1) for v in coarse[:, 1] - np.median(coarse[:, 1])],
        "upsample_factor": upsample_factor,
        "highpass_sigma_px": highpass,
        "lowpass_cycles_per_px": lowpass,
        "whiten": whiten,
        "apodize": apodize,
        "max_size": None if max_size is None else int(max_size),
        "dust_masked": dust_mask is not None,
        "static_masked_px": 0,
        "step": int(step),
        "max_frames": None if max_frames is None else int(max_frames),
    }
    drift = DriftPath(frame_index=idx, shifts=shifts, peak=peaks, n_frames=n_frames,
                      reference_frames=[ref_index], params=params)
    log.info("registered %d frames with large offsets (coarse bin %d): extent %.1f x %.1f px",
             idx.size, coarse_step.bin, drift.extent[0], drift.extent[1])
    return drift


# ---------------------------------------------------------------------------
# Plot
# ---------------------------------------------------------------------------
def plot_drift(drift, path=None, *, diameters=None, title=None, overwrite=False):
    """Plot a drift path: ``dy``/``dx`` against frame, and the 2-D path.

    The 2-D panel shows the principal-axis extents and, when ``diameters`` is
    given, a circle of the largest shadow diameter for comparison (the drift
    constrains a shadow when it spans its diameter in two directions).

    Parameters
    ----------
    drift : `DriftPath`
    path : str or path-like, optional
        Write a PNG there (atomically).  Without it the figure is returned.
    diameters : array-like, optional
        Shadow diameters in pixels.
    title : str, optional
    overwrite : bool, optional
        Default is `False`.

    Returns
    -------
    `~matplotlib.figure.Figure`
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Circle

    fig = Figure(figsize=(10, 4.2), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2, width_ratios=(1.6, 1))
    ax1.plot(drift.frame_index, drift.shifts[:, 0], lw=1, label="dy")
    ax1.plot(drift.frame_index, drift.shifts[:, 1], lw=1, label="dx")
    ax1.set_xlabel("frame index")
    ax1.set_ylabel("scene shift on the sensor [px]")
    ax1.legend(loc="best")
    ax1.grid(alpha=0.3)
    sc = ax2.scatter(drift.shifts[:, 1], drift.shifts[:, 0], c=drift.frame_index, s=6,
                     cmap="viridis")
    ax2.plot(drift.shifts[:, 1], drift.shifts[:, 0], lw=0.4, color="0.6", zorder=0)
    if drift.frame_index.size <= 30:  # an off-pointed set: label each offset
        for i, (dy, dx) in zip(drift.frame_index, drift.shifts, strict=True):
            ax2.annotate(f"{int(i)}: {dy:+.1f}, {dx:+.1f}", (dx, dy), fontsize=6,
                         xytext=(3, 3), textcoords="offset points")
    major, minor, angle = drift.extent
    centre = np.median(drift.shifts, axis=0)
    th = np.radians(angle)
    for length, (uy, ux) in ((major, (np.sin(th), np.cos(th))),
                             (minor, (np.cos(th), -np.sin(th)))):
        ax2.plot([centre[1] - ux * length / 2, centre[1] + ux * length / 2],
                 [centre[0] - uy * length / 2, centre[0] + uy * length / 2], color="k", lw=1.2)
    if diameters is not None and np.size(diameters):
        dmax = float(np.max(diameters))
        ax2.add_patch(Circle((centre[1], centre[0]), dmax / 2, fill=False, ls="--",
                             color="C3", label=f"largest shadow D = {dmax:.0f} px"))
        ax2.legend(loc="best", fontsize="small")
    ax2.set_aspect("equal", adjustable="datalim")
    ax2.invert_yaxis()  # image row order: y grows downwards
    ax2.set_xlabel("dx [px]")
    ax2.set_ylabel("dy [px]")
    ax2.grid(alpha=0.3)
    fig.colorbar(sc, ax=ax2, label="frame index")
    fig.suptitle(title or f"drift: extent {major:.1f} x {minor:.1f} px, rms {drift.rms:.2f} px")
    if path is not None:
        from .utils._atomic import atomic_output

        with atomic_output(path, overwrite=overwrite) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
    return fig
