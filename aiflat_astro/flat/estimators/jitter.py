"""The scene under a dust shadow, measured from the seeing jitter of the frames.

Seeing moves the scene on the sensor by a pixel or so from frame to frame
while the dust stays put.  For frame ``k`` at sensor pixel ``x``::

    F_k(x) = c_k g(x) T(x) S(x - d_k)

(``c_k`` the frame's level, ``g`` the static gain, ``T`` the dust, ``S`` the
scene, ``d_k`` the frame's shift).  Regressing each pixel's values on the
frame shifts gives ``∂F/∂d = -c g T ∇S``; divided by the pixel's level,
``g`` and ``T`` cancel *exactly*, also under the shadow, and what is left is
the gradient of the log of the scene, ``∇ log S``, measured where the
dust hides the scene itself.  Integrating that gradient field inside each
shadow (a Poisson equation, its boundary values the log of the median on
the unmasked pixels around the shadow) gives the dust-free median there,
granulation included, which no interpolation from the surroundings can know.

The steps, per shadow (`jitter_clean`):

1. a box around the shadow; on its unmasked pixels (beyond a gap of
   ``gap`` px from any masked pixel, at most ``max_reg_pixels`` of them, the
   nearest first), the frame's shift ``d_k`` and level ``c_k`` are fitted to
   the median by Gauss–Newton (bicubic spline of the median): a *local*
   registration, so a seeing that is not a rigid shift over the field is
   followed shadow by shadow;
2. per pixel of the box, a least-squares fit of the frame values on
   ``1, d_y, d_x`` and, with ``quadratic=True``, ``d_y², d_y d_x, d_x²``
   (granules of a few pixels are not linear over shifts of one or two):
   ``∇ log S = -(slope) / (intercept)``;
3. a check on the unmasked pixels of the box: the measured gradient must
   match the gradient of the median's own log there (``R² ≥ min_r2``); on a
   scene without texture (deep sky, an overexposed disc) there is nothing to
   measure and the shadow is left to the caller's interpolation;
4. a least-squares integration of the gradient over the shadow's pixels
   (edge differences from a four-point midpoint interpolation of the pixel
   gradients), the unmasked pixels of the box fixed at ``log(median)``.

The frames are streamed: each is read once, the boxes are cut from it, and
per box only six accumulated maps are kept — memory does not grow with the
number of frames.

Examples
--------
>>> import os, tempfile
>>> import numpy as np
>>> from aiflat_astro import make_dusty_video, median_combine
>>> from aiflat_astro.flat.estimators.jitter import jitter_clean
>>> path = os.path.join(tempfile.mkdtemp(), "sun.ser")
>>> truth = make_dusty_video(path, shape=(96, 128), n_frames=30, n_dust=2, seed=3)
>>> median = median_combine(path).data
>>> clean, report = jitter_clean(median, truth.labels > 0, path)
>>> [row["used"] for row in report]
[True, True]
>>> true_clean = median / truth.transmission
>>> inside = truth.labels > 0
>>> bool(np.std(clean[inside] / true_clean[inside]) < 0.01)
True
"""

import dataclasses
import logging

import numpy as np
from scipy import ndimage, sparse
from scipy.sparse import linalg as splinalg

from ...io.frames import spread_indices
from ...utils.exceptions import InputError, renamed_keyword

__all__ = ["JITTER_MIN_R2", "jitter_clean", "JitterOptions"]

log = logging.getLogger(__name__)

#: Lowest agreement (R²) between the measured gradient and the median's own on
#: the unmasked pixels of a box for a shadow to be filled from the measurement.
JITTER_MIN_R2 = 0.5

_FD4 = np.array([-1.0, 8.0, 0.0, -8.0, 1.0]) / 12.0   # fourth-order central difference


def _mono(frame):
    frame = np.asarray(frame)
    if frame.ndim == 3:
        return frame.mean(axis=-1, dtype=np.float64)
    return frame.astype(np.float64)


