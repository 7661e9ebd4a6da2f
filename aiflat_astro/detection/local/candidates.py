"""Darkness relative to the background at several scales, and the candidate shadows in it.

At scale ``k`` the background is a median over a window ``WINDOW × d_k``
(`~.background.median_background`), the darkness ``1 − image/background`` is
smoothed to the scale (a Gaussian of ``d_k / 6``) and divided by its own local
robust scatter.  A candidate is a connected region above ``k_lo`` sigmas that
holds a seed above ``k_hi`` sigmas and whose size belongs to the scale.
"""

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from .background import block_mean, local_sigma, median_background, upsample

#: Background window in units of the largest diameter searched at a scale.
WINDOW = 2.2
#: Ratio of the largest diameters of successive scales.
SCALE_RATIO = 2.6
#: Smallest scale: diameters up to this many pixels.
FIRST_SCALE = 7.0
#: A region too large for its scale is cut at these fractions of a peak's significance, the
#: lowest that leaves that peak's part small enough (`cores_of`).  Half the peak only: higher
#: cuts also isolated bumps of the texture itself (on the real proxy, 3 of 144 specks lost).
CORE_LEVELS = (0.5,)
#: Smoothing kernels at least this wide (sigma, px) run on a block grid (`smooth_darkness`).
GRID_SIGMA = 8.0
#: At most this many peaks of one too-large region are tried (the most significant first).
MAX_PEAKS = 64


@dataclass
class Candidate:
    """A dark compact region of the median that may be a dust shadow."""

    y: float
    x: float
    scale: float                    # largest diameter of the scale it was found at
    scale_index: int                # index of that scale
    sl: tuple                       # slices of its patch in the image
    pix: np.ndarray                 # DUST footprint within the patch (bool)
    area: float
    diameter: float                 # equivalent diameter of the filled outline
    depth: float                    # 75th percentile of the darkness in its core (1 − transmission)
    z: float                        # peak significance (robust sigmas of its scale)
    core_area: float = np.inf       # pixels darker than half its depth
    peak_area: float = np.inf       # pixels connected to its darkest one, darker than half of it
    elongation: float = 1.0
    ring: float = 0.0               # mean darkness just outside, in sigmas (negative: bright ring)
    isolation: float = 1.0          # core over its darkest surrounding sector (1 isolated, 0 a lane)
    context: float = 1.0            # background at its scale / background at a much larger scale
    edge: float = np.inf            # distance to the limb or the frame edge (px)
    light: float = 1.0              # background at its scale over the disc's typical level
    beta: float = np.nan            # motion: 0 fixed on the sensor, 1 moves with the scene
    beta_sigma: float = np.nan
    terms: dict = field(default_factory=dict)
    confidence: float = 0.0
    children: list = field(default_factory=list)    # smaller-scale candidates it replaced
    embedded: bool = False          # a compact part of a region too large for its scale (`cores_of`)


@dataclass
class ScaleMaps:
    """Maps of one scale: background, darkness, significance and its scatter."""

    d_max: float
    background: np.ndarray
    darkness: np.ndarray
    smooth: np.ndarray              # darkness smoothed to the scale (what the significance is of)
    sigma: np.ndarray
    z: np.ndarray

    def slim(self):
        """These maps without what only the scale's own search uses (the footprint needs the rest).

        The background, the smoothed darkness and the significance serve the
        extraction and description of this scale's candidates; once they are
        done the DUST footprint (`~.shape.footprint`) needs only the darkness
        and its scatter.
        """
        return ScaleMaps(self.d_max, None, self.darkness, None, self.sigma, None)


def scale_diameters(d_lo, d_hi):
    """Largest diameter of each scale, from the smallest speck to ``d_hi``."""
    out = [max(FIRST_SCALE, 1.5 * d_lo)]
    while out[-1] < d_hi:
        out.append(min(out[-1] * SCALE_RATIO, d_hi) if out[-1] * SCALE_RATIO < 1.15 * d_hi else d_hi)
    return out


