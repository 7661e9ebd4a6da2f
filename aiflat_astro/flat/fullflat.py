"""The whole gain table (full flat) from shifted images: a robust KLL / Chae solver.

When the scene is moved on the sensor between exposures (an off-pointed set:
the classic solar flat-field observation) every pixel sees several parts of
the scene and every part of the scene is seen by several pixels.  With the
scene shift ``s_k`` of frame ``k`` (`aiflat_astro.registration.register_frames`)
and the log-intensities ``l_k = log I_k``, the model of Kuhn, Lin & Loranz
(1991) and Chae (2004) is

.. math::  l_k(x) = g(x) + o(x - s_k) + c_k

with ``g`` the log-gain on the sensor grid, ``o`` the log-scene on a scene
grid and ``c_k`` a level per frame (exposure, transparency).  `solve_gain`
solves it by weighted linear least squares over all frames at once:

* **sub-pixel shifts** by interpolation of the scene only: ``o`` is sampled
  at ``x - s_k`` with the separable Keys cubic kernel (the scene is smooth;
  the gain, which holds the pixel-to-pixel response, is never
  interpolated), an operator whose exact adjoint is used;
* **conjugate gradients** on the normal equations (CGLS) with a diagonal
  (Jacobi) preconditioner, started from zero;
* **robust** to flares, moving features and the limb by iteratively
  reweighted least squares with a Gaussian (correntropy) kernel on the
  residuals, as the maximum-correntropy solver of Xu et al. (2016, ApJ 827,
  137): a sample's weight is ``exp(-r^2 / (2 (k sigma)^2))`` with ``sigma`` the
  robust (MAD) scatter of the residuals;
* samples darker than ``min_signal`` of the disc level (sky, the limb) and
  non-finite values carry no weight.

The gauge: ``g`` is normalised to a median of 1 over the constrained pixels.
With free frame levels a plane in ``g`` is degenerate with the levels
(``g + a.x``, ``o - a.u``, ``c_k + a.s_k`` fit the data equally): the solver
sets the plane of ``log g`` over the constrained pixels to zero, so a linear
tilt of the vignetting is not measured (pass ``frame_levels=False`` when the
exposures are known to be equal).
"""

import logging
from dataclasses import dataclass, field, fields, replace

import numpy as np
from scipy import ndimage as ndi

from .._imaging.robust import robust_sigma
from ..io.frames import opened_frames, spread_indices
from ..registration import DriftPath, _binned_frames, register_frames
from ..utils._atomic import parse_size
from ..utils.exceptions import AiflatUserWarning, InputError, renamed_keyword, warn_user

__all__ = ["FullFlat", "FullFlatOptions", "solve_gain", "full_flat", "make_full_flat"]

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------
# sub-pixel sampling of the scene (separable Keys cubic) and its exact adjoint
# ---------------------------------------------------------------------------
def _keys(f):
    """Keys (a = -0.5) cubic weights of the taps -1, 0, 1, 2 at fraction ``f``."""
    a = -0.5
    d = np.array([1 + f, f, 1 - f, 2 - f])
    w = np.where(d <= 1, (a + 2) * d**3 - (a + 3) * d**2 + 1,
                 a * d**3 - 5 * a * d**2 + 8 * a * d - 4 * a)
    return w


