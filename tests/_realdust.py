"""A realistic proxy of a real dusty solar median, for the detector's tests and benchmark.

Real xu2016 disc texture (one frame: filaments, plage, the limb, JPEG blocks) times dust drawn
from the statistics of a real dusty median (shared/notes/real-dust.md §1: equivalent diameter,
depth and elongation quantiles, ~100 specks per Mpx, clumps, a faint bright Fresnel ring) and a
~200 px umbra with its penumbra.  The three real dust spots of the set are part of the truth.
"""

import numpy as np
from scipy import ndimage

# quantiles (5, 25, 50, 75, 95, 100 %) of the real median's shadows (notes §1)
_Q = np.array([0.05, 0.25, 0.5, 0.75, 0.95, 1.0])
DIAMETER = np.array([3.1, 6.3, 9.9, 12.5, 18.9, 39.0])
DEPTH = np.array([0.07, 0.14, 0.19, 0.27, 0.56, 0.91])
ELONGATION = np.array([1.01, 1.08, 1.15, 1.26, 1.81, 3.5])
DENSITY_PER_MPX = 100.0


def _draw(rng, table, n):
    """Samples from a piecewise-linear quantile function through the table (0 % = 0.8 × 5 %)."""
    q = np.concatenate([[0.0], _Q])
    v = np.concatenate([[0.8 * table[0]], table])
    return np.interp(rng.uniform(0, 1, n), q, v)


def _speck(shape, y, x, diameter, depth, elong, angle, ring):
    """Transmission of one speck: a sharp elliptical core and a faint bright ring just outside."""
    a, b = diameter / 2 * np.sqrt(elong), diameter / 2 / np.sqrt(elong)
    r = int(np.ceil(a + 6))
    y0, y1 = max(int(y) - r, 0), min(int(y) + r + 1, shape[0])
    x0, x1 = max(int(x) - r, 0), min(int(x) + r + 1, shape[1])
    yy, xx = np.mgrid[y0:y1, x0:x1]
    u = (xx - x) * np.cos(angle) + (yy - y) * np.sin(angle)
    v = -(xx - x) * np.sin(angle) + (yy - y) * np.cos(angle)
    rho = np.hypot(u / a, v / b)                       # 1 at the edge
    edge = 0.6 / max(b, 1.0)                           # ~0.6 px soft edge
    core = 1 / (1 + np.exp((rho - 1) / edge))
    bump = ring * np.exp(-0.5 * ((rho - 1 - 1.5 / b) / (1.0 / b)) ** 2)
    return (slice(y0, y1), slice(x0, x1)), 1 - depth * core + bump, core > 0.5


