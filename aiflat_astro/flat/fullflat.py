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
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from ..registration import DriftPath, _binned_frames, _open_source, register_frames
from ..io.frames import spread_indices
from ..utils._atomic import parse_size
from ..utils.exceptions import AiflatUserWarning, InputError, warn_user

__all__ = ["FullFlat", "solve_gain", "full_flat", "make_full_flat"]

log = logging.getLogger(__name__)

_MAD_TO_SIGMA = 1.4826


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
# the solver
# ---------------------------------------------------------------------------
def _robust_sigma(values):
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0
    return float(_MAD_TO_SIGMA * np.median(np.abs(values - np.median(values))))


def solve_gain(frames, shifts, *, valid=None, frame_levels=True, min_signal=0.3, min_frames=2,
               robust=True, kernel=3.0, n_robust=3, n_iter=60, tol=1e-5):
    """Solve ``log I_k(x) = g(x) + o(x - s_k) + c_k`` for the log-gain ``g`` (robust CGLS).

    Parameters
    ----------
    frames : `~numpy.ndarray`
        (n, H, W) frames (dark-subtracted), all in memory (bin them first
        for large frames: `full_flat` does).
    shifts : array-like
        (n, 2) scene shifts ``(dy, dx)``: ``frame_k(y, x) = gain * scene(y - dy_k, x - dx_k)``.
    valid : `~numpy.ndarray` of bool, optional
        (n, H, W) or (H, W) samples that may be used (default: all finite).
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
    frames = np.asarray(frames)
    if frames.ndim != 3 or frames.shape[0] < 2:
        raise InputError(f"frames must be (n >= 2, H, W), got shape {frames.shape}")
    n, h, w = frames.shape
    shifts = np.asarray(shifts, dtype=np.float64)
    if shifts.shape != (n, 2) or not np.all(np.isfinite(shifts)):
        raise InputError(f"shifts must be finite, of shape ({n}, 2), got {shifts.shape}")
    if valid is not None:
        valid = np.broadcast_to(np.asarray(valid, dtype=bool), frames.shape)
    # log data and weights
    logs = np.empty((n, h, w), np.float32)
    w0 = np.empty((n, h, w), np.float32)
    for k in range(n):
        f = frames[k].astype(np.float64)
        finite = np.isfinite(f)
        top = np.percentile(f[finite], 99) if finite.any() else 0.0
        ok = finite & (f > max(float(min_signal) * top, 0.0)) & (f > 0)
        if valid is not None:
            ok &= valid[k]
        with np.errstate(divide="ignore", invalid="ignore"):
            logs[k] = np.where(ok, np.log(np.where(ok, f, 1.0)), 0.0)
        w0[k] = ok
    if not w0.any():
        raise InputError("no usable samples: the frames hold no signal above min_signal")
    # scene grid: the sensor grid extended by the shift range (+3 px for the cubic taps)
    lo, hi = shifts.min(axis=0), shifts.max(axis=0)
    offset = -lo + 3.0      # scene-grid position of u = x - s_k is x - s_k + hi ... see below
    # position of o sampled for pixel x in frame k: x - s_k + (hi + 3)
    base = hi + 3.0
    scene_shape = (int(np.ceil(h + hi[0] - lo[0])) + 7, int(np.ceil(w + hi[1] - lo[1])) + 7)
    samplers = [_Sampler((h, w), scene_shape, base - shifts[k]) for k in range(n)]
    del offset

    weights = w0.copy()

    def forward(g, o, c):
        out = np.empty((n, h, w), np.float32)
        for k in range(n):
            out[k] = g + samplers[k].forward(o) + c[k]
        return out

    def adjoint(r):
        # r already weighted
        g = r.sum(axis=0, dtype=np.float32)
        o = np.zeros(scene_shape, np.float32)
        for k in range(n):
            samplers[k].adjoint(r[k], o)
        c = r.reshape(n, -1).sum(axis=1, dtype=np.float64) if frame_levels else np.zeros(n)
        return g, o, c

    g = np.zeros((h, w), np.float32)
    o = np.zeros(scene_shape, np.float32)
    c = np.zeros(n)
    total_iter = 0
    sigma = np.nan
    history = []
    for rnd in range(max(1, int(n_robust) if robust else 1)):
        # Jacobi preconditioner from the current weights
        dg = weights.sum(axis=0)
        do = np.zeros(scene_shape, np.float32)
        for k in range(n):
            samplers[k].adjoint(weights[k], do)
        dc = weights.reshape(n, -1).sum(axis=1, dtype=np.float64)
        pg = np.where(dg > 0, 1.0 / np.sqrt(np.maximum(dg, 1e-12)), 0.0).astype(np.float32)
        po = np.where(do > 1e-3, 1.0 / np.sqrt(np.maximum(do, 1e-12)), 0.0).astype(np.float32)
        pc = np.where(dc > 0, 1.0 / np.sqrt(np.maximum(dc, 1e-12)), 0.0) if frame_levels \
            else np.zeros(n)
        sw = np.sqrt(weights)
        # CGLS on  min || sqrt(W) (A P y - (l - A z0)) ||, z = z0 + P y
        resid = sw * (logs - forward(g, o, c))
        ag, ao, ac = adjoint(sw * resid)
        sg, so, sc = pg * ag, po * ao, pc * ac
        pg_, po_, pc_ = sg.copy(), so.copy(), sc.copy()
        gamma = float(np.vdot(sg, sg) + np.vdot(so, so) + np.dot(sc, sc))
        gamma0 = gamma
        yg = np.zeros_like(g)
        yo = np.zeros_like(o)
        yc = np.zeros(n)
        iters = int(n_iter) * (2 if rnd == 0 else 1)
        it = 0
        for it in range(1, iters + 1):
            q = sw * forward(pg * pg_, po * po_, pc * pc_)
            qq = float(np.vdot(q, q))
            if not qq > 0:
                break
            alpha = gamma / qq
            yg += alpha * pg_
            yo += alpha * po_
            yc += alpha * pc_
            resid -= alpha * q
            ag, ao, ac = adjoint(sw * resid)
            sg, so, sc = pg * ag, po * ao, pc * ac
            gamma_new = float(np.vdot(sg, sg) + np.vdot(so, so) + np.dot(sc, sc))
            if gamma_new <= (tol ** 2) * gamma0:
                break
            beta = gamma_new / gamma
            gamma = gamma_new
            pg_ = sg + beta * pg_
            po_ = so + beta * po_
            pc_ = sc + beta * pc_
        total_iter += it
        g = g + pg * yg
        o = o + po * yo
        c = c + pc * yc
        r = (logs - forward(g, o, c))
        sigma = _robust_sigma(r[w0 > 0])
        history.append({"round": rnd, "iterations": it, "sigma": round(sigma, 7)})
        log.info("KLL round %d: %d CG iterations, residual sigma %.2e", rnd, it, sigma)
        if robust and sigma > 0 and rnd + 1 < n_robust:
            weights = w0 * np.exp(-0.5 * (r / (float(kernel) * sigma)) ** 2).astype(np.float32)
        del r
    coverage = (weights > 0.5).sum(axis=0).astype(np.int16)
    constrained = coverage >= int(min_frames)
    if not constrained.any():
        raise InputError("no pixel is constrained by the offsets (too few usable frames)")
    # gauge: remove the plane (with free levels) and the median over the constrained pixels
    yy, xx = np.nonzero(constrained)
    if frame_levels:
        a = np.column_stack([np.ones(yy.size), (yy - h / 2) / h, (xx - w / 2) / w])
        coef, *_ = np.linalg.lstsq(a, g[constrained].astype(np.float64), rcond=None)
        yg_, xg_ = np.mgrid[0:h, 0:w]
        g = g - (coef[1] * (yg_ - h / 2) / h + coef[2] * (xg_ - w / 2) / w).astype(np.float32)
    g = g - np.float32(np.median(g[constrained]))
    gain = np.where(constrained, np.exp(g.astype(np.float64)), 1.0)
    gain /= np.median(gain[constrained])
    # standard error: residual scatter over the weight of the pixel and of its scene points
    wsum = weights.sum(axis=0)
    do = np.zeros(scene_shape, np.float32)
    for k in range(n):
        samplers[k].adjoint(weights[k], do)
    scene_w = np.zeros((h, w))
    inv_do = np.where(do > 1e-3, 1.0 / np.maximum(do, 1e-3), 0.0).astype(np.float32)
    for k in range(n):
        scene_w += weights[k] * samplers[k].forward(inv_do)
    wsum = np.maximum(wsum.astype(np.float64), 1e-6)
    var = sigma**2 * (1.0 / wsum + np.abs(scene_w) / wsum**2)
    err = np.where(constrained, gain * np.sqrt(var), 0.0)
    levels = np.exp(c - np.mean(c)) if frame_levels else np.ones(n)
    info = {"iterations": int(total_iter), "residual_sigma": round(float(sigma), 7),
            "rounds": history, "scene_shape": list(scene_shape)}
    return (gain.astype(np.float32), np.nan_to_num(err).astype(np.float32), coverage,
            levels, info)


def _bin_for(shape, n, budget):
    """Smallest binning that keeps the solver's arrays within ``budget`` bytes."""
    per_px = 4 * 6 * n + 64  # logs, weights, work stacks (float32) per frame, plus maps
    b = 1
    while (shape[0] // b) * (shape[1] // b) * per_px > budget and b < 64:
        b += 1
    return b


def full_flat(frames, *, drift=None, dust_mask=None, max_frames=20, bin=None, mem_limit="1GB",
              min_frames=2, frame_levels=True, robust=True, min_signal=0.3, registration=None,
              progress_bar=False):
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
    max_frames : int, optional
        Default 20.
    bin : int, optional
        Binning factor; default the smallest that fits ``mem_limit``.
    mem_limit : str or int, optional
        Default ``'1GB'`` (a 2032 x 2032 set of 9 frames is solved binned 2 x 2).
    min_frames, frame_levels, robust, min_signal :
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
    """
    max_frames = int(max_frames)
    if max_frames < 2:
        raise InputError(f"max_frames must be >= 2, got {max_frames}")
    budget = parse_size(mem_limit)
    with _open_source(frames) as source:
        shape = tuple(source.frame_shape)[:2]
        if dust_mask is not None:
            dust_mask = np.asarray(dust_mask, dtype=bool)
            if dust_mask.shape != shape:
                raise InputError(f"dust_mask shape {dust_mask.shape} does not match the frames "
                                 f"{shape}")
        if drift is None:
            opts = dict(registration or {})
            opts.setdefault("max_frames", max_frames)
            opts.setdefault("progress_bar", progress_bar)
            drift = register_frames(source, dust_mask=dust_mask, **opts)
        idx = np.asarray(drift.frame_index)
        shifts = np.asarray(drift.shifts, dtype=np.float64)
        if idx.size > max_frames:
            pick = spread_indices(idx.size, max_frames)
            idx, shifts = idx[pick], shifts[pick]
        if idx.size < 2:
            raise InputError("a full flat needs at least 2 registered frames")
        b = int(bin) if bin is not None else _bin_for(shape, idx.size, budget)
        if b < 1:
            raise InputError(f"bin must be a positive integer, got {bin}")
        hb, wb = shape[0] // b, shape[1] // b
        stack = np.empty((idx.size, hb, wb), np.float32)
        for n, frame in enumerate(_binned_frames(source, idx, b)):
            stack[n] = frame
    major, minor, _ = drift.extent
    if minor < 2.0 * b:
        warn_user(f"the offsets span only {major:.1f} x {minor:.1f} px: the full flat is poorly "
                  "constrained across the short axis", AiflatUserWarning)
    # binned shifts: a binned pixel j covers sensor pixels b j .. b j + b - 1
    gain_b, err_b, cov_b, levels, info = solve_gain(
        stack, shifts / b, frame_levels=frame_levels, min_signal=min_signal,
        min_frames=min_frames, robust=robust)
    del stack
    if b > 1:
        gain = np.ones(shape, np.float32)
        err = np.zeros(shape, np.float32)
        cov = np.zeros(shape, np.int16)
        for src, dst in ((gain_b, gain), (err_b, err), (cov_b, cov)):
            up = np.repeat(np.repeat(src, b, axis=0), b, axis=1)
            dst[:up.shape[0], :up.shape[1]] = up
    else:
        gain, err, cov = gain_b, err_b, cov_b
    constrained = cov >= int(min_frames)
    gain = np.where(constrained, gain, 1.0).astype(np.float32)
    params = {"solver": "weighted least squares, CGLS, Jacobi preconditioner",
              "interpolation": "scene only, Keys cubic (sub-pixel shifts)",
              "robust": "correntropy (Gaussian kernel, 3 sigma) IRLS" if robust else "none",
              "frame_levels": bool(frame_levels), "bin": int(b), "n_frames_used": int(idx.size),
              "frame_index": [int(i) for i in idx], "min_frames": int(min_frames),
              "min_signal": float(min_signal), "plane_fixed": bool(frame_levels)}
    params.update(info)
    log.info("full flat: %d frames, bin %d, %d of %d px constrained", idx.size, b,
             int(constrained.sum()), constrained.size)
    return FullFlat(gain=gain, uncertainty=err, coverage=cov, constrained=constrained,
                    levels=levels, drift=drift, params=params)


def make_full_flat(median, frames, *, dust_mask=None, drift=None, **options):
    """The full flat as a `~astropy.nddata.CCDData` ready for ``write_flat`` (`make_flat(..., full=True)`).

    The flat is the whole gain table, **not** 1.0 outside the dust: the
    header says so (``FLATTYPE = 'FULL'``).  DQ: ``LOW_TRANS`` where no
    offset constrains the gain (flat 1.0 there), ``DUST`` / ``DUST_HALO``
    from ``dust_mask`` when it is a detection or a DQ array.  ``UNCERT``
    holds the standard error.

    Parameters
    ----------
    median : `~astropy.nddata.CCDData` or `~numpy.ndarray` or None
        The median of the frames (its header's provenance cards are kept;
        its shape is checked).
    frames :
        The shifted frames (see `full_flat`).
    dust_mask : `~aiflat_astro.detection.DustDetection`, bool or uint8 DQ array, optional
        The dust (kept out of the registration; its DQ bits are copied).
    drift : `~aiflat_astro.registration.DriftPath`, optional
    **options
        Passed to `full_flat`.

    Returns
    -------
    `~astropy.nddata.CCDData`
    """
    import astropy.units as u
    from astropy.io import fits
    from astropy.nddata import CCDData, StdDevUncertainty

    from ..dq import DustDQ
    from ._header import _flat_header, _json_safe, _median_inputs
    from ..provenance import sha256_array

    if frames is None:
        raise InputError("a full flat needs the shifted frames (frames=..., or --video on the "
                         "command line)")
    header = getattr(median, "meta", None) or getattr(median, "header", None) or fits.Header()
    dq = None
    mask = None
    if dust_mask is not None:
        arr = getattr(dust_mask, "dq", dust_mask)
        arr = np.asarray(arr)
        if arr.dtype == bool:
            mask = arr
            dq = np.where(arr, np.uint8(DustDQ.DUST), np.uint8(0))
        else:
            dq = arr.astype(np.uint8)
            mask = (dq & DustDQ.DUST) > 0
    ff = full_flat(frames, drift=drift, dust_mask=mask, **options)
    if median is not None:
        med_shape = np.shape(getattr(median, "data", median))
        if tuple(med_shape) != ff.gain.shape:
            raise InputError(f"median shape {med_shape} does not match the frames {ff.gain.shape}")
    flags = np.zeros(ff.gain.shape, np.uint8) if dq is None else dq.copy()
    flags[~ff.constrained] |= np.uint8(DustDQ.LOW_TRANS)
    prov = {"inputs": _median_inputs(header) if isinstance(header, fits.Header) else [],
            "detector": getattr(dust_mask, "detector", "user" if dust_mask is not None else "none"),
            "inpaint": "full-flat (kll)",
            "input_sha256": sha256_array(ff.gain),
            "params": {"FLATTYPE": "FULL", "NFRMUSED": ff.params["n_frames_used"],
                       "KLLBIN": ff.params["bin"], "NCONSTR": int(ff.constrained.sum())},
            "inpaint_info": _json_safe(ff.provenance()),
            "history": ["full flat (whole gain table) from shifted images: robust KLL/Chae "
                        "least squares",
                        "NOT 1.0 outside the dust: pixel response, vignetting and dust"]}
    if mask is not None:
        prov["mask_sha256"] = sha256_array(np.asarray(dq))
    out_header = _flat_header(header if isinstance(header, fits.Header) else fits.Header(), prov)
    out_header["FLATTYPE"] = ("FULL", "whole gain table: NOT 1.0 outside the dust")
    return CCDData(ff.gain, unit=u.dimensionless_unscaled, flags=flags,
                   uncertainty=StdDevUncertainty(ff.uncertainty), meta=out_header)
