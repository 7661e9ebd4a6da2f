"""The measured flat's regions, exclusion maps, memory plan and the one pass over the frames.

Part of the measured flat (`aiflat_astro.flat.estimators.measured`): each
connected piece of the dust mask becomes a region with a sensor box and a
scene box (the box swept by the drift); `_stream_boxes` reads each frame
once and keeps only those boxes.
"""

import logging
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from ...io.frames import spread_indices
from ...utils._colour import mono_frame
from ...utils.exceptions import InputError
from ._measured_sampling import _sample_box, _sample_mask

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------
# regions
# ---------------------------------------------------------------------------
@dataclass
class _Region:
    id: int                   # catalog id (negative: dust without a catalog row)
    key: int                  # this region's value in the owner map
    pixels: np.ndarray        # bool, box-shaped: pixels of this region whose value we set
    box: tuple                # (y0, y1, x0, x1) sensor box
    diameter: float
    centroid: tuple           # (y, x)
    sbox: tuple = None        # (v0, v1, u0, u1) scene box
    clean: np.ndarray = None  # bool, box-shaped: outside the exclusion (clean samples)
    ring: np.ndarray = None   # bool, box-shaped: far enough from any dust to set the level
    raw: np.ndarray = None    # (n, bh, bw) float32 frames on the sensor box
    reg: np.ndarray = None    # (n, sh, sw) float32 frames resampled on the scene box
    reg_ok: np.ndarray = None  # (n, sh, sw) bool: scene sample clean and inside the frame
    reg_inframe: np.ndarray = None  # (n, sh, sw) bool: scene sample inside the frame


def _regions(shape, dust_mask, weight, labels, exclude_extra, margin_frac):
    """Split the area to correct into regions with boxes.

    One region per connected component of the dust mask (a catalog shadow in
    several pieces gives several regions with the same id: each piece is
    measured, or not, on its own), plus the pixels to correct nearest to it.
    """
    target = dust_mask | (weight > 0)
    eight = np.ones((3, 3), bool)
    comp, n_comp = ndi.label(dust_mask, structure=eight)
    labels = None if labels is None else np.asarray(labels, dtype=np.int64)
    ids = {}
    for c, sl in enumerate(ndi.find_objects(comp), start=1):
        if sl is None:
            continue
        values = labels[sl][comp[sl] == c] if labels is not None else np.zeros(0, np.int64)
        values = values[values > 0]
        ids[c] = int(np.bincount(values).argmax()) if values.size else -c
    # every pixel to correct belongs to the region of the nearest dust pixel
    if n_comp:
        _, (iy, ix) = ndi.distance_transform_edt(comp == 0, return_indices=True)
        owner = np.where(target, comp[iy, ix], 0)
    else:
        owner = np.zeros(shape, np.int64)
    # an isolated weight area without any dust pixel: its own region
    stray, n_stray = ndi.label(target & (owner == 0), structure=eight)
    if n_stray:
        owner = np.where(stray > 0, stray + n_comp, owner)
        for k in range(1, n_stray + 1):
            ids[n_comp + k] = -(n_comp + k)

    regions = []
    for key, sl in enumerate(ndi.find_objects(owner), start=1):
        if sl is None:
            continue
        sel = owner == key
        core = sel & dust_mask if np.any(sel & dust_mask) else sel
        ys, xs = np.nonzero(core)
        diameter = float(max(ys.max() - ys.min() + 1, xs.max() - xs.min() + 1))
        ys_all, xs_all = np.nonzero(sel)
        pad = int(np.ceil(exclude_extra(diameter) + max(4.0, margin_frac * diameter)))
        y0 = max(0, ys_all.min() - pad)
        y1 = min(shape[0], ys_all.max() + 1 + pad)
        x0 = max(0, xs_all.min() - pad)
        x1 = min(shape[1], xs_all.max() + 1 + pad)
        regions.append(_Region(id=ids[key], key=key, pixels=sel[y0:y1, x0:x1],
                               box=(y0, y1, x0, x1), diameter=diameter,
                               centroid=(float(ys.mean()), float(xs.mean()))))
    return regions, owner


def _exclusion(shape, target, regions, reach_of, owner):
    """Pixels within ``reach_of(diameter)`` of the area to correct (per nearest region)."""
    if not target.any():
        return np.zeros(shape, bool)
    dist, (iy, ix) = ndi.distance_transform_edt(~target, return_indices=True)
    nearest = owner[iy, ix]
    reach = np.zeros(shape, np.float64)
    for region in regions:
        reach[nearest == region.key] = reach_of(region.diameter)
    return dist <= reach


_MIN_FRAMES_ONE_PASS = 20  # below this many frames in one pass, pass over the frames per batch


def _region_storage(r):
    y0, y1, x0, x1 = r.box
    v0, v1, u0, u1 = r.sbox
    return 4 * (y1 - y0) * (x1 - x0) + 6 * (v1 - v0) * (u1 - u0)