class _Sampler:
    """``o(x + p)`` on the sensor grid, ``p = offset - s_k`` (scene-grid coordinates)."""

    def __init__(self, sensor_shape, scene_shape, position):
        self.shape = sensor_shape
        self.scene_shape = scene_shape
        n = np.floor(position).astype(int)
        f = position - n
        self.n = n
        self.wy = _keys(f[0]).astype(np.float32)
        self.wx = _keys(f[1]).astype(np.float32)
        h, w = sensor_shape
        if n[0] - 1 < 0 or n[1] - 1 < 0 or n[0] + h + 2 > scene_shape[0] or \
                n[1] + w + 2 > scene_shape[1]:
            raise InputError("internal: scene grid too small for the shifts")

    def forward(self, o):
        h, w = self.shape
        ny, nx = self.n
        crop = o[ny - 1:ny + h + 2, nx - 1:nx + w + 2]
        rows = ndi.correlate1d(crop, self.wy, axis=0, origin=-2, mode="constant")[:h]
        return ndi.correlate1d(rows, self.wx, axis=1, origin=-2, mode="constant")[:, :w]

    def adjoint(self, r, out):
        """Add the adjoint of `forward` applied to ``r`` into ``out`` (scene grid)."""
        h, w = self.shape
        ny, nx = self.n
        pad = np.zeros((h + 3, w + 3), np.float32)
        pad[:h, :w] = r
        cols = ndi.correlate1d(pad, self.wx[::-1], axis=1, origin=1, mode="constant")
        out[ny - 1:ny + h + 2, nx - 1:nx + w + 2] += ndi.correlate1d(
            cols, self.wy[::-1], axis=0, origin=1, mode="constant")


# ---------------------------------------------------------------------------
# result
# ---------------------------------------------------------------------------
@dataclass
class FullFlat:
    """The gain table solved from shifted images, with its diagnostics.

    Attributes
    ----------
    gain : `~numpy.ndarray`
        float32 (H, W) flat (median 1 over the constrained pixels; 1.0 where
        unconstrained).
    uncertainty : `~numpy.ndarray`
        float32 (H, W) standard error of ``gain`` (0 where unconstrained).
    coverage : `~numpy.ndarray`
        int16 (H, W): frames with weight at each pixel (after the robust
        weights: a sample rejected as an outlier does not count).
    constrained : `~numpy.ndarray`
        bool (H, W): pixels with at least ``min_frames`` usable frames.
    levels : `~numpy.ndarray`
        Fitted relative level of each frame (mean 1).
    drift : `~aiflat_astro.registration.DriftPath`
    params : dict
    """

    gain: np.ndarray
    uncertainty: np.ndarray
    coverage: np.ndarray
    constrained: np.ndarray
    levels: np.ndarray
    drift: DriftPath
    params: dict = field(default_factory=dict)

    def provenance(self):
        """JSON-serialisable record (per-pixel method counts, drift, parameters)."""
        return {
            "method": "kll",
            "pixel_methods": {
                "kll": int(self.constrained.sum()),
                "unconstrained (1.0, LOW_TRANS)": int((~self.constrained).sum()),
            },
            "levels": [round(float(v), 6) for v in self.levels],
            "drift": self.drift.provenance(),
            "params": dict(self.params),
        }


# ---------------------------------------------------------------------------
# options
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class FullFlatOptions:
    """The options of `full_flat` and `solve_gain` besides their inputs (the same names as their keywords).

    Parameters
    ----------
    frame_levels, min_signal, min_frames, robust, kernel, n_robust, n_iter, tol
        The solver's (see `solve_gain`).
    max_frames, bin, mem_limit, registration, progress_bar
        Reading and registering the frames (see `full_flat`).

    Examples
    --------
    >>> FullFlatOptions(robust=False).n_robust
    3
    """

    frame_levels: bool = True
    min_signal: float = 0.3
    min_frames: int = 2
    robust: bool = True
    kernel: float = 3.0
    n_robust: int = 3
    n_iter: int = 60
    tol: float = 1e-5
    max_frames: int = 20
    bin: object = None
    mem_limit: object = "1GB"
    registration: object = None
    progress_bar: bool = False

    def __post_init__(self):
        if int(self.max_frames) < 2:
            raise InputError(f"max_frames must be >= 2, got {self.max_frames}")
        if self.bin is not None and int(self.bin) < 1:
            raise InputError(f"bin must be a positive integer, got {self.bin}")


#: The fields of `FullFlatOptions` that `solve_gain` takes as keywords.
_SOLVER_FIELDS = ("frame_levels", "min_signal", "min_frames", "robust", "kernel", "n_robust", "n_iter", "tol")


