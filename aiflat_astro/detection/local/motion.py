"""The motion test: dust stays fixed on the sensor while the scene moves.

For each candidate, let ``T`` be its darkness template in the median (the
footprint's darkness against a local plane) and ``s_i`` the scene's shift in
frame ``i``.  Each frame's local darkness ``D_i`` (against its own local
plane) is modelled as ``D_i = T + β (T(· − s_i) − T)``: ``β = 0`` when the
shadow stayed where it is on the sensor (dust), ``β = 1`` when it moved with
the scene.  The same least-squares ``β`` works for sub-pixel seeing jitter
(``T(· − s) − T ≈ −s·∇T``) and for off-pointed sets whose shifts are hundreds
of pixels (the shifted template leaves the window, ``β = 1 − mean amplitude``:
the shadow's persistence at its sensor position).

The scene's shifts come from `aiflat_astro.registration.register_frames`, or,
for a disc moved by more than the registration's search, from the disc's
centroid in each frame (`disc_offsets`).
"""

import logging

import numpy as np
from scipy import ndimage

from ..._imaging.disc import fit_circle
from ...io._base import FrameSource
from ...utils._colour import cfa_normalise, mono_frame
from ...utils.exceptions import InputError

log = logging.getLogger(__name__)

#: Centroid offsets with an rms above this (px) are used as they are (registration is for drifts).
LARGE_OFFSET = 15.0
#: Centroid offsets are used only when their rms is this many times the spread of the fitted radii.
OFFSET_OVER_ERROR = 5.0
#: A window is used in a frame only when this fraction of it is on the disc there.
MIN_COVER = 0.9


def open_source(frames, shape):
    """An open frame source for ``frames`` (and whether we opened it), checked against ``shape``."""
    from ...io.frames import open_frames

    own = not (hasattr(frames, "read") and hasattr(frames, "n_frames"))
    source = open_frames(frames) if own else frames
    if tuple(source.frame_shape[:2]) != tuple(shape):
        if own:
            source.close()
        raise InputError(f"the frames ({source.frame_shape[0]}x{source.frame_shape[1]}) do not match "
                         f"the median ({shape[0]}x{shape[1]})")
    pattern = getattr(source, "bayer_pattern", None) or (source.meta or {}).get("BAYERPAT")
    if pattern and len(source.frame_shape) == 2:
        source = CFANormalised(source, pattern, own=own)
    return source, own


class CFANormalised(FrameSource):
    """Frames of a raw colour mosaic with their phases divided by their gains (as the median is)."""

    def __init__(self, source, pattern, *, own):
        self._source, self._own, self.pattern = source, own, pattern
        self.n_frames, self.frame_shape = source.n_frames, tuple(source.frame_shape)
        self.dtype = np.dtype(np.float32)
        self.paths, self.name = source.paths, source.name

    @property
    def meta(self):
        return self._source.meta

    def read(self, frame_index):
        return cfa_normalise(self._source.read(frame_index), self.pattern)

    def close(self):
        if self._own:
            self._source.close()