def _stream_boxes(source, regions, use_idx, shifts, excl, near, excl_any, progress_bar):
    """One pass over the frames: the sensor and scene boxes of ``regions``."""
    n = use_idx.size
    for r in regions:
        y0, y1, x0, x1 = r.box
        v0, v1, u0, u1 = r.sbox
        r.clean = ~excl[y0:y1, x0:x1]
        r.ring = ~near[y0:y1, x0:x1]
        r.raw = np.empty((n, y1 - y0, x1 - x0), np.float32)
        r.reg = np.empty((n, v1 - v0, u1 - u0), np.float32)
        r.reg_ok = np.empty((n, v1 - v0, u1 - u0), bool)
        r.reg_inframe = np.empty((n, v1 - v0, u1 - u0), bool)

    order = np.argsort(use_idx, kind="stable")  # stream in file order
    iterator = order
    if progress_bar:
        from tqdm.auto import tqdm

        iterator = tqdm(order, desc="measuring", unit="frame", leave=False)
    for k in iterator:
        frame = mono_frame(source.read(int(use_idx[k])))
        bad_px = ~np.isfinite(frame)
        frame_excl = excl_any
        if bad_px.any():  # a NaN would spread along its row and column in the spline
            frame = np.where(bad_px, np.nanmedian(frame) if (~bad_px).any() else 0.0, frame)
            frame_excl = excl_any | ndi.binary_dilation(bad_px, iterations=3)
        coeffs = ndi.spline_filter(frame, order=3, mode="nearest")
        dy, dx = shifts[k]
        for r in regions:
            y0, y1, x0, x1 = r.box
            v0, v1, u0, u1 = r.sbox
            r.raw[k] = np.where(bad_px[y0:y1, x0:x1], np.nan, frame[y0:y1, x0:x1])
            values, inside = _sample_box(coeffs, v0, v1, u0, u1, dy, dx, order=3,
                                         prefiltered=True)
            dusty = _sample_mask(frame_excl, v0, v1, u0, u1, dy, dx)
            r.reg[k] = values
            r.reg_inframe[k] = inside
            r.reg_ok[k] = inside & ~dusty


def _memory_plan(regions, shifts_all, n_registered, budget, mem_limit):
    """Scene boxes (``r.sbox``, set here) and how the regions and frames fit ``budget``.

    Returns ``(batches, pick)``: the regions of each pass over the frames, and
    the registered frames used (indices into the drift path).
    """
    lo = shifts_all.min(axis=0)
    hi = shifts_all.max(axis=0)
    storage = 0
    work = 0
    for r in regions:
        y0, y1, x0, x1 = r.box
        r.sbox = (int(np.floor(y0 - hi[0])), int(np.ceil(y1 - lo[0])),
                  int(np.floor(x0 - hi[1])), int(np.ceil(x1 - lo[1])))
        v0, v1, u0, u1 = r.sbox
        box_px, scene_px = (y1 - y0) * (x1 - x0), (v1 - v0) * (u1 - u0)
        storage += 4 * box_px + 6 * scene_px  # raw f4, reg f4, two bool maps
        work = max(work, 16 * box_px + 16 * scene_px)  # float32 work stacks, one region
    n_fit = max(1, int(budget // max(1, storage + work)))
    batches = [regions]
    if n_fit < min(n_registered, _MIN_FRAMES_ONE_PASS) and len(regions) > 1:
        # large offsets make big scene boxes: several passes over the frames, each for the
        # regions that fit, rather than too few frames
        sizes = [_region_storage(r) for r in regions]
        n_fit = max(1, min(n_registered, int(budget // max(1, max(sizes) + work))))
        batches, current, used = [], [], 0
        for r, size in zip(regions, sizes, strict=True):
            if current and (used + size) * n_fit + work > budget:
                batches.append(current)
                current, used = [], 0
            current.append(r)
            used += size
        batches.append(current)
        log.info("memory limit %s: %d passes over the frames", mem_limit, len(batches))
    if n_registered > n_fit:
        pick = spread_indices(n_registered, n_fit)
        log.info("memory limit %s: using %d of %d registered frames", mem_limit, pick.size,
                 n_registered)
    else:
        pick = np.arange(n_registered)
    return batches, pick


@dataclass
class _ExclusionMaps:
    """The regions and the pixel maps that keep dust out of the clean samples."""

    regions: list
    excl: np.ndarray       # never a clean sample (dilated dust, defects, surveyed dust)
    near: np.ndarray       # too near a shadow to set a box's level
    excl_any: np.ndarray   # ``excl`` grown by one pixel (for the scene boxes' masks)

    def add(self, extra):
        """Add pixels (dust found by the survey) to the exclusion maps."""
        self.excl |= extra
        self.near |= extra
        self.excl_any = ndi.binary_dilation(self.excl, structure=np.ones((3, 3), bool))


def _exclusion_maps(dust_mask, weight, labels, ignore, opts):
    """The regions around the shadows and the exclusion maps (`_ExclusionMaps`)."""
    shape = dust_mask.shape
    target = dust_mask | (weight > 0)
    regions, owner = _regions(shape, dust_mask, weight, labels, opts.level_gap, margin_frac=0.2)
    excl = _exclusion(shape, target, regions, opts.exclude_extra, owner)
    if ignore is not None:
        ignore = np.asarray(ignore, dtype=bool)
        if ignore.shape != shape:
            raise InputError(f"ignore shape {ignore.shape} differs from the dust mask {shape}")
        excl |= ndi.binary_dilation(ignore, iterations=1)
    near = _exclusion(shape, target, regions, opts.level_gap, owner) | excl
    return _ExclusionMaps(regions, excl, near,
                          ndi.binary_dilation(excl, structure=np.ones((3, 3), bool)))
