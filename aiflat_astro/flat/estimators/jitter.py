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

import logging

import numpy as np
from scipy import ndimage, sparse
from scipy.sparse import linalg as splinalg

from ...utils.exceptions import InputError

__all__ = ["JITTER_MIN_R2", "jitter_clean"]

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

    def __init__(self, label, region, masked, median, invalid, window, *, gap, max_reg_pixels, n_terms):
        (self.y0, self.y1), (self.x0, self.x1) = window
        self.label = label
        self.region = region                         # this shadow's pixels (box coordinates)
        self.unknown = masked | invalid               # every pixel the integration solves for
        self.median = median
        far = ~ndimage.binary_dilation(masked | invalid, iterations=gap) if gap > 0 else ~(masked | invalid)
        far[:3, :] = far[-3:, :] = far[:, :3] = far[:, -3:] = False
        ys, xs = np.nonzero(far)
        if ys.size > max_reg_pixels:                  # the nearest pixels to the shadow
            dist = ndimage.distance_transform_edt(~region)[ys, xs]
            keep = np.argsort(dist, kind="stable")[:max_reg_pixels]
            ys, xs = ys[keep], xs[keep]
        self.reg_y, self.reg_x = ys.astype(np.float64), xs.astype(np.float64)
        self.reg_ref = median[ys, xs]
        self.coeffs = ndimage.spline_filter(median, order=3, mode="nearest")
        self.sums = np.zeros((n_terms,) + median.shape)
        self.gram = np.zeros((n_terms, n_terms))
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
        return ndimage.map_coordinates(self.coeffs, [cy, cx], order=3, mode="nearest", prefilter=False)

    def register(self, cut, start, *, iterations, fixed=False):
        """Gauss–Newton fit of ``cut ≈ c · median(x − d)`` on the registration pixels.

        With ``fixed`` the shift stays at ``start`` and only the level ``c`` is fitted.
        """
        b = cut[self.reg_y.astype(np.intp), self.reg_x.astype(np.intp)]
        d = np.array(start, dtype=np.float64)
        c = float(np.median(b) / np.median(self.reg_ref)) if np.median(self.reg_ref) > 0 else 1.0
        eps = 1e-2
        r = None
        for _ in range(iterations):
            cy, cx = self.reg_y - d[0], self.reg_x - d[1]
            # value and central differences of the spline, in one call
            val, ym, yp, xm, xp = self._sample(np.concatenate([cy, cy - eps, cy + eps, cy, cy]),
                                               np.concatenate([cx, cx, cx, cx - eps, cx + eps])
                                               ).reshape(5, -1)
            vy, vx = (yp - ym) / (2 * eps), (xp - xm) / (2 * eps)
            r = b - c * val
            jac = np.column_stack([val, -c * vy, -c * vx])
            if fixed:
                jac[:, 1:] = 0.0
            step, *_ = np.linalg.lstsq(jac, r, rcond=None)
            if not np.all(np.isfinite(step)):
                break
            c += step[0]
            d += np.clip(step[1:], -2.0, 2.0)
            if np.abs(step[1:]).max() < 1e-3:
                break
        rms = float(np.sqrt(np.mean(r**2)) / max(np.median(self.reg_ref), 1e-12)) if r is not None else np.nan
        return d, c, rms

    def accumulate(self, cut, d, c, quadratic):
        x = _design(d, quadratic)
        self.gram += np.outer(x, x)
        scaled = cut / c
        for j, xj in enumerate(x):
            self.sums[j] += xj * scaled


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