def disc_centroid(frame, level):
    """Centre (row, col) and radius of the disc from a circle fitted to its limb, or None.

    The limb is where the frame crosses half the disc ``level``, away from the
    frame's border (a disc moved off the sensor is cut there).
    """
    disc = ndimage.binary_fill_holes(ndimage.binary_opening(frame > 0.5 * level, iterations=2))
    if not 0.05 < disc.mean() < 0.95:
        return None
    limb = disc & ~ndimage.binary_erosion(disc)
    limb[:3], limb[-3:], limb[:, :3], limb[:, -3:] = False, False, False, False
    ys, xs = np.nonzero(limb)
    if ys.size < 50:
        return None
    step = max(1, ys.size // 4000)
    ys, xs = ys[::step].astype(float), xs[::step].astype(float)
    keep = np.ones(ys.size, bool)
    for _ in range(3):          # prominences and cut-off bits are outliers of the circle
        fit = fit_circle(ys[keep], xs[keep])
        if fit is None or fit[2] < 0.1 * min(frame.shape):
            return None
        resid = np.abs(np.hypot(ys - fit[0], xs - fit[1]) - fit[2])
        keep = resid < max(3.0, 3 * 1.4826 * np.median(resid[keep]))
    return np.array(fit) if keep.mean() > 0.7 else None


def disc_offsets(source, idx):
    """Shifts ``(dy, dx)`` of the disc in each frame from its centroid, or None.

    None when a frame shows no disc, when the offsets are small (a drift, for the
    registration), or when they are not much larger than the fits' own error.
    The Sun's radius is the same in every frame, so the spread of the fitted
    radii measures that error: a field that shows only a corner of the limb (a
    short arc) places the centre tens of pixels off along the arc's normal,
    and its radius with it.
    """
    cents = []
    for i in idx:
        f = mono_frame(source.read(int(i)), dtype=np.float32)
        level = float(np.percentile(f, 99))
        c = disc_centroid(f, level) if level > 0 else None
        if c is None:
            return None
        cents.append(c)
    cents = np.array(cents)
    radii = cents[:, 2]
    spread = 1.4826 * float(np.median(np.abs(radii - np.median(radii))))
    shifts = cents[:, :2] - np.median(cents[:, :2], axis=0)
    rms = float(np.sqrt(np.mean(np.sum(shifts**2, axis=1))))
    if rms > LARGE_OFFSET and rms < OFFSET_OVER_ERROR * spread:
        log.info("disc centroids not used: offsets %.0f px rms, fitted radius spread %.1f px",
                 rms, spread)
        return None
    return shifts if rms > LARGE_OFFSET else None


def scene_shifts(source, idx, dust, *, progress_bar=False):
    """Frames and shifts ``(n, 2)`` of the scene in them: disc centroids, else registration.

    Returns ``(frame indices, shifts, method)``.
    """
    from ...registration import register_frames

    shifts = disc_offsets(source, idx)
    if shifts is not None:
        log.info("scene offsets from the disc centroids (rms %.0f px)", np.sqrt(np.mean(np.sum(shifts**2, 1))))
        return np.asarray(idx), shifts, "centroid"
    drift = register_frames(source, dust_mask=dust if dust.mean() < 0.1 else None, max_frames=len(idx),
                            n_reference=min(12, len(idx)), progress_bar=progress_bar)
    return np.asarray(drift.frame_index), np.asarray(drift.shifts, float), "registration"


def plane_darkness(patch, ring):
    """``1 − patch / plane`` with a plane fitted to the ``ring`` pixels (local background)."""
    yy, xx = np.nonzero(ring)
    a = np.column_stack([np.ones(yy.size), yy, xx])
    v = patch[yy, xx].astype(np.float64)
    coef = np.linalg.lstsq(a, v, rcond=None)[0]
    resid = v - a @ coef
    keep = np.abs(resid) < 2.5 * (1.4826 * np.median(np.abs(resid)) + 1e-9)
    if keep.sum() >= 6:
        coef = np.linalg.lstsq(a[keep], v[keep], rcond=None)[0]
    gy, gx = np.mgrid[: patch.shape[0], : patch.shape[1]]
    plane = coef[0] + coef[1] * gy + coef[2] * gx
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(plane > 0, 1.0 - patch / plane, 0.0)


class Accumulator:
    """Sums of the β regression of one candidate over the frames."""

    def __init__(self, median, c):
        self.sl = c.sl
        core = ndimage.binary_dilation(c.pix, iterations=1)
        self.ring = ndimage.binary_dilation(c.pix, iterations=4) & ~ndimage.binary_dilation(c.pix, iterations=2)
        self.template = np.where(core, plane_darkness(median[c.sl], self.ring), 0.0)
        self.num = self.den = self.rss = 0.0
        self.n_pix = 0
        self.level = float(np.median(median[c.sl][self.ring])) if self.ring.any() else 0.0

    def add(self, frame, shift):
        patch = frame[self.sl]
        if self.ring.sum() < 6 or np.mean(patch > 0.5 * self.level) < MIN_COVER:
            return
        d = plane_darkness(patch, self.ring) - self.template
        g = ndimage.shift(self.template, shift, order=1, mode="constant", cval=0.0) - self.template
        self.num += float(np.sum(d * g))
        self.den += float(np.sum(g * g))
        self.rss += float(np.sum(d * d))
        self.n_pix += d.size

    def result(self):
        """``(β, σβ)``; NaN when the frames never moved the template measurably."""
        if self.den <= 0 or self.n_pix == 0:
            return np.nan, np.nan
        beta = self.num / self.den
        resid = max(self.rss - beta * self.num, 0.0) / self.n_pix
        # the residual is spatially correlated texture: a factor 2 on its naive error
        return float(beta), float(2.0 * np.sqrt(resid / self.den))


def motion_betas(source, idx, shifts, median, cands):
    """``(β, σβ)`` of each candidate from the frames ``idx`` with scene shifts ``shifts``."""
    accs = [Accumulator(median, c) for c in cands]
    for i, s in zip(idx, shifts):
        frame = mono_frame(source.read(int(i)), dtype=np.float32)
        for acc in accs:
            acc.add(frame, s)
    return [acc.result() for acc in accs]


def static_transmission(source, idx, *, window=100.0, margin=15, min_frames=3):
    """The sensor-fixed transmission seen through a scene that moved by hundreds of pixels.

    Each frame is divided by its own background (`~.background.median_background`
    over ``window`` px, on its own disc less a ``margin``); the median of these
    ratios over the frames that cover a pixel is what stays on the sensor: dust.
    Scene features, at a different sensor place in each frame, drop out.

    Returns ``(transmission, covered)``; ``covered`` is True where at least
    ``min_frames`` frames saw the disc.
    """
    from .background import median_background

    ratios = []
    for i in idx:
        f = mono_frame(source.read(int(i)), dtype=np.float32)
        level = float(np.percentile(f, 99))
        disc = ndimage.binary_fill_holes(f > 0.3 * level)
        disc = ndimage.binary_erosion(disc, iterations=margin)
        bg = median_background(f, disc, window)
        with np.errstate(invalid="ignore", divide="ignore"):
            ratios.append(np.where(disc & (bg > 0), f / bg, np.nan).astype(np.float32))
    stack = np.stack(ratios)
    count = np.sum(np.isfinite(stack), axis=0)
    covered = count >= min_frames
    with np.errstate(invalid="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            trans = np.nanmedian(stack, axis=0)
    return np.where(covered, trans, np.nan).astype(np.float32), covered