def _full_flat_options(options, keywords, allowed, caller):
    """`FullFlatOptions` from an ``options`` object and/or keywords (keywords win)."""
    if options is not None and not isinstance(options, FullFlatOptions):
        raise InputError(f"options must be a FullFlatOptions, got {type(options).__name__}")
    unknown = set(keywords) - set(allowed)
    if unknown:
        raise InputError(f"{caller} got unknown option(s) {', '.join(sorted(unknown))}")
    return replace(options or FullFlatOptions(), **keywords)


# ---------------------------------------------------------------------------
# the solver: inputs, the linear model, CGLS, robust rounds, gauge, errors
# ---------------------------------------------------------------------------
def _check_solver_inputs(frames, shifts, ignore):
    frames = np.asarray(frames)
    if frames.ndim != 3 or frames.shape[0] < 2:
        raise InputError(f"frames must be (n >= 2, H, W), got shape {frames.shape}")
    n = frames.shape[0]
    shifts = np.asarray(shifts, dtype=np.float64)
    if shifts.shape != (n, 2) or not np.all(np.isfinite(shifts)):
        raise InputError(f"shifts must be finite, of shape ({n}, 2), got {shifts.shape}")
    if ignore is not None:
        try:
            ignore = np.broadcast_to(np.asarray(ignore, dtype=bool), frames.shape)
        except ValueError:
            raise InputError(f"ignore of shape {np.shape(ignore)} does not match the frames "
                             f"{frames.shape}") from None
    return frames, shifts, ignore


def _log_samples(frames, min_signal, ignore):
    """Log-intensities and the 0/1 weight of the usable samples (bright enough, finite, not ignored)."""
    n, h, w = frames.shape
    logs = np.empty((n, h, w), np.float32)
    usable = np.empty((n, h, w), np.float32)
    for k in range(n):
        f = frames[k].astype(np.float64)
        finite = np.isfinite(f)
        top = np.percentile(f[finite], 99) if finite.any() else 0.0
        ok = finite & (f > max(float(min_signal) * top, 0.0)) & (f > 0)
        if ignore is not None:
            ok &= ~ignore[k]
        with np.errstate(divide="ignore", invalid="ignore"):
            logs[k] = np.where(ok, np.log(np.where(ok, f, 1.0)), 0.0)
        usable[k] = ok
    if not usable.any():
        raise InputError("no usable samples: the frames hold no signal above min_signal")
    return logs, usable


class _KLLModel:
    """The linear model ``l_k = g + S_k o + c_k`` and its adjoint, over a scene grid that holds every shift."""

    def __init__(self, sensor_shape, shifts, frame_levels):
        h, w = sensor_shape
        lo, hi = shifts.min(axis=0), shifts.max(axis=0)
        # o is sampled for pixel x of frame k at x - s_k + (hi + 3): +3 px for the cubic taps
        self.scene_shape = (int(np.ceil(h + hi[0] - lo[0])) + 7, int(np.ceil(w + hi[1] - lo[1])) + 7)
        self.samplers = [_Sampler((h, w), self.scene_shape, hi + 3.0 - s) for s in shifts]
        self.shape = (len(shifts), h, w)
        self.frame_levels = bool(frame_levels)

    def forward(self, g, o, c):
        out = np.empty(self.shape, np.float32)
        for k, sampler in enumerate(self.samplers):
            out[k] = g + sampler.forward(o) + c[k]
        return out

    def scene_adjoint(self, r):
        o = np.zeros(self.scene_shape, np.float32)
        for k, sampler in enumerate(self.samplers):
            sampler.adjoint(r[k], o)
        return o

    def adjoint(self, r):
        n = self.shape[0]
        c = r.reshape(n, -1).sum(axis=1, dtype=np.float64) if self.frame_levels else np.zeros(n)
        return r.sum(axis=0, dtype=np.float32), self.scene_adjoint(r), c

    def jacobi(self, weights):
        """The diagonal (Jacobi) preconditioner ``1 / sqrt(diag(A^T W A))`` of each block."""
        def inverse_sqrt(d, floor):
            return np.where(d > floor, 1.0 / np.sqrt(np.maximum(d, 1e-12)), 0.0)

        dc = weights.reshape(self.shape[0], -1).sum(axis=1, dtype=np.float64)
        pc = inverse_sqrt(dc, 0) if self.frame_levels else np.zeros(self.shape[0])
        return (inverse_sqrt(weights.sum(axis=0), 0).astype(np.float32),
                inverse_sqrt(self.scene_adjoint(weights), 1e-3).astype(np.float32), pc)