def _phase_gains(image, pattern):
    """Per-pixel gain map of the four phases of a raw colour mosaic (ones without a pattern)."""
    from ...utils._colour import cfa_normalise

    gains = np.ones((2, 2))
    if pattern:
        image = np.asarray(image, dtype=np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = image / cfa_normalise(image, pattern)
        for dy in (0, 1):
            for dx in (0, 1):
                v = ratio[dy::2, dx::2]
                v = v[np.isfinite(v) & (v > 0)]
                gains[dy, dx] = float(np.median(v)) if v.size else 1.0
    h, w = np.shape(image)[:2]
    return np.tile(gains, (h // 2 + 1, w // 2 + 1))[:h, :w]


def _gradient4(f):
    """Fourth-order central differences (``∂/∂y``, ``∂/∂x``), edges by replication."""
    gy = ndimage.correlate1d(f, _FD4[::-1], axis=0, mode="nearest")
    gx = ndimage.correlate1d(f, _FD4[::-1], axis=1, mode="nearest")
    return gy, gx


class _Box:
    """One shadow's window: registration pixels, reference spline and the accumulated sums."""

    def __init__(self, label, region, masked, median, invalid, window, *, gap, max_reg_pixels,
                 n_terms):
        (self.y0, self.y1), (self.x0, self.x1) = window
        self.label = label
        self.region = region                         # this shadow's pixels (box coordinates)
        self.unknown = masked | invalid               # every pixel the integration solves for
        self.median = median
        unusable = masked | invalid
        far = ~ndimage.binary_dilation(unusable, iterations=gap) if gap > 0 else ~unusable
        far[:3, :] = far[-3:, :] = far[:, :3] = far[:, -3:] = False
        ys, xs = np.nonzero(far)
        if ys.size > max_reg_pixels:                  # the nearest pixels to the shadow
            dist = ndimage.distance_transform_edt(~region)[ys, xs]
            keep = np.argsort(dist, kind="stable")[:max_reg_pixels]
            ys, xs = ys[keep], xs[keep]
        self.reg_y, self.reg_x = ys.astype(np.float64), xs.astype(np.float64)
        self.reg_ref = median[ys, xs]
        self.coeffs = ndimage.spline_filter(median, order=3, mode="nearest")
        # the coefficients edge-extended (mode "nearest"), for the separable sampler
        self._padded = np.pad(self.coeffs, _SPLINE_PAD, mode="edge")
        self._reg_yx = (ys.astype(np.intp), xs.astype(np.intp))
        self._reg_span = ((ys.min(), ys.max(), xs.min(), xs.max()) if ys.size else (0, -1, 0, -1))
        self._ref_level = float(np.median(self.reg_ref)) if ys.size else 0.0
        # flat index, in a box-wide array, of the six rows around each registration pixel
        self._reg_rows6 = (ys[:, None] + np.arange(6)[None, :]) * median.shape[1] + xs[:, None]
        self.sums = np.zeros((n_terms,) + median.shape)
        self.gram = np.zeros((n_terms, n_terms))
        # the same sums over every other frame: two independent halves give the estimate's noise
        self.half_sums = np.zeros((n_terms,) + median.shape)
        self.half_gram = np.zeros((n_terms, n_terms))
        self._n_accumulated = 0
        self.shifts = []
        self.levels = []
        self.reg_rms = []

    @property
    def n_reg(self):
        return self.reg_y.size

    @property
    def slice(self):
        return slice(self.y0, self.y1), slice(self.x0, self.x1)

    def _sample(self, cy, cx):
        return ndimage.map_coordinates(self.coeffs, [cy, cx], order=3, mode="nearest",
                                       prefilter=False)

    def _map_coordinates(self, d, eps):
        """`values_and_slopes` by `scipy.ndimage.map_coordinates` (samples beyond the box)."""
        cy, cx = self.reg_y - d[0], self.reg_x - d[1]
        val, ym, yp, xm, xp = self._sample(np.concatenate([cy, cy - eps, cy + eps, cy, cy]),
                                           np.concatenate([cx, cx, cx, cx - eps, cx + eps])
                                           ).reshape(5, -1)
        return val, (yp - ym) / (2 * eps), (xp - xm) / (2 * eps)

    def values_and_slopes(self, d, eps):
        """The median's spline at the registration pixels moved by ``d``, and its slopes.

        Returns ``(value, ∂/∂y, ∂/∂x)``, the slopes central differences of
        ``eps`` px.  One shift for every pixel, so the bicubic B-spline is
        separable with the same six weights per axis (`_shift_weights`): a
        pass along x over the edge-extended coefficients, then six rows
        gathered per pixel — the numbers of `scipy.ndimage.map_coordinates`
        (to rounding) at a fraction of its cost.  Samples beyond the box
        (a shift of more than ~3 px) go through `scipy.ndimage.map_coordinates`.
        """
        h, w = self.median.shape
        y_lo, y_hi, x_lo, x_hi = self._reg_span
        if not (y_lo - abs(d[0]) - eps >= 0 and y_hi + abs(d[0]) + eps <= h - 1
                and x_lo - abs(d[1]) - eps >= 0 and x_hi + abs(d[1]) + eps <= w - 1):
            return self._map_coordinates(d, eps)
        (wy, wx), (fly, flx) = _shift_weights(-d, eps)
        r0 = _SPLINE_PAD + fly + y_lo - 2                     # first coefficient row needed
        rows = self._padded[r0:r0 + y_hi - y_lo + 6]
        c0 = _SPLINE_PAD + flx - 2
        level, slope = _weighted_columns(rows, c0, w, wx[0], (wx[2] - wx[1]) / (2 * eps))
        flat = self._reg_rows6 - y_lo * w                     # (n, 6) in the cut rows
        g = level.ravel()[flat]
        return g @ wy[0], g @ ((wy[2] - wy[1]) / (2 * eps)), slope.ravel()[flat] @ wy[0]

    def _fit(self, b, d, c, *, iterations, fixed):
        """Gauss–Newton fit of one frame's registration values ``b``: ``(d, c, rms)``."""
        r = None
        for _ in range(iterations):
            val, vy, vx = self.values_and_slopes(d, _SLOPE_EPS)
            r = b - c * val
            step = _gauss_newton_step(val, -c * vy, -c * vx, r, fixed=fixed)
            if not np.all(np.isfinite(step)):
                break
            c += step[0]
            d += np.clip(step[1:], -2.0, 2.0)
            if np.abs(step[1:]).max() < 1e-3:
                break
        if r is None:
            return d, c, np.nan
        return d, c, float(np.sqrt(np.mean(r**2)) / max(self._ref_level, 1e-12))

    def register(self, cuts, starts, *, iterations, fixed=False):
        """Gauss–Newton fits of ``cut ≈ c · median(x − d)`` on the registration pixels.

        ``cuts`` ``(n_frames, h, w)`` and ``starts`` ``(n_frames, 2)``; each
        frame iterates until its shift moves by less than 1e-3 px (or
        ``iterations``).  With ``fixed`` the shift stays at its start and only
        the level ``c`` is fitted.  Returns ``(d, c, rms)``, one row a frame.
        """
        b = cuts[:, self._reg_yx[0], self._reg_yx[1]]
        n = len(b)
        d, c, rms = np.array(starts, dtype=np.float64), np.ones(n), np.full(n, np.nan)
        for k in range(n):
            c0 = float(np.median(b[k]) / self._ref_level) if self._ref_level > 0 else 1.0
            d[k], c[k], rms[k] = self._fit(b[k], d[k].copy(), c0, iterations=iterations,
                                           fixed=fixed)
        return d, c, rms

    def accumulate(self, cuts, d, c, quadratic):
        """Add frames (``cuts``, shifts ``d``, levels ``c``) to the per-pixel regression sums.

        ``cuts`` is divided by the levels in place.
        """
        x = np.array([_design(di, quadratic) for di in d])
        self.gram += x.T @ x
        cuts /= c[:, None, None]
        self.sums += np.tensordot(x.T, cuts, axes=1)
        odd = (np.arange(len(x)) + self._n_accumulated) % 2 == 1
        self._n_accumulated += len(x)
        self.half_gram += x[odd].T @ x[odd]
        self.half_sums += np.tensordot(x[odd].T, cuts[odd], axes=1)


_SPLINE_PAD = 8     # px of edge-extended spline coefficients around a box
_SLOPE_EPS = 1e-2   # px: central differences of the spline in the registration
_TAPS = np.arange(-2, 4)


def _cubic_bspline(u):
    """The cubic B-spline ``B3(u)``: ``((2 - |u|)₊³ - 4 (1 - |u|)₊³) / 6``."""
    a = np.abs(u)
    return (np.maximum(2 - a, 0) ** 3 - 4 * np.maximum(1 - a, 0) ** 3) / 6


def _shift_weights(s, eps):
    """Cubic B-spline weights of the six coefficients ``floor(s) - 2 .. floor(s) + 3``, per axis.

    For samples at ``i + s`` (any integer ``i``) and at ``i + s ∓ eps``, ``s``
    one value an axis: a ``(n_axes, 3, 6)`` array (rows ``s``, ``s - eps``,
    ``s + eps``), and ``floor(s)`` (ints).
    """
    fl = np.floor(s)
    t = (s - fl)[:, None, None] + np.array([0.0, -eps, eps])[None, :, None]
    return _cubic_bspline(t - _TAPS[None, None, :]), [int(v) for v in fl]


def _weighted_columns(rows, c0, w, w_level, w_slope):
    """Two six-tap sums along x: ``Σ_j w[j] · rows[:, c0 + j + x]``, ``x < w``, one a weight set."""
    level = w_level[0] * rows[:, c0:c0 + w]
    slope = w_slope[0] * rows[:, c0:c0 + w]
    for j in range(1, 6):
        cols = rows[:, c0 + j:c0 + j + w]
        level += w_level[j] * cols
        slope += w_slope[j] * cols
    return level, slope


def _gauss_newton_step(val, jy, jx, r, *, fixed):
    """Least-squares step of ``(level, dy, dx)`` for the Jacobian columns ``val, jy, jx``.

    The 3 × 3 normal equations (the columns are hundreds to thousands
    long); with ``fixed`` only the level moves.  A singular system falls
    back to `numpy.linalg.lstsq` (its minimum-norm step).
    """
    if fixed:
        vv = float(val @ val)
        return np.array([float(val @ r) / vv if vv > 0 else np.nan, 0.0, 0.0])
    jac = np.array([val, jy, jx])
    try:
        return np.linalg.solve(jac @ jac.T, jac @ r)
    except np.linalg.LinAlgError:
        return np.linalg.lstsq(jac.T, r, rcond=None)[0]


def _design(d, quadratic):
    dy, dx = float(d[0]), float(d[1])
    if quadratic:
        return np.array([1.0, dy, dx, dy * dy, dy * dx, dx * dx])
    return np.array([1.0, dy, dx])


def _integrate(phi0, unknown, gy, gx, weak):
    """Least-squares integration of a gradient field over ``unknown`` with ``phi0`` fixed elsewhere.

    Each pair of 4-neighbours with at least one unknown gives an equation
    ``phi(q) - phi(p) = g_pq``, ``g_pq`` the gradient at the midpoint from a
    four-point (cubic) interpolation of the pixel gradients; equations
    touching a ``weak`` pixel (a defect) get a small weight.
    """
    h, w = unknown.shape
    idx = np.full((h, w), -1, dtype=np.int64)
    ys, xs = np.nonzero(unknown)
    idx[ys, xs] = np.arange(ys.size)
    rows, cols, vals, rhs, wts = [], [], [], [], []
    n_eq = 0
    for dy, dx, g in ((1, 0, gy), (0, 1, gx)):
        py, px = np.mgrid[0:h - dy, 0:w - dx]
        qy, qx = py + dy, px + dx
        sel = unknown[py, px] | unknown[qy, qx]
        py, px, qy, qx = py[sel], px[sel], qy[sel], qx[sel]
        pu, qu = unknown[py, px], unknown[qy, qx]
        gp = np.pad(g, 1, mode="edge")
        outer = gp[py + 1 - dy, px + 1 - dx] + gp[qy + 1 + dy, qx + 1 + dx]
        ge = (9.0 * (g[py, px] + g[qy, qx]) - outer) / 16.0
        eq = np.arange(n_eq, n_eq + py.size)
        rows += [eq[qu], eq[pu]]
        cols += [idx[qy[qu], qx[qu]], idx[py[pu], px[pu]]]
        vals += [np.ones(int(qu.sum())), -np.ones(int(pu.sum()))]
        b = ge.copy()
        b[~qu] -= phi0[qy[~qu], qx[~qu]]
        b[~pu] += phi0[py[~pu], px[~pu]]
        rhs.append(b)
        wts.append(np.where(weak[py, px] | weak[qy, qx], 1e-3, 1.0))
        n_eq += py.size
    a = sparse.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                          shape=(n_eq, ys.size))
    wt = sparse.diags(np.concatenate(wts))
    sol = splinalg.spsolve((a.T @ wt @ a).tocsc(), a.T @ (wt @ np.concatenate(rhs)))
    out = phi0.copy()
    out[ys, xs] = sol
    return out


def _windows(labels, shape, pad):
    for k, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None:
            continue
        n_px = int(np.count_nonzero(labels[sl] == k))
        p = int(np.ceil(max(pad, np.sqrt(n_px / np.pi)))) + 3
        yield k, ((max(sl[0].start - p, 0), min(sl[0].stop + p, shape[0])),
                  (max(sl[1].start - p, 0), min(sl[1].stop + p, shape[1])))


@dataclasses.dataclass(frozen=True)
class JitterOptions:
    """Tuning of `jitter_clean` (all optional; the defaults are the measured ones).

    Attributes
    ----------
    quadratic : bool, optional
        Fit the second-order terms of the shift as well (default).
    gap : int, optional
        Registration pixels lie more than this many px from any masked pixel.
    pad : int, optional
        The box reaches at least this far (px) beyond the shadow (more for
        a shadow of larger equivalent radius).
    max_reg_pixels : int, optional
        At most this many registration pixels per shadow (the nearest).
    iterations : int, optional
        Gauss–Newton iterations of the registration.
    min_frames : int, optional
        Fewer frames: nothing is filled (the fit has 3 or 6 unknowns per pixel).
    max_frames : int or None, optional
        Use at most this many frames, spread evenly over the video (the noise
        of the measured gradient falls as one over the square root of their
        number; 200 frames of a long video are plenty, and the
        registration costs a few milliseconds a frame and a shadow).
    first_frames : int or None, optional
        Register every shadow on this many of the selected frames first
        (spread evenly); only the shadows whose gradient check fails there
        but could still pass with the lower noise of all the selected
        frames are registered on the other selected frames.  The error of a
        shadow's estimate stops falling after a few tens of frames, while
        on a faint video more shadows pass the check with more frames
        (``benchmarks/bench_jitter_frames.py``, :ref:`performance`).
        None: every selected frame for every shadow.  Each frame is read
        once either way.
    max_shift : float, optional
        A shadow whose frames move by more than this rms (px) is not filled:
        beyond a few pixels the scene is not a low-order function of the
        shift (use the ``measured`` method for a drifting scene).
    min_r2 : float, optional
        Agreement needed between the measured gradient and the median's on
        the box's unmasked pixels (see the module description).
    progress_bar : bool, optional
        Show a tqdm progress bar over the frames.

    Examples
    --------
    >>> opts = JitterOptions(max_frames=50)
    >>> opts.max_frames, opts.min_frames
    (50, 12)
    """

    quadratic: bool = True
    gap: int = 4
    pad: int = 16
    max_reg_pixels: int = 6000
    iterations: int = 6
    min_frames: int = 12
    max_frames: int | None = 200
    first_frames: int | None = 60
    max_shift: float = 3.0
    min_r2: float = JITTER_MIN_R2
    progress_bar: bool = False

    def updated(self, **overrides):
        """A copy with ``overrides`` applied; an unknown name is an `InputError`."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise InputError(f"unknown jitter option(s) {', '.join(unknown)}; "
                             f"known: {', '.join(sorted(names))}")
        return dataclasses.replace(self, **overrides) if overrides else self


def jitter_clean(median, dust_mask, frames, *, shifts=None, ignore=None, options=None, invalid=None,
                 return_noise=False, **overrides):
    """Dust-free median inside dust shadows, integrated from the gradient that the jitter measures.

    Parameters
    ----------
    median : `~numpy.ndarray`
        The temporal median (2-D) of ``frames``.
    dust_mask : `~numpy.ndarray` of bool
        Pixels to fill; each 8-connected region is one shadow.
    frames : path, list, `~numpy.ndarray` or `~aiflat_astro.io.frames.FrameSource`
        The frames the median was made from (anything
        `~aiflat_astro.io.frames.open_frames` accepts), read one at a time.
        RGB frames are averaged over their channels; the four phases of a
        raw colour mosaic (``BAYERPAT`` in the frames' header) are divided by
        their gains (as `~aiflat_astro.flat.make_flat` does with the median),
        in the frames and in the median alike, and the estimate is returned
        on the median's scale.
    shifts : array-like, optional
        Known shifts ``(dy, dx)`` of the scene, one row a frame (e.g. from
        `~aiflat_astro.registration.register_frames`, or a simulation's
        truth), used for every shadow; only the frame's level is then fitted.
        Default: measured locally around each shadow.
    ignore : `~numpy.ndarray` of bool, optional
        Defects (hot, cold, saturated): not used for registration, solved for
        with a small weight.
    options : ``JitterOptions``, optional
        The method's tuning (default ``JitterOptions()``).
    **overrides
        Any field of ``JitterOptions`` by keyword (``max_frames=20``), applied
        over ``options``: the keywords of earlier versions keep working.
    invalid : `~numpy.ndarray` of bool, optional
        Deprecated name of ``ignore``.
    return_noise : bool, optional
        Also return the estimate's noise map (two more integrations a shadow).

    Returns
    -------
    clean : `~numpy.ndarray`
        float32: the median, with the pixels of each shadow that passed the
        checks replaced by the estimate.
    report : list of dict
        One entry a shadow: ``label`` (its region number), ``used``,
        ``reason`` (why not, or ``''``), ``r2``, ``shift_rms`` (px),
        ``reg_rms`` (median relative rms of the registration residual),
        ``n_reg`` (registration pixels); with ``return_noise`` also
        ``noise_rms`` for a filled shadow.
    noise : `~numpy.ndarray`
        With ``return_noise=True`` only: float32, the relative 1-σ noise of
        ``clean`` at each pixel of a filled shadow (from two halves of the
        frames, integrated apart), NaN elsewhere.

    Raises
    ------
    `~aiflat_astro.utils.exceptions.InputError`
        Frames of another shape than the median, an unknown option.

    Examples
    --------
    A textureless scene: nothing to measure, nothing filled.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> video = 1000 + rng.normal(0, 10, (20, 48, 48))
    >>> median = np.median(video, axis=0)
    >>> mask = np.zeros((48, 48), bool); mask[20:28, 20:28] = True
    >>> clean, report = jitter_clean(median, mask, video)
    >>> report[0]["used"], report[0]["reason"]
    (False, 'no texture')
    >>> bool(np.all(clean == median.astype(np.float32)))
    True
    """
    if invalid is not None:
        ignore = renamed_keyword("jitter_clean", "invalid", "ignore", invalid, given=ignore)
    opts = (options or JitterOptions()).updated(**overrides)
    med, mask, bad = _checked_images(median, dust_mask, ignore)
    clean = med.astype(np.float32)
    labels, n = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    if n == 0:
        return _answer(clean, [], return_noise)
    from ...io.frames import open_frames

    source = open_frames(frames)
    checks = {"min_frames": opts.min_frames, "max_shift": opts.max_shift, "min_r2": opts.min_r2}
    try:
        n_frames, pattern, shifts = _checked_frames(source, med.shape, shifts)
        if n_frames < opts.min_frames:
            return _answer(clean, _too_few_frames(n_frames, opts.min_frames, n), return_noise)
        med_gain = _phase_gains(med, pattern)      # ones unless a raw colour mosaic
        boxes = _shadow_boxes(med / med_gain, mask, bad, labels, pad=opts.pad, gap=opts.gap,
                              max_reg_pixels=opts.max_reg_pixels, n_terms=6 if opts.quadratic else 3)
        _register_in_stages(source, boxes, _frame_selection(n_frames, opts.max_frames),
                            first_frames=opts.first_frames, shifts=shifts, pattern=pattern,
                            iterations=opts.iterations, quadratic=opts.quadratic, checks=checks,
                            progress_bar=opts.progress_bar)
    finally:
        if source is not frames:
            source.close()
    noise = np.full(med.shape, np.nan, np.float32) if return_noise else None
    report = [_fill_shadow(box, clean, bad, med_gain, noise_map=noise, **checks) for box in boxes]
    n_used = sum(r["used"] for r in report)
    log.info("jitter: %d of %d shadow(s) filled from the measured gradient", n_used, len(report))
    return (clean, report, noise) if return_noise else (clean, report)


def _answer(clean, report, return_noise):
    """``(clean, report)``, and a noise map of NaN (nothing measured) with ``return_noise``."""
    return (clean, report, np.full(clean.shape, np.nan, np.float32)) if return_noise else (clean, report)


def _too_few_frames(n_frames, min_frames, n_shadows):
    """The report when the video is too short for the per-pixel fit: nothing filled."""
    reason = f"{n_frames} frames (< {min_frames})"
    log.info("jitter: not used (%s)", reason)
    return [{"label": k, "used": False, "reason": reason, "r2": np.nan, "shift_rms": np.nan,
             "reg_rms": np.nan, "n_reg": 0} for k in range(1, n_shadows + 1)]


def _checked_images(median, dust_mask, ignore):
    """The median (float64), the mask and the pixels not to trust (non-finite, ≤ 0, ``ignore``)."""
    med = np.asarray(getattr(median, "data", median), dtype=np.float64)
    mask = np.asarray(dust_mask, dtype=bool)
    if med.ndim != 2 or mask.shape != med.shape:
        raise InputError(f"median {med.shape} and dust mask {mask.shape} must be 2-D images of "
                         "one shape")
    bad = ~np.isfinite(med) | (med <= 0)
    if ignore is not None:
        ignore = np.asarray(ignore, dtype=bool)
        if ignore.shape != med.shape:
            raise InputError(f"ignore mask shape {ignore.shape} does not match the median {med.shape}")
        bad = bad | ignore
    return med, mask, bad


def _checked_frames(source, shape2d, shifts):
    """``(n_frames, Bayer pattern or None, shifts centred or None)`` of an open frame source."""
    shape = tuple(source.frame_shape)
    if shape[:2] != shape2d or not (len(shape) == 2 or shape[-1] == 3):
        raise InputError(f"frames of shape {shape} do not match the median shape {shape2d}")
    n_frames = int(source.n_frames)
    if shifts is not None:
        shifts = np.asarray(shifts, dtype=np.float64)
        if shifts.shape != (n_frames, 2):
            raise InputError(f"shifts must have shape ({n_frames}, 2), got {shifts.shape}")
        shifts = shifts - shifts.mean(axis=0)
    meta = getattr(source, "meta", None)
    pattern = meta.get("BAYERPAT") if meta is not None and len(shape) == 2 else None
    return n_frames, pattern, shifts


def _shadow_boxes(level, mask, bad, labels, *, pad, gap, max_reg_pixels, n_terms):
    """One `_Box` a shadow (label) on the gain-divided median ``level``, bad pixels its median."""
    safe = np.where(bad, np.nan, level)
    fill = float(np.nanmedian(safe)) if np.isfinite(safe).any() else 1.0
    boxes = []
    for k, ((y0, y1), (x0, x1)) in _windows(labels, level.shape, pad):
        win = safe[y0:y1, x0:x1]
        boxes.append(_Box(k, labels[y0:y1, x0:x1] == k, mask[y0:y1, x0:x1],
                          np.where(np.isfinite(win), win, fill), bad[y0:y1, x0:x1],
                          ((y0, y1), (x0, x1)), gap=gap, max_reg_pixels=max_reg_pixels,
                          n_terms=n_terms))
    return boxes


def _frame_selection(n_frames, max_frames):
    """Every frame, or ``max_frames`` spread evenly over the video."""
    if max_frames is not None and n_frames > max_frames:
        return spread_indices(n_frames, max_frames).tolist()
    return list(range(n_frames))


_CHUNK_BYTES = 32 * 2**20   # the boxes of this many bytes of frames are registered together
_CHUNK_FRAMES = 8


def _frame_chunks(source, indices, boxes, pattern, progress_bar):
    """Stream the frames once each, in order: ``(indices, cuts)``, the boxes of a few frames.

    ``cuts[b]`` is ``(n, h, w)`` float64 for box ``b`` (the channel mean of RGB
    frames; a raw mosaic's phases divided by their gains).  A chunk holds
    `_CHUNK_BYTES` of boxes at most, so memory does not grow with the video.
    """
    per_frame = 8 * sum(box.median.size for box in boxes)
    size = int(np.clip(_CHUNK_BYTES // max(per_frame, 1), 1, _CHUNK_FRAMES))
    bar = None
    if progress_bar:
        from tqdm.auto import tqdm

        bar = tqdm(desc="jitter", unit="frame", total=len(indices))
    frame_gain = None
    try:
        for first in range(0, len(indices), size):
            ids = indices[first:first + size]
            cuts = [np.empty((len(ids),) + box.median.shape) for box in boxes]
            for k, i in enumerate(ids):
                frame = _mono(source.read(i))
                if pattern:
                    if frame_gain is None:
                        frame_gain = _phase_gains(frame, pattern)
                    frame /= frame_gain
                for box, cut in zip(boxes, cuts, strict=True):
                    cut[k] = frame[box.slice]
                if bar is not None:
                    bar.update(1)
            yield ids, cuts
    finally:
        if bar is not None:
            bar.close()


def _register_and_accumulate(source, boxes, indices, *, shifts, pattern, iterations, quadratic,
                             progress_bar):
    """Register every box of every selected frame and add the frames to the boxes' regression sums.

    Per frame the boxes are taken in order, each starting from the shift
    found in the previous box of the same frame (or at the known ``shifts``,
    then fixed); a frame whose fit fails is left out of that box.
    """
    boxes = [box for box in boxes if box.n_reg >= 30]
    if not boxes:
        return
    for ids, cuts in _frame_chunks(source, indices, boxes, pattern, progress_bar):
        starts = np.zeros((len(ids), 2)) if shifts is None else shifts[ids]
        for box, cut in zip(boxes, cuts, strict=True):
            d, c, rms = box.register(cut, starts, iterations=iterations, fixed=shifts is not None)
            ok = np.all(np.isfinite(d), axis=1) & np.isfinite(c) & (c > 0)
            d[~ok], c[~ok] = np.nan, np.nan
            if shifts is None:
                # the next box starts from this frame's shift
                starts = np.where(ok[:, None], d, starts)
            if ok.any():
                box.accumulate(cut[ok], d[ok], c[ok], quadratic)
            box.shifts.extend(d)
            box.levels.extend(c)
            box.reg_rms.extend(rms)


def _register_in_stages(source, boxes, indices, *, first_frames, checks, **options):
    """`_register_and_accumulate` on ``first_frames`` of ``indices``, then on the rest for the
    boxes that need them (`_needs_more_frames`); each frame is read once."""
    if first_frames is None or len(indices) <= int(first_frames):
        _register_and_accumulate(source, boxes, indices, **options)
        return
    first = [indices[i] for i in _frame_selection(len(indices), int(first_frames))]
    taken = set(first)
    rest = [i for i in indices if i not in taken]
    _register_and_accumulate(source, boxes, first, **options)
    gain = len(indices) / len(first)
    pending = [box for box in boxes if _needs_more_frames(box, gain=gain, **checks)]
    log.debug("jitter: %d of %d shadow(s) registered on %d more frames", len(pending),
              len(boxes), len(rest))
    if pending:
        _register_and_accumulate(source, pending, rest, **options)


def _needs_more_frames(box, *, gain, min_frames, max_shift, min_r2):
    """Whether more frames can still change the box's gradient check.

    Not if it already passes (R² ≥ ``min_r2``): past a few tens of frames
    the error of the estimate is its bias, not its noise
    (``benchmarks/bench_jitter_frames.py``).  Nor if it cannot pass even if
    all of its misfit were noise: ``gain`` times the frames divide the noise
    variance by about ``gain`` (by up to twice that measured on the test
    scenes, the shifts' spread varying), so ``1 - (1 - R²) / (2 gain) <
    min_r2`` stays a failure.  A shift problem (too few frames registered)
    needs them.
    """
    if box.n_reg < 30:
        return False
    if _shift_problem(box, {}, min_frames=min_frames, max_shift=max_shift):
        return True
    gy, gx = _measured_gradient(box)
    r2 = _gradient_agreement(box, np.log(box.median), gy, gx)
    if r2 is None or not np.isfinite(r2):
        return False
    return bool(r2 < min_r2 <= 1 - (1 - r2) / (2 * gain))


def _fill_shadow(box, clean, bad, med_gain, *, min_frames, max_shift, min_r2, noise_map=None):
    """Check one box's measurement; if it passes, write its estimate into ``clean`` (and its noise
    into ``noise_map``, if given: `_estimate_noise`); the row."""
    row = {"label": box.label, "used": False, "reason": "", "r2": np.nan, "shift_rms": np.nan,
           "reg_rms": float(np.nanmedian(box.reg_rms)) if box.reg_rms else np.nan,
           "n_reg": int(box.n_reg)}
    row["reason"] = _shift_problem(box, row, min_frames=min_frames, max_shift=max_shift)
    if row["reason"]:
        return row
    gy, gx = _measured_gradient(box)
    logm = np.log(box.median)
    raw = _gradient_agreement(box, logm, gy, gx)
    halves = _half_gradients(box) if raw is not None else None
    r2 = _gradient_agreement(box, logm, gy, gx, halves) if raw is not None else None
    row["r2"], row["r2_raw"] = r2, raw
    if r2 is None:
        row["reason"], row["r2"], row["r2_raw"] = "too few pixels around the shadow", np.nan, np.nan
        return row
    if not raw > 0:      # the measurement's error exceeds the scene's gradient: nothing measured
        row["reason"] = "no texture"
        log.debug("jitter: shadow %d not filled (%s)", box.label, row["reason"])
        return row
    if not r2 >= min_r2:
        row["reason"] = "no texture" if r2 < 0.1 else f"gradient check R2 {r2:.2f} < {min_r2:g}"
        log.debug("jitter: shadow %d not filled (%s)", box.label, row["reason"])
        return row
    est = np.exp(_integrate(logm, box.unknown, gy, gx, bad[box.slice]))
    if not np.all(np.isfinite(est[box.region])):
        row["reason"] = "integration failed"
        return row
    est = est * med_gain[box.slice]
    clean[box.slice][box.region] = est[box.region].astype(np.float32)
    row["used"] = True
    if noise_map is not None:
        noise = _estimate_noise(box, logm, bad[box.slice], halves)
        if noise is not None:
            noise_map[box.slice][box.region] = noise[box.region]
            row["noise_rms"] = float(np.sqrt(np.mean(noise[box.region] ** 2)))
    return row


def _half_gradients(box):
    """The measured gradient ``(gy, gx)`` of each half of the frames (None: a half is singular)."""
    halves = ((box.half_gram, box.half_sums), (box.gram - box.half_gram, box.sums - box.half_sums))
    out = []
    for gram, sums in halves:
        if not np.all(np.isfinite(gram)) or np.linalg.cond(gram) > 1e8:
            return None
        out.append(_measured_gradient(box, gram, sums))
    return out


def _estimate_noise(box, logm, weak, halves, *, size=5):
    """The relative 1-σ noise of the estimate at each pixel of the box (0 where it is not solved for).

    The frames went alternately into two halves (`_Box.accumulate`); each
    half is integrated like the whole.  Their difference holds the noise of
    the measured gradient after the integration (it grows away from the
    known pixels) and none of the scene or the dust:
    ``σ² = ⟨(φ_a - φ_b)²⟩ / 4``, averaged over ``size`` × ``size`` px of
    the unknown pixels.  The median's own noise is added,
    ``1.2533 · reg_rms / √n`` (``reg_rms`` the registration's relative
    residual per frame, an upper bound of a frame's noise).  ``halves`` are
    the two halves' gradients (`_half_gradients`; None: a half is singular).
    """
    if halves is None:
        return None
    phis = [_integrate(logm, box.unknown, gy, gx, weak) for gy, gx in halves]
    unknown = box.unknown.astype(np.float64)
    diff2 = np.where(box.unknown, (phis[0] - phis[1]) ** 2 / 4.0, 0.0)
    local = ndimage.uniform_filter(diff2, size) / np.maximum(ndimage.uniform_filter(unknown, size), 1e-12)
    rms = np.array(box.reg_rms, dtype=np.float64)
    rms = rms[np.isfinite(rms)]
    median_var = (1.2533 * float(np.median(rms))) ** 2 / rms.size if rms.size else 0.0
    return np.where(box.unknown, np.sqrt(local + median_var), 0.0)


def _shift_problem(box, row, *, min_frames, max_shift):
    """Why the shifts in ``box`` cannot be used (``''`` if they can); sets ``row['shift_rms']``."""
    if box.n_reg < 30:
        return "too few pixels around the shadow"
    d = np.array(box.shifts)
    good = np.all(np.isfinite(d), axis=1)
    if good.sum() < min_frames:
        return "registration failed"
    d = d[good]
    row["shift_rms"] = float(np.sqrt(np.mean(np.sum((d - d.mean(axis=0)) ** 2, axis=1) / 2)))
    if row["shift_rms"] > max_shift:
        return f"shift rms {row['shift_rms']:.1f} px > {max_shift:g}"
    try:
        np.linalg.inv(box.gram)
    except np.linalg.LinAlgError:
        return "shifts do not span two directions"
    if np.linalg.cond(box.gram) > 1e8:
        return "shifts do not span two directions"
    return ""


def _measured_gradient(box, gram=None, sums=None):
    """``∇ log S`` per pixel of the box: ``-(slope) / (intercept)`` of the regression.

    ``gram`` and ``sums`` default to the box's (every frame); a half's give that half's.
    """
    gram = box.gram if gram is None else gram
    sums = box.sums if sums is None else sums
    coef = np.tensordot(np.linalg.inv(gram), sums, axes=1)
    level = coef[0]
    with np.errstate(divide="ignore", invalid="ignore"):
        gy = np.where(level > 0, -coef[1] / level, 0.0)
        gx = np.where(level > 0, -coef[2] / level, 0.0)
    return gy, gx


def _gradient_agreement(box, logm, gy, gx, halves=None):
    """Robust R² of the measured gradient against the median's own (None: too few pixels).

    With ``halves`` (`_half_gradients`) the measured gradient's own noise,
    ``((g_a - g_b) / 2)²`` per pixel, is taken out of the misfit first: what
    is left is its bias (a failed registration, a scene without texture),
    which is what the check is for.  The noise is the estimate's, measured
    (`_estimate_noise`) and weighed downstream; a fixed R² on the raw misfit
    would refuse a faint but unbiased measurement.
    """
    my, mx = _gradient4(logm)
    check = ~ndimage.binary_dilation(box.unknown, iterations=3)
    check[:3, :] = check[-3:, :] = check[:, :3] = check[:, -3:] = False
    if check.sum() < 30:
        return None
    ref = np.concatenate([my[check], mx[check]])
    got = np.concatenate([gy[check], gx[check]])
    # medians, so that a few stars or a spot's edge do not decide it
    denom = float(np.median(ref**2))
    misfit = float(np.median((got - ref) ** 2))
    if halves is not None:
        (ay, ax), (by, bx) = halves
        noise = np.concatenate([(ay - by)[check], (ax - bx)[check]]) ** 2 / 4.0
        misfit = max(0.0, misfit - float(np.median(noise)))
    return 1.0 - misfit / denom if denom > 0 else -np.inf
