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

The scene's shifts come from `aiflat_astro.registration.register_frames`
(drifts, jitter and off-pointed sets alike; `scene_shifts`).
"""

import logging

import numpy as np
from scipy import ndimage

from ..._imaging.shift import bilinear_shift
from ...io._base import FrameSource
from ...utils._colour import cfa_normalise, mono_frame
from ...utils.exceptions import InputError

log = logging.getLogger(__name__)

#: A scene moved by more than this (px rms) is an off-pointed set: candidates from the static map.
LARGE_OFFSET = 15.0
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


def scene_shifts(source, idx, dust, *, progress_bar=False):
    """Frames and shifts ``(n, 2)`` of the scene in them, measured on the scene itself.

    `~aiflat_astro.registration.register_frames` handles a drift, seeing
    jitter and off-pointed sets alike (its coarse binned step finds offsets of
    hundreds of pixels).  The scene is what moves, so its own correlation is
    the measure: a circle fitted to the limb can slide by tens of pixels along
    a short arc (a field showing a corner of the limb) and fake an off-pointing.
    Returns ``(frame indices, shifts, method)``: ``'offsets'`` when the scene
    moved by more than `LARGE_OFFSET` px rms (the median then mixes disc and
    sky: the detector takes its candidates from the static map), else
    ``'registration'``.
    """
    from ...registration import register_frames

    drift = register_frames(source, dust_mask=dust if dust.mean() < 0.1 else None, max_frames=len(idx),
                            n_reference=min(12, len(idx)), progress_bar=progress_bar)
    shifts = np.asarray(drift.shifts, float)
    rms = float(np.sqrt(np.mean(np.sum((shifts - np.median(shifts, axis=0)) ** 2, axis=1))))
    method = "offsets" if rms > LARGE_OFFSET else "registration"
    log.info("scene shifts by registration: rms %.1f px (%s)", rms, method)
    return np.asarray(drift.frame_index), shifts, method


class LocalPlane:
    """``1 − patch / plane`` with a plane fitted robustly to the ``ring`` pixels (local background).

    The ring is the same for every frame of a candidate: its design matrix is
    built once and each fit is a 3×3 solve of the normal equations (a first fit,
    then a refit without the pixels beyond 2.5 robust sigmas of it).
    """

    def __init__(self, ring):
        self.shape = ring.shape
        self.yy, self.xx = np.nonzero(ring)
        self.a = np.column_stack([np.ones(self.yy.size), self.yy, self.xx])

    def _solve(self, a, v):
        try:
            return np.linalg.solve(a.T @ a, a.T @ v)
        except np.linalg.LinAlgError:
            return np.linalg.lstsq(a, v, rcond=None)[0]

    def darkness(self, patch):
        """The darkness of ``patch`` against the plane through its ring."""
        v = patch[self.yy, self.xx].astype(np.float64)
        coef = self._solve(self.a, v)
        resid = v - self.a @ coef
        keep = np.abs(resid) < 2.5 * (1.4826 * np.median(np.abs(resid)) + 1e-9)
        if keep.sum() >= 6:
            coef = self._solve(self.a[keep], v[keep])
        plane = (coef[0] + coef[1] * np.arange(self.shape[0])[:, None]
                 + coef[2] * np.arange(self.shape[1])[None, :])
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(plane > 0, 1.0 - patch / plane, 0.0)


def plane_darkness(patch, ring):
    """``1 − patch / plane`` with a plane fitted to the ``ring`` pixels (`LocalPlane`)."""
    return LocalPlane(ring).darkness(patch)


class Accumulator:
    """Sums of the β regression of one candidate over the frames."""

    def __init__(self, median, c):
        self.sl = c.sl
        core = ndimage.binary_dilation(c.pix, iterations=1)
        self.ring = ndimage.binary_dilation(c.pix, iterations=4) & ~ndimage.binary_dilation(c.pix, iterations=2)
        self.plane = LocalPlane(self.ring)
        self.template = np.where(core, self.plane.darkness(median[c.sl]), 0.0)
        self.num = self.den = self.rss = 0.0
        self.n_pix = 0
        self.level = float(np.median(median[c.sl][self.ring])) if self.ring.any() else 0.0

    def add(self, frame, shift):
        patch = frame[self.sl]
        if self.ring.sum() < 6 or np.mean(patch > 0.5 * self.level) < MIN_COVER:
            return
        d = self.plane.darkness(patch) - self.template
        g = bilinear_shift(self.template, shift, dtype=np.float64) - self.template
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