def scale_maps(data, use, d_max):
    """Background, darkness and significance at the scale of diameters up to ``d_max``."""
    window = max(9.0, WINDOW * d_max)
    bg = median_background(data, use, min(window, max(data.shape)))
    with np.errstate(invalid="ignore", divide="ignore"):
        dark = np.where(use & (bg > 0), 1.0 - data / np.where(bg > 0, bg, 1), 0).astype(np.float32)
    smooth = smooth_darkness(dark, use, max(0.7, d_max / 10.0))
    sig = local_sigma(smooth, use, block=max(64, 3 * window))
    return ScaleMaps(d_max, bg, dark, smooth, sig, np.where(use, smooth / sig, 0).astype(np.float32))


def smooth_darkness(dark, use, sigma):
    """Darkness smoothed by a Gaussian of ``sigma`` over the usable pixels (0 where they are too few).

    Up to `GRID_SIGMA` the smoothing is exact.  A wider one (the large
    scales: a 300 px shadow is smoothed by 30 px) runs on a grid of blocks of
    ``sigma / 4`` pixels (`~.background.block_mean`) and is expanded
    bilinearly: the blocks and the interpolation widen the kernel by their own
    variance (``b²/12`` and ``b²/6``), which the grid's Gaussian gives up, so the
    kernel keeps its width; what differs is below 1 % of its height.
    """
    w = use.astype(np.float32)
    dark = np.where(use, dark, 0).astype(np.float32, copy=False)
    if sigma < GRID_SIGMA:
        num = ndimage.gaussian_filter(dark, sigma, mode="nearest", truncate=3.0)
        den = ndimage.gaussian_filter(w, sigma, mode="nearest", truncate=3.0)
    else:
        b = max(1, int(sigma // 4))
        num, den = block_mean(dark, b)[0], block_mean(w, b)[0]
        s = np.sqrt(sigma**2 - b**2 / 4.0) / b
        num = upsample(ndimage.gaussian_filter(num, s, mode="nearest", truncate=3.0), b, dark.shape)
        den = upsample(ndimage.gaussian_filter(den, s, mode="nearest", truncate=3.0), b, dark.shape)
    return np.where(den > 0.3, num / np.maximum(den, 1e-6), 0).astype(np.float32)


def components(maps, seedable, *, k_hi, k_lo, min_seed):
    """Labels of the regions above ``k_lo`` holding at least ``min_seed`` pixels above ``k_hi``."""
    region = maps.z > k_lo
    lab, n = ndimage.label(region)
    if n == 0:
        return lab, np.zeros(0, np.intp)
    seeds = np.bincount(lab[(maps.z > k_hi) & seedable], minlength=n + 1)
    keep = np.flatnonzero(seeds >= min_seed)
    return lab, keep[keep > 0]


def extract(maps, seedable, *, index, d_min, d_cap, k_hi, k_lo, min_seed=2, pad=None):
    """Candidates of one scale: regions whose filled size lies in ``(d_min, d_cap]``."""
    lab, ids = components(maps, seedable, k_hi=k_hi, k_lo=k_lo, min_seed=min_seed)
    if ids.size == 0:
        return []
    objects = ndimage.find_objects(lab)
    out = []
    for k in ids:
        sl = objects[k - 1]
        pix = lab[sl] == k
        diameter = _filled_diameter(pix)
        if diameter <= d_cap:
            parts = [(sl, pix, diameter, True)]
        else:
            parts = cores_of(maps, sl, pix, k_hi=k_hi, d_cap=d_cap)
        for s, p, d, top in parts:
            if d_min < d <= d_cap:
                out.append(_candidate(maps, index, s, p, d, pad))
                # the region's highest peak above half of it is a speck that touched the texture;
                # the other parts stand out of a structure they belong to or lie on
                out[-1].embedded = not top
    return out


def _fits(core, d_cap):
    """Whether a region's filled equivalent diameter is at most ``d_cap`` (cheap tests first)."""
    if core.sum() > np.pi / 4 * d_cap**2:
        return False
    box = ndimage.find_objects(core.astype(np.int8))[0]
    return _filled_diameter(core[box]) <= d_cap


def _filled_diameter(pix):
    """Equivalent diameter of a region with its holes filled."""
    return float(np.sqrt(4 * ndimage.binary_fill_holes(pix).sum() / np.pi))


def cores_of(maps, sl, pix, *, k_hi, d_cap):
    """The compact dips inside a region too large for its scale, one per significant peak.

    A speck that touches the scene's texture at the low hysteresis level joins
    it into one region far larger than the speck: a speck on a filament, in a
    plage lane, beside a pore.  Around each peak of the region (most
    significant first), its part above half the peak's significance
    (`CORE_LEVELS`; no larger than ``d_cap``, and above ``k_hi``) is a dip of its own: the speck stands out of what it
    touches.  A peak on a uniform structure (along a filament) never becomes
    that small and gives nothing.  Returns ``[(slices, pixels, diameter, top)]``,
    ``top`` True for the part of the region's highest peak above half of it.
    """
    z = np.where(pix, maps.z[sl], 0)
    peaks = np.argwhere((z > k_hi) & (z >= ndimage.maximum_filter(z, size=3)))
    peaks = peaks[np.argsort(-z[tuple(peaks.T)])][:MAX_PEAKS]
    taken = np.zeros(z.shape, bool)
    cores = np.zeros(z.shape, bool)
    out = []
    for rank, (py, px) in enumerate(peaks):
        if taken[py, px]:
            continue
        for level in CORE_LEVELS:
            core = _part_above(z, (py, px), max(k_hi, level * z[py, px]), reach=int(d_cap) + 2)
            if _fits(core, d_cap):
                break
        else:
            continue
        if (core & cores).any():        # the part of a lower peak that holds a higher one's
            continue
        cores |= core
        inner = ndimage.find_objects(core.astype(np.int8))[0]
        _mark_near(taken, core, inner, 2)
        sub = (slice(sl[0].start + inner[0].start, sl[0].start + inner[0].stop),
               slice(sl[1].start + inner[1].start, sl[1].start + inner[1].stop))
        top = rank == 0 and level == CORE_LEVELS[0]
        out.append((sub, core[inner], _filled_diameter(core[inner]), top))
    return out


def _part_above(z, peak, level, *, reach):
    """The connected part of ``z > level`` holding ``peak`` (a boolean map of ``z``'s shape).

    Labelled in a window ``reach`` pixels around the peak; only a part that
    touches the window's border (it may go on beyond it) is labelled again on
    the whole of ``z``.
    """
    py, px = peak
    h, w = z.shape
    win = (slice(max(py - reach, 0), min(py + reach + 1, h)), slice(max(px - reach, 0), min(px + reach + 1, w)))
    lab, _ = ndimage.label(z[win] > level)
    part = lab == lab[py - win[0].start, px - win[1].start]
    inner = ((win[0].start == 0 or not part[0].any()) and (win[0].stop == h or not part[-1].any())
             and (win[1].start == 0 or not part[:, 0].any()) and (win[1].stop == w or not part[:, -1].any()))
    if not inner:
        lab, _ = ndimage.label(z > level)
        return lab == lab[py, px]
    out = np.zeros(z.shape, bool)
    out[win] = part
    return out


def _mark_near(taken, core, box, grow):
    """``taken |= binary_dilation(core, iterations=grow)``, dilating only the box of ``core`` grown by ``grow``."""
    h, w = core.shape
    big = (slice(max(box[0].start - grow, 0), min(box[0].stop + grow, h)),
           slice(max(box[1].start - grow, 0), min(box[1].stop + grow, w)))
    taken[big] |= ndimage.binary_dilation(core[big], iterations=grow)


def _candidate(maps, index, sl, pix, diameter, pad):
    """A `Candidate` from a region: centroid of its darkness, depth and peak significance."""
    h, w = maps.z.shape
    m = int(np.ceil(pad if pad is not None else 0.75 * diameter + 4))
    big = (slice(max(sl[0].start - m, 0), min(sl[0].stop + m, h)),
           slice(max(sl[1].start - m, 0), min(sl[1].stop + m, w)))
    own = np.zeros((big[0].stop - big[0].start, big[1].stop - big[1].start), bool)
    own[sl[0].start - big[0].start:sl[0].stop - big[0].start,
        sl[1].start - big[1].start:sl[1].stop - big[1].start] = pix
    dark = maps.darkness[big]
    wgt = np.clip(dark, 0, None) * own
    if wgt.sum() <= 0:
        wgt = own.astype(np.float32)
    cy, cx = ndimage.center_of_mass(wgt)
    smooth = maps.smooth[big]
    core = own & (smooth >= 0.5 * smooth[own].max())
    depth = float(np.percentile(dark[core], 75))
    core_area = float(np.count_nonzero(own & (dark > 0.5 * depth)))
    return Candidate(y=float(cy + big[0].start), x=float(cx + big[1].start), scale=float(maps.d_max),
                     scale_index=index, sl=big, pix=own, area=float(own.sum()), diameter=diameter,
                     depth=depth, core_area=core_area, z=float(maps.z[big][own].max()))


def merge_scales(per_scale):
    """One candidate per shadow from the candidates of all scales (smallest scale first).

    A candidate of a larger scale that overlaps smaller ones replaces them when
    it is much larger than they are (a larger shadow, a clump, or the larger
    dark structure they were the edge of); otherwise the smaller-scale
    candidates stand and the larger one is a duplicate.  The candidates a
    larger one replaced are kept as its ``children``: when the larger one
    turns out to be scene (an umbra, a plage lane), they are judged on their
    own (a speck on an umbra is still a speck).
    """
    kept = []
    for cands in per_scale:
        for c in cands:
            hits = [o for o in kept if _boxes_meet(c, o) and _overlap(c, o) > 0.3 * min(c.area, o.area)]
            # a part of a larger region (`cores_of`) does not replace whole dips found below it
            if hits and (c.embedded or c.area < 2.0 * sum(o.area for o in hits)):
                continue
            c.children = hits
            gone = {id(o) for o in hits}        # identity: a dataclass's == compares every field
            kept = [o for o in kept if id(o) not in gone] + [c]
    return kept


def family(cands):
    """The candidates and all their descendants (`merge_scales` children), parents first."""
    out = []
    for c in cands:
        out.append(c)
        out.extend(family(c.children))
    return out


def _boxes_meet(a, b):
    """Whether two candidates' patches intersect (the cheap test before `_overlap`)."""
    return (a.sl[0].start < b.sl[0].stop and b.sl[0].start < a.sl[0].stop
            and a.sl[1].start < b.sl[1].stop and b.sl[1].start < a.sl[1].stop)


def _overlap(a, b):
    """Number of footprint pixels two candidates share."""
    y0, y1 = max(a.sl[0].start, b.sl[0].start), min(a.sl[0].stop, b.sl[0].stop)
    x0, x1 = max(a.sl[1].start, b.sl[1].start), min(a.sl[1].stop, b.sl[1].stop)
    if y0 >= y1 or x0 >= x1:
        return 0
    pa = a.pix[y0 - a.sl[0].start:y1 - a.sl[0].start, x0 - a.sl[1].start:x1 - a.sl[1].start]
    pb = b.pix[y0 - b.sl[0].start:y1 - b.sl[0].start, x0 - b.sl[1].start:x1 - b.sl[1].start]
    return int(np.count_nonzero(pa & pb))
