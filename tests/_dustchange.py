"""Dust changes made to simulated videos for the night's dust-change check (tests and bench_night.py).

A removed speck: a video's frames divided by one true speck's transmission.  A new speck: its frames
multiplied by one more realistic speck's transmission.  Small test videos only (read whole).
"""

import numpy as np


def rewrite_video(path, factor):
    """Rewrite the SER video at ``path`` with its frames multiplied by ``factor`` (rounded, clipped)."""
    from aiflat_astro.io import SERReader, write_ser

    with SERReader(path) as r:
        frames = np.stack([r.read(i) for i in range(r.n_frames)]).astype(np.float64)
        dtype, top = r.dtype, 2 ** r.header.pixel_depth - 1
    path.unlink()
    write_ser(path, np.clip(np.round(frames * factor), 0, top).astype(dtype))


def lit(truth, pixels):
    """Whether the video's scene lights these pixels (over half the scene's 99th percentile)."""
    return truth.scene[pixels].mean() > 0.5 * np.percentile(truth.scene, 99)


def remove_speck(path, truth):
    """Divide out the deepest true speck (over 10 % deep) that the video's scene lights; its centre or None."""
    best = None
    for label in truth.shadows["id"]:
        px = truth.labels == int(label)
        depth = 1 - float(truth.transmission[px].min())
        if lit(truth, px) and depth > 0.1 and (best is None or depth > best[1]):
            best = (int(label), depth)
    if best is None:
        return None
    px = truth.labels == best[0]
    rewrite_video(path, np.where(px, 1.0 / truth.transmission, 1.0))
    ys, xs = np.nonzero(px)
    return float(xs.mean()), float(ys.mean())


def add_speck(path, truth, shape, seed):
    """Multiply in one more realistic speck (at least 30 % deep, lit, clear of the others); its centre or None."""
    from scipy import ndimage

    from aiflat_astro.datasets.dust import make_dust_transmission

    clear = ~ndimage.binary_dilation(truth.labels > 0, iterations=12)
    for s in range(200):
        trans, labels, _ = make_dust_transmission(shape, regime="solar", n_dust=1, seed=seed + s)
        px = labels > 0
        if px.any() and 1 - trans.min() >= 0.3 and lit(truth, px) and clear[px].all():
            rewrite_video(path, trans)
            ys, xs = np.nonzero(px)
            return float(xs.mean()), float(ys.mean())
    return None
