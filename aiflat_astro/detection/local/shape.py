"""What a dust shadow looks like, measured on each candidate.

Real dust (notes on real dust, §1): about 100 specks per Mpx, 3–40 px across,
7–56 % deep, mostly round (elongation √(λ₁/λ₂) median 1.15, 95 % below 1.8),
a faint bright Fresnel ring just outside the dark core; a few fibres
(elongated) and clumps.  Large defocused shadows (out-of-focus dust far from
the sensor, deep-sky donuts) are soft and shallow.  Scene features differ by
*scale and context*: an umbra, a penumbra, a filament or the limb is much
larger than a speck, so a candidate on its edge sits where the background at
its own scale is far darker than the background at a larger scale; a dark
lane between bright plage ridges sits where it is far brighter.
"""

import numpy as np
from scipy import ndimage

#: Scale whose background is the "much larger" context of a candidate: this many scales up.
CONTEXT_STEP = 2


def elongation(pix, weight):
    """√ of the eigenvalue ratio of the darkness-weighted second moments."""
    yy, xx = np.nonzero(pix)
    if yy.size < 3:
        return 1.0
    w = np.clip(weight[yy, xx], 1e-6, None).astype(np.float64)
    cy, cx = np.average(yy, weights=w), np.average(xx, weights=w)
    cov = np.cov(np.vstack([yy - cy, xx - cx]), aweights=w) + np.eye(2) / 12.0
    ev = np.linalg.eigvalsh(cov)
    return float(np.sqrt(ev[1] / max(ev[0], 1e-9)))


def ring_contrast(maps, c):
    """Mean darkness in a ring 1–3 px outside the footprint, in units of the local scatter.

    Negative values are the bright Fresnel ring of real dust; positive values a
    candidate that continues into a darker surrounding.
    """
    dark = maps.darkness[c.sl]
    grown1 = ndimage.binary_dilation(c.pix, iterations=1)
    ring = ndimage.binary_dilation(c.pix, iterations=3) & ~grown1
    if ring.sum() < 4:
        return 0.0
    sigma = float(np.median(maps.sigma[c.sl][ring]))
    noise = sigma * np.sqrt(max(maps.d_max / 10.0, 0.7) ** 2 * np.pi * 4 / max(ring.sum(), 1))
    return float(np.mean(dark[ring]) / max(noise, 1e-6))


def context_ratio(maps_list, k, c):
    """Background at the candidate's scale over the background a few scales larger, at its centre."""
    big = maps_list[min(k + CONTEXT_STEP, len(maps_list) - 1)]
    own = maps_list[k]
    if big is own:
        return 1.0
    iy = int(np.clip(round(c.y), 0, own.background.shape[0] - 1))
    ix = int(np.clip(round(c.x), 0, own.background.shape[1] - 1))
    ref = float(big.background[iy, ix])
    return float(own.background[iy, ix] / ref) if ref > 0 else 1.0


def isolation(maps, c, *, n_sectors=8):
    """How much darker the core is than the *darkest* sector of its surroundings, over its depth.

    Dust is an isolated dip: every direction around it is brighter (≈ 1).  A
    piece of a fibril, a filament or a dark lane continues in some direction:
    the darkest sector is nearly as dark as the core (≈ 0).  The edge of a
    larger dark structure is dark on one side (≤ 0).
    """
    dark = maps.darkness[c.sl]
    core = c.pix
    if not core.any():
        return 0.0
    r = 0.5 * c.diameter
    yy, xx = np.mgrid[: dark.shape[0], : dark.shape[1]]
    dy, dx = yy - (c.y - c.sl[0].start), xx - (c.x - c.sl[1].start)
    rho = np.hypot(dy, dx)
    ring = (rho > r + 1.5) & (rho < r + 1.5 + max(3.0, 0.6 * r)) & ~ndimage.binary_dilation(core, iterations=1)
    sector = ((np.arctan2(dy, dx) + np.pi) / (2 * np.pi) * n_sectors).astype(int) % n_sectors
    means = [np.mean(dark[ring & (sector == s)]) for s in range(n_sectors)
             if np.count_nonzero(ring & (sector == s)) >= 3]
    level = float(np.mean(dark[core]))
    if len(means) < n_sectors // 2 or not level > 0:
        return 0.0
    return float((level - max(means)) / level)


def half_peak_area(maps, c):
    """Pixels connected to the candidate's darkest pixel and darker than half of it (raw darkness).

    A dust shadow is the pupil's image, a disc blurred by the grain's own size:
    its half-depth core covers at least the smallest real speck (π 1.5² ≈ 7 px,
    notes §1: 5 % below 3.1 px).  A cold-pixel cluster is a few pixels with
    full-depth steps to its neighbours: its half-depth core is one to three pixels
    however much the smoothing at the candidate's scale spreads it.
    """
    dark = maps.darkness[c.sl]
    near = ndimage.binary_dilation(c.pix, iterations=1)
    if not near.any():
        return 0.0
    peak = np.unravel_index(np.argmax(np.where(near, dark, -np.inf)), dark.shape)
    if not dark[peak] > 0:
        return 0.0
    lab, _ = ndimage.label(near & (dark > 0.5 * dark[peak]), structure=np.ones((3, 3), bool))
    return float(np.count_nonzero(lab == lab[peak]))


def describe(maps_list, k, c, edge_distance, *, disc_level=None):
    """Fill the shape and context fields of candidate ``c`` found at scale ``k``.

    ``disc_level`` is the typical brightness of the disc (or field): the
    candidate's ``light`` is its own-scale background over it.
    """
    maps = maps_list[k]
    c.elongation = elongation(c.pix, np.clip(maps.darkness[c.sl], 0, None))
    c.ring = ring_contrast(maps, c)
    c.context = context_ratio(maps_list, k, c)
    c.isolation = isolation(maps, c)
    c.peak_area = half_peak_area(maps, c)
    iy = int(np.clip(round(c.y), 0, edge_distance.shape[0] - 1))
    ix = int(np.clip(round(c.x), 0, edge_distance.shape[1] - 1))
    c.edge = float(edge_distance[iy, ix])
    if disc_level is not None and disc_level > 0:
        c.light = float(maps.background[iy, ix] / disc_level)
    return c


def footprint(maps, c, *, level=0.15):
    """DUST pixels: connected to the core, darker than ``level`` of the depth and 1.5 sigmas.

    Holes (the clear centre of a donut) stay out of the mask.
    """
    dark = maps.darkness[c.sl]
    sigma = maps.sigma[c.sl]
    near = ndimage.binary_dilation(c.pix, iterations=max(1, int(round(0.1 * c.diameter))))
    sel = near & (dark > max(level * c.depth, 0.0)) & (dark > 1.5 * sigma)
    lab, n = ndimage.label(sel)
    if n == 0:
        return c.pix
    touching = np.unique(lab[c.pix & sel])
    touching = touching[touching > 0]
    if touching.size == 0:
        return c.pix
    return np.isin(lab, touching)