def _cgls(model, logs, weights, start, n_iter, tol):
    """Preconditioned CGLS on ``min || sqrt(W) (A z - l) ||`` from ``start``; returns ``z`` and the iterations."""
    pre = model.jacobi(weights)
    sw = np.sqrt(weights)

    def scaled_gradient(resid):
        return [p * a for p, a in zip(pre, model.adjoint(sw * resid))]

    def dot(a, b):
        return float(sum(np.vdot(x, y) for x, y in zip(a, b)))

    resid = sw * (logs - model.forward(*start))
    s = scaled_gradient(resid)
    direction = [x.copy() for x in s]
    gamma = gamma0 = dot(s, s)
    y = [np.zeros_like(start[0]), np.zeros_like(start[1]), np.zeros(len(start[2]))]
    it = 0
    for it in range(1, int(n_iter) + 1):
        q = sw * model.forward(*(p * d for p, d in zip(pre, direction)))
        qq = float(np.vdot(q, q))
        if not qq > 0:
            break
        alpha = gamma / qq
        for part, d in zip(y, direction):
            part += alpha * d
        resid -= alpha * q
        s = scaled_gradient(resid)
        gamma_new = dot(s, s)
        if gamma_new <= (tol ** 2) * gamma0:
            break
        beta, gamma = gamma_new / gamma, gamma_new
        direction = [x + beta * d for x, d in zip(s, direction)]
    return tuple(z + p * part for z, p, part in zip(start, pre, y)), it


def _robust_rounds(model, logs, usable, opts):
    """CGLS rounds reweighted by the correntropy kernel; the solution, final weights, scatter and history."""
    n, h, w = model.shape
    z = (np.zeros((h, w), np.float32), np.zeros(model.scene_shape, np.float32), np.zeros(n))
    weights = usable.copy()
    n_rounds = max(1, int(opts.n_robust) if opts.robust else 1)
    total, sigma, history = 0, np.nan, []
    for rnd in range(n_rounds):
        z, it = _cgls(model, logs, weights, z, int(opts.n_iter) * (2 if rnd == 0 else 1), opts.tol)
        total += it
        r = logs - model.forward(*z)
        sigma = robust_sigma(r[usable > 0])
        history.append({"round": rnd, "iterations": it, "sigma": round(sigma, 7)})
        log.info("KLL round %d: %d CG iterations, residual sigma %.2e", rnd, it, sigma)
        if opts.robust and sigma > 0 and rnd + 1 < opts.n_robust:
            weights = usable * np.exp(-0.5 * (r / (float(opts.kernel) * sigma)) ** 2).astype(np.float32)
        del r
    return z, weights, sigma, {"iterations": int(total), "rounds": history}


def _gauge_fixed_gain(g, constrained, frame_levels):
    """``exp(g)`` with the plane (free levels) and the median over the constrained pixels removed; 1 elsewhere."""
    h, w = g.shape
    if frame_levels:
        yy, xx = np.nonzero(constrained)
        a = np.column_stack([np.ones(yy.size), (yy - h / 2) / h, (xx - w / 2) / w])
        coef, *_ = np.linalg.lstsq(a, g[constrained].astype(np.float64), rcond=None)
        yg, xg = np.mgrid[0:h, 0:w]
        g = g - (coef[1] * (yg - h / 2) / h + coef[2] * (xg - w / 2) / w).astype(np.float32)
    g = g - np.float32(np.median(g[constrained]))
    gain = np.where(constrained, np.exp(g.astype(np.float64)), 1.0)
    return gain / np.median(gain[constrained])