def jitter_clean(median, dust_mask, frames, *, shifts=None, invalid=None, quadratic=True, gap=4, pad=16,
                 max_reg_pixels=6000, iterations=6, min_frames=12, max_frames=200, max_shift=3.0,
                 min_r2=JITTER_MIN_R2, progress_bar=False):
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
    invalid : `~numpy.ndarray` of bool, optional
        Defects (hot, cold, saturated): not used for registration, solved for
        with a small weight.
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
    max_shift : float, optional
        A shadow whose frames move by more than this rms (px) is not filled:
        beyond a few pixels the scene is not a low-order function of the
        shift (use the ``measured`` method for a drifting scene).
    min_r2 : float, optional
        Agreement needed between the measured gradient and the median's on
        the box's unmasked pixels (see the module description).
    progress_bar : bool, optional
        Show a tqdm progress bar over the frames.

    Returns
    -------
    clean : `~numpy.ndarray`
        float32: the median, with the pixels of each shadow that passed the
        checks replaced by the estimate.
    report : list of dict
        One entry a shadow: ``label`` (its region number), ``used``,
        ``reason`` (why not, or ``''``), ``r2``, ``shift_rms`` (px),
        ``reg_rms`` (median relative rms of the registration residual),
        ``n_reg`` (registration pixels).

    Raises
    ------
    `~aiflat_astro.utils.exceptions.InputError`
        Frames of another shape than the median.

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
    from ...io.frames import open_frames

    med = np.asarray(getattr(median, "data", median), dtype=np.float64)
    mask = np.asarray(dust_mask, dtype=bool)
    if med.ndim != 2 or mask.shape != med.shape:
        raise InputError(f"median {med.shape} and dust mask {mask.shape} must be 2-D images of one shape")
    bad = ~np.isfinite(med) | (med <= 0)
    if invalid is not None:
        bad = bad | np.asarray(invalid, dtype=bool)
    clean = med.astype(np.float32)
    labels, n = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    report = []
    if n == 0:
        return clean, report
    n_terms = 6 if quadratic else 3
    source = open_frames(frames)
    try:
        shape = tuple(source.frame_shape)
        if shape[:2] != med.shape or not (len(shape) == 2 or shape[-1] == 3):
            raise InputError(f"frames of shape {shape} do not match the median shape {med.shape}")
        n_frames = int(source.n_frames)
        if shifts is not None:
            shifts = np.asarray(shifts, dtype=np.float64)
            if shifts.shape != (n_frames, 2):
                raise InputError(f"shifts must have shape ({n_frames}, 2), got {shifts.shape}")
        meta = getattr(source, "meta", None)
        pattern = meta.get("BAYERPAT") if meta is not None and len(shape) == 2 else None
        reason = ""
        if n_frames < min_frames:
            reason = f"{n_frames} frames (< {min_frames})"
        if reason:
            log.info("jitter: not used (%s)", reason)
            return clean, [{"label": k, "used": False, "reason": reason, "r2": np.nan, "shift_rms": np.nan,
                            "reg_rms": np.nan, "n_reg": 0} for k in range(1, n + 1)]
        boxes = []
        med_gain = _phase_gains(med, pattern)      # ones unless a raw colour mosaic
        safe_med = np.where(bad, np.nan, med / med_gain)
        fill = float(np.nanmedian(safe_med)) if np.isfinite(safe_med).any() else 1.0
        for k, ((y0, y1), (x0, x1)) in _windows(labels, med.shape, pad):
            win = safe_med[y0:y1, x0:x1]
            box = _Box(k, labels[y0:y1, x0:x1] == k, mask[y0:y1, x0:x1],
                       np.where(np.isfinite(win), win, fill),
                       bad[y0:y1, x0:x1], ((y0, y1), (x0, x1)), gap=gap, max_reg_pixels=max_reg_pixels,
                       n_terms=n_terms)
            boxes.append(box)
        if shifts is not None:
            shifts = shifts - shifts.mean(axis=0)
        indices = range(n_frames)
        if max_frames is not None and n_frames > max_frames:
            indices = np.unique(np.round(np.linspace(0, n_frames - 1, int(max_frames))).astype(int)).tolist()
        if progress_bar:
            from tqdm.auto import tqdm

            indices = tqdm(indices, desc="jitter", unit="frame", total=len(indices))
        frame_gain = None
        for i in indices:
            frame = _mono(source.read(i))
            if pattern:
                if frame_gain is None:
                    frame_gain = _phase_gains(frame, pattern)
                frame /= frame_gain
            start = np.zeros(2)
            for box in boxes:
                if box.n_reg < 30:
                    continue
                cut = frame[box.slice]
                if shifts is None:
                    d, c, rms = box.register(cut, start, iterations=iterations)
                else:
                    d, c, rms = box.register(cut, shifts[i], iterations=iterations, fixed=True)
                if not (np.all(np.isfinite(d)) and np.isfinite(c) and c > 0):
                    d, c = np.full(2, np.nan), np.nan
                else:
                    start = d          # the next box starts from this frame's shift
                    box.accumulate(cut, d, c, quadratic)
                box.shifts.append(d)
                box.levels.append(c)
                box.reg_rms.append(rms)
    finally:
        if source is not frames:
            source.close()

    for box in boxes:
        row = {"label": box.label, "used": False, "reason": "", "r2": np.nan, "shift_rms": np.nan,
               "reg_rms": float(np.nanmedian(box.reg_rms)) if box.reg_rms else np.nan,
               "n_reg": int(box.n_reg)}
        report.append(row)
        if box.n_reg < 30:
            row["reason"] = "too few pixels around the shadow"
            continue
        d = np.array(box.shifts)
        good = np.all(np.isfinite(d), axis=1)
        if good.sum() < min_frames:
            row["reason"] = "registration failed"
            continue
        d = d[good]
        row["shift_rms"] = float(np.sqrt(np.mean(np.sum((d - d.mean(axis=0)) ** 2, axis=1) / 2)))
        if row["shift_rms"] > max_shift:
            row["reason"] = f"shift rms {row['shift_rms']:.1f} px > {max_shift:g}"
            continue
        try:
            inv = np.linalg.inv(box.gram)
        except np.linalg.LinAlgError:
            row["reason"] = "shifts do not span two directions"
            continue
        if np.linalg.cond(box.gram) > 1e8:
            row["reason"] = "shifts do not span two directions"
            continue
        coef = np.tensordot(inv, box.sums, axes=1)
        level = coef[0]
        with np.errstate(divide="ignore", invalid="ignore"):
            gy = np.where(level > 0, -coef[1] / level, 0.0)
            gx = np.where(level > 0, -coef[2] / level, 0.0)
        # check: on the unmasked pixels the measured gradient is the median's own
        logm = np.log(box.median)
        my, mx = _gradient4(logm)
        check = ~ndimage.binary_dilation(box.unknown, iterations=3)
        check[:3, :] = check[-3:, :] = check[:, :3] = check[:, -3:] = False
        if check.sum() < 30:
            row["reason"] = "too few pixels around the shadow"
            continue
        ref = np.concatenate([my[check], mx[check]])
        got = np.concatenate([gy[check], gx[check]])
        # a robust R²: medians, so that a few stars or a spot's edge do not decide it
        denom = float(np.median(ref**2))
        r2 = 1.0 - float(np.median((got - ref) ** 2)) / denom if denom > 0 else -np.inf
        row["r2"] = r2
        if not r2 >= min_r2:
            row["reason"] = "no texture" if r2 < 0.1 else f"gradient check R2 {r2:.2f} < {min_r2:g}"
            log.debug("jitter: shadow %d not filled (%s)", box.label, row["reason"])
            continue
        phi = _integrate(logm, box.unknown, gy, gx, bad[box.slice])
        est = np.exp(phi)
        if not np.all(np.isfinite(est[box.region])):
            row["reason"] = "integration failed"
            continue
        est = est * med_gain[box.slice]
        clean[box.slice][box.region] = est[box.region].astype(np.float32)
        row["used"] = True
    n_used = sum(r["used"] for r in report)
    log.info("jitter: %d of %d shadow(s) filled from the measured gradient", n_used, len(report))
    return clean, report