def umbra_transmission(shape, y, x, rng, *, diameter=200):
    """A sunspot-like dark feature: a deep irregular umbra inside a penumbra (multiplicative)."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    theta = np.arctan2(yy - y, xx - x)
    wobble = 1 + 0.08 * np.sin(3 * theta + rng.uniform(0, 6)) + 0.05 * np.sin(7 * theta + rng.uniform(0, 6))
    r = np.hypot(yy - y, xx - x) / wobble
    umbra = 1 / (1 + np.exp(np.clip((r - 0.3 * diameter) / 2.0, -50, 50)))
    penumbra = 1 / (1 + np.exp(np.clip((r - 0.5 * diameter) / 3.0, -50, 50)))
    t = 1 - 0.35 * penumbra - 0.4 * umbra
    return t.astype(np.float32), r < 0.5 * diameter + 6


#: Robust per-pixel scatter of the darkness (1 − image/background) of the real dusty median,
#: implied by notes §1: a k = 8 MAD-sigma threshold finds 94 % of the shadows, 25 % of which are
#: less than 14 % deep and 5 % less than 7 %: 8 sigma ≈ 0.09, sigma ≈ 0.011.
REAL_TEXTURE_SIGMA = 0.011


def matched_texture(scene, disc, *, sigma=REAL_TEXTURE_SIGMA):
    """The scene with its small-scale contrast scaled so that its darkness scatter is ``sigma``.

    A single xu2016 frame (one exposure, 8-bit, H-alpha fibrils) is about four times rougher
    at the pixel scale than a temporal median of a video; its structure is kept, its contrast
    brought to the median's.
    """
    from aiflat_astro._imaging.robust import robust_sigma
    from aiflat_astro.detection.local.background import median_background

    bg = median_background(scene, disc, 25)
    rel = np.where(disc, scene / np.maximum(bg, 1e-3) - 1, 0)
    alpha = sigma / robust_sigma(rel[disc])
    return np.where(disc, bg * (1 + alpha * rel), scene).astype(np.float32)


def make_proxy(scene, disc, rng, *, umbra_at=None, spots=()):
    """Inject dust (and an umbra) into ``scene``.

    Returns (image, truth labels, umbra footprint).  ``disc`` is the boolean on-disc area where
    dust is placed (away from the limb); ``spots`` are (row, col) of real dust already in the scene.
    """
    shape = scene.shape
    t = np.ones(shape, np.float32)
    labels = np.zeros(shape, np.int32)
    inner = ndimage.binary_erosion(disc, iterations=40)
    umbra = np.zeros(shape, bool)
    if umbra_at is not None:
        tu, umbra = umbra_transmission(shape, *umbra_at, rng)
        t *= tu
        inner &= ~ndimage.binary_dilation(umbra, iterations=30)
    n = int(round(DENSITY_PER_MPX * inner.sum() / 1e6))
    ys, xs = np.nonzero(inner)
    pick = rng.choice(ys.size, n, replace=False)
    diam, depth, elong = _draw(rng, DIAMETER, n), _draw(rng, DEPTH, n), _draw(rng, ELONGATION, n)
    k = 0
    for i in range(n):
        centres = [(ys[pick[i]], xs[pick[i]])]
        if rng.uniform() < 0.05:                 # a clump of touching specks
            for _ in range(rng.integers(1, 3)):
                ang = rng.uniform(0, 2 * np.pi)
                centres.append((centres[0][0] + 0.8 * diam[i] * np.sin(ang),
                                centres[0][1] + 0.8 * diam[i] * np.cos(ang)))
        k += 1
        for cy, cx in centres:
            sl, ts, core = _speck(shape, cy, cx, diam[i], depth[i], elong[i], rng.uniform(0, np.pi),
                                  rng.uniform(0.0, 0.05))
            t[sl] *= ts
            labels[sl][core & (labels[sl] == 0)] = k
    for y, x in spots:
        k += 1
        yy, xx = np.ogrid[: shape[0], : shape[1]]
        labels[(np.hypot(yy - y, xx - x) < 5) & (labels == 0)] = k
    image = np.round(scene * t).astype(np.float32)
    return image, labels, umbra


def score_detection(dust_labels, truth, umbra):
    """Object recall and precision of a detection's labels against the truth; shadows on the umbra."""
    grown = ndimage.grey_dilation(truth, size=5)
    n_true = int(truth.max())
    hit = np.unique(grown[dust_labels > 0])
    found = np.setdiff1d(np.unique(truth[(ndimage.grey_dilation(dust_labels, size=5) > 0) & (truth > 0)]), [0])
    ids = np.setdiff1d(np.unique(dust_labels), [0])
    true_pos = [i for i in ids if np.any(grown[dust_labels == i] > 0)]
    on_umbra = [i for i in ids if np.any(umbra[dust_labels == i])]
    del hit
    return {"recall": len(found) / max(n_true, 1), "precision": len(true_pos) / max(len(ids), 1),
            "n_true": n_true, "n_detected": int(len(ids)), "n_false": int(len(ids) - len(true_pos)),
            "on_umbra": int(len(on_umbra))}