def _gain_error(model, weights, gain, sigma, constrained):
    """Standard error: the residual scatter over the weight of the pixel and of its scene points."""
    scene = model.scene_adjoint(weights)
    inv_scene = np.where(scene > 1e-3, 1.0 / np.maximum(scene, 1e-3), 0.0).astype(np.float32)
    scene_w = np.zeros(gain.shape)
    for k, sampler in enumerate(model.samplers):
        scene_w += weights[k] * sampler.forward(inv_scene)
    wsum = np.maximum(weights.sum(axis=0).astype(np.float64), 1e-6)
    var = sigma**2 * (1.0 / wsum + np.abs(scene_w) / wsum**2)
    return np.nan_to_num(np.where(constrained, gain * np.sqrt(var), 0.0)).astype(np.float32)


def solve_gain(frames, shifts, *, ignore=None, options=None, valid=None, **keywords):
    """Solve ``log I_k(x) = g(x) + o(x - s_k) + c_k`` for the log-gain ``g`` (robust CGLS).

    Parameters
    ----------
    frames : `~numpy.ndarray`
        (n, H, W) frames (dark-subtracted), all in memory (bin them first
        for large frames: `full_flat` does).
    shifts : array-like
        (n, 2) scene shifts ``(dy, dx)``: ``frame_k(y, x) = gain * scene(y - dy_k, x - dx_k)``.
    ignore : `~numpy.ndarray` of bool, optional
        (n, H, W) or (H, W): True for samples not to use (default: none;
        non-finite samples are never used).
    options : `FullFlatOptions`, optional
        The solver options below as one object; keywords given as well override it.
    frame_levels : bool, optional
        Fit a level per frame (default `True`; see the module notes on the plane).
    min_signal : float, optional
        Samples below this fraction of the frame's 99th percentile (sky,
        the limb) are left out.  Default 0.3.
    min_frames : int, optional
        A pixel is constrained when at least this many frames use it.  Default 2.
    robust : bool, optional
        Iteratively reweighted with the correntropy kernel.  Default `True`.
    kernel : float, optional
        Width of the Gaussian kernel in robust sigmas.  Default 3.
    n_robust : int, optional
        Reweighting rounds.  Default 3.
    n_iter : int, optional
        CGLS iterations per round (the first round gets twice as many).  Default 60.
    tol : float, optional
        Relative tolerance on the normal-equation residual.  Default 1e-5.
    valid : `~numpy.ndarray` of bool, optional
        Deprecated: the samples that may be used (``ignore=~valid``).

    Returns
    -------
    gain, uncertainty, coverage, levels : `~numpy.ndarray`
        float32 gain (median 1 over the constrained pixels, 1 elsewhere),
        its standard error, int16 coverage, and the frame levels.
    info : dict
        Iterations, residual scatter, robust rounds.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> yy, xx = np.mgrid[0:120, 0:120]
    >>> scene = 1 + 0.3 * np.sin(xx / 9.0) * np.cos(yy / 7.0)
    >>> gain = 1 + 0.02 * rng.standard_normal((64, 64))
    >>> shifts = np.array([(0, 0), (5, 17), (-12, 3), (20, -15), (-7, -22)])
    >>> frames = np.array([gain * scene[28 - dy:92 - dy, 28 - dx:92 - dx] for dy, dx in shifts])
    >>> g, err, cov, lev, info = solve_gain(frames, shifts, min_signal=0.0)
    >>> bool(np.corrcoef(g.ravel(), gain.ravel())[0, 1] > 0.99)
    True
    """
    if valid is not None:
        ignore = renamed_keyword("solve_gain", "valid", "ignore=~valid", ~np.asarray(valid, dtype=bool),
                                 given=ignore)
    opts = _full_flat_options(options, keywords, _SOLVER_FIELDS, "solve_gain")
    frames, shifts, ignore = _check_solver_inputs(frames, shifts, ignore)
    logs, usable = _log_samples(frames, opts.min_signal, ignore)
    model = _KLLModel(frames.shape[1:], shifts, opts.frame_levels)
    (g, _, c), weights, sigma, info = _robust_rounds(model, logs, usable, opts)
    coverage = (weights > 0.5).sum(axis=0).astype(np.int16)
    constrained = coverage >= int(opts.min_frames)
    if not constrained.any():
        raise InputError("no pixel is constrained by the offsets (too few usable frames)")
    gain = _gauge_fixed_gain(g, constrained, opts.frame_levels)
    err = _gain_error(model, weights, gain, sigma, constrained)
    levels = np.exp(c - np.mean(c)) if opts.frame_levels else np.ones(len(c))
    info.update({"residual_sigma": round(float(sigma), 7), "scene_shape": list(model.scene_shape)})
    info = {key: info[key] for key in ("iterations", "residual_sigma", "rounds", "scene_shape")}
    return gain.astype(np.float32), err, coverage, levels, info


# ---------------------------------------------------------------------------
# the whole sensor: register, read binned, solve, replicate back
# ---------------------------------------------------------------------------
def _bin_for(shape, n, budget):
    """Smallest binning that keeps the solver's arrays within ``budget`` bytes."""
    per_px = 4 * 6 * n + 64  # logs, weights, work stacks (float32) per frame, plus maps
    b = 1
    while (shape[0] // b) * (shape[1] // b) * per_px > budget and b < 64:
        b += 1
    return b


def _registered_frames(source, drift, dust_mask, opts):
    """The drift (registered here when not given) and the frame indices and shifts to solve, at most max_frames."""
    if drift is None:
        registration = dict(opts.registration or {})
        registration.setdefault("max_frames", int(opts.max_frames))
        registration.setdefault("progress_bar", opts.progress_bar)
        drift = register_frames(source, dust_mask=dust_mask, **registration)
    idx = np.asarray(drift.frame_index)
    shifts = np.asarray(drift.shifts, dtype=np.float64)
    if idx.size > int(opts.max_frames):
        pick = spread_indices(idx.size, int(opts.max_frames))
        idx, shifts = idx[pick], shifts[pick]
    if idx.size < 2:
        raise InputError("a full flat needs at least 2 registered frames")
    return drift, idx, shifts


def _read_binned_stack(frames, drift, dust_mask, opts):
    """Register if needed and read the chosen frames binned to fit ``mem_limit``."""
    budget = parse_size(opts.mem_limit)
    with opened_frames(frames) as source:
        shape = tuple(source.frame_shape)[:2]
        if dust_mask is not None:
            dust_mask = np.asarray(dust_mask, dtype=bool)
            if dust_mask.shape != shape:
                raise InputError(f"dust_mask shape {dust_mask.shape} does not match the frames {shape}")
        drift, idx, shifts = _registered_frames(source, drift, dust_mask, opts)
        b = int(opts.bin) if opts.bin is not None else _bin_for(shape, idx.size, budget)
        stack = np.empty((idx.size, shape[0] // b, shape[1] // b), np.float32)
        for n, frame in enumerate(_binned_frames(source, idx, b)):
            stack[n] = frame
    return stack, shape, drift, idx, shifts, b


def _unbinned(arrays, shape, b):
    """Replicate binned maps back to the sensor grid (gain 1, error and coverage 0 on the uncovered edge)."""
    if b == 1:
        return arrays
    out = []
    for src, fill in zip(arrays, (1.0, 0.0, 0)):
        dst = np.full(shape, fill, src.dtype)
        up = np.repeat(np.repeat(src, b, axis=0), b, axis=1)
        dst[:up.shape[0], :up.shape[1]] = up
        out.append(dst)
    return out


def _full_flat_params(opts, b, idx, info):
    params = {"solver": "weighted least squares, CGLS, Jacobi preconditioner",
              "interpolation": "scene only, Keys cubic (sub-pixel shifts)",
              "robust": f"correntropy (Gaussian kernel, {opts.kernel:g} sigma) IRLS" if opts.robust else "none",
              "frame_levels": bool(opts.frame_levels), "bin": int(b), "n_frames_used": int(idx.size),
              "frame_index": [int(i) for i in idx], "min_frames": int(opts.min_frames),
              "min_signal": float(opts.min_signal), "plane_fixed": bool(opts.frame_levels)}
    params.update(info)
    return params


def full_flat(frames, *, drift=None, dust_mask=None, options=None, **keywords):
    """The whole gain table of the sensor from a set of shifted frames.

    Frames are registered (`~aiflat_astro.registration.register_frames`,
    any shift size) and streamed once: at most ``max_frames`` of them,
    spread over the set (a video is not loaded whole), each binned by
    ``bin`` on reading if needed to fit ``mem_limit`` (as BBSO does; the
    flat is then replicated back to full resolution).

    Parameters
    ----------
    frames : str, path, list, `~numpy.ndarray` or frame source
        Anything `aiflat_astro.io.open_frames` accepts (dark-subtracted).
    drift : `~aiflat_astro.registration.DriftPath`, optional
        A registration of ``frames``; computed when not given.
    dust_mask : `~numpy.ndarray` of bool, optional
        Dust pixels, used only to keep the dust out of the registration
        (the full flat contains the dust shadows).
    options : `FullFlatOptions`, optional
        The options below (and those of `solve_gain`) as one object;
        keywords given as well override it.
    max_frames : int, optional
        Default 20.
    bin : int, optional
        Binning factor; default the smallest that fits ``mem_limit``.
    mem_limit : str or int, optional
        Default ``'1GB'`` (a 2032 x 2032 set of 9 frames is solved binned 2 x 2).
    frame_levels, min_signal, min_frames, robust, kernel, n_robust, n_iter, tol :
        See `solve_gain`.
    registration : dict, optional
        Options for `~aiflat_astro.registration.register_frames`.
    progress_bar : bool, optional
        A progress bar for the registration.

    Returns
    -------
    `FullFlat`

    Raises
    ------
    InputError
        Unreadable frames, bad options, or no pixel constrained.

    Examples
    --------
    >>> from aiflat_astro.datasets.kll import make_kll_set
    >>> s = make_kll_set(shape=(128, 128), n_frames=5, max_offset=30, seed=1)
    >>> ff = full_flat(s.frames, robust=False)   # doctest: +SKIP
    >>> ff.gain.shape                            # doctest: +SKIP
    (128, 128)
    """
    opts = _full_flat_options(options, keywords, [f.name for f in fields(FullFlatOptions)], "full_flat")
    stack, shape, drift, idx, shifts, b = _read_binned_stack(frames, drift, dust_mask, opts)
    major, minor, _ = drift.extent
    if minor < 2.0 * b:
        warn_user(f"the offsets span only {major:.1f} x {minor:.1f} px: the full flat is poorly "
                  "constrained across the short axis", AiflatUserWarning)
    # binned shifts: a binned pixel j covers sensor pixels b j .. b j + b - 1
    gain_b, err_b, cov_b, levels, info = solve_gain(stack, shifts / b, options=opts)
    del stack
    gain, err, cov = _unbinned((gain_b, err_b, cov_b), shape, b)
    constrained = cov >= int(opts.min_frames)
    gain = np.where(constrained, gain, 1.0).astype(np.float32)
    log.info("full flat: %d frames, bin %d, %d of %d px constrained", idx.size, b,
             int(constrained.sum()), constrained.size)
    return FullFlat(gain=gain, uncertainty=err, coverage=cov, constrained=constrained,
                    levels=levels, drift=drift, params=_full_flat_params(opts, b, idx, info))


def make_full_flat(median, frames, *, detection=None, drift=None, dust_mask=None, **options):
    """The full flat as a `~astropy.nddata.CCDData` ready for ``write_flat`` (`make_flat(..., full=True)`).

    The flat is the whole gain table, **not** 1.0 outside the dust: the
    header says so (``FLATTYPE = 'FULL'``).  DQ: ``LOW_TRANS`` where no
    offset constrains the gain (flat 1.0 there), ``DUST`` / ``DUST_HALO``
    from ``detection`` when it is a detection or a DQ array.  ``UNCERT``
    holds the standard error.

    Parameters
    ----------
    median : `~astropy.nddata.CCDData` or `~numpy.ndarray` or None
        The median of the frames (its header's provenance cards are kept;
        its shape is checked).
    frames :
        The shifted frames (see `full_flat`).
    detection : `~aiflat_astro.detection.DustDetection`, bool or uint8 DQ array, optional
        The dust (kept out of the registration; its DQ bits are copied).
    drift : `~aiflat_astro.registration.DriftPath`, optional
    dust_mask : optional
        Deprecated name of ``detection``.
    **options
        Passed to `full_flat`.

    Returns
    -------
    `~astropy.nddata.CCDData`
    """
    if dust_mask is not None:
        detection = renamed_keyword("make_full_flat", "dust_mask", "detection", dust_mask, given=detection)
    import astropy.units as u
    from astropy.io import fits
    from astropy.nddata import CCDData, StdDevUncertainty

    from ..dq import DustDQ
    from ._header import _flat_header

    if frames is None:
        raise InputError("a full flat needs the shifted frames (frames=..., or --video on the "
                         "command line)")
    header = getattr(median, "meta", None) or getattr(median, "header", None) or fits.Header()
    header = header if isinstance(header, fits.Header) else fits.Header()
    dq, mask = _dust_dq(detection)
    ff = full_flat(frames, drift=drift, dust_mask=mask, **options)
    if median is not None:
        med_shape = np.shape(getattr(median, "data", median))
        if tuple(med_shape) != ff.gain.shape:
            raise InputError(f"median shape {med_shape} does not match the frames {ff.gain.shape}")
    flags = np.zeros(ff.gain.shape, np.uint8) if dq is None else dq.copy()
    flags[~ff.constrained] |= np.uint8(DustDQ.LOW_TRANS)
    out_header = _flat_header(header, _full_flat_provenance(ff, header, detection, dq))
    out_header["FLATTYPE"] = ("FULL", "whole gain table: NOT 1.0 outside the dust")
    return CCDData(ff.gain, unit=u.dimensionless_unscaled, flags=flags,
                   uncertainty=StdDevUncertainty(ff.uncertainty), meta=out_header)


def _dust_dq(detection):
    """``(uint8 DQ, bool DUST mask)`` of a detection, a DQ array or a bool mask (``(None, None)`` for none)."""
    from ..dq import DustDQ

    if detection is None:
        return None, None
    arr = np.asarray(getattr(detection, "dq", detection))
    if arr.dtype == bool:
        return np.where(arr, np.uint8(DustDQ.DUST), np.uint8(0)), arr
    dq = arr.astype(np.uint8)
    return dq, (dq & DustDQ.DUST) > 0


def _full_flat_provenance(ff, header, detection, dq):
    """The provenance record of a full flat for `~aiflat_astro.flat._header._flat_header`."""
    from ..provenance import sha256_array
    from ._header import _json_safe, _median_inputs

    prov = {"inputs": _median_inputs(header),
            "detector": getattr(detection, "detector", "user" if detection is not None else "none"),
            "inpaint": "full-flat (kll)",
            "input_sha256": sha256_array(ff.gain),
            "params": {"FLATTYPE": "FULL", "NFRMUSED": ff.params["n_frames_used"],
                       "KLLBIN": ff.params["bin"], "NCONSTR": int(ff.constrained.sum())},
            "inpaint_info": _json_safe(ff.provenance()),
            "history": ["full flat (whole gain table) from shifted images: robust KLL/Chae "
                        "least squares",
                        "NOT 1.0 outside the dust: pixel response, vignetting and dust"]}
    if dq is not None:
        prov["mask_sha256"] = sha256_array(np.asarray(dq))
    return prov
