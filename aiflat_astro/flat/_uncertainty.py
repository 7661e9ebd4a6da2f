"""The flat's ``UNCERT``: the temporal scatter of the frames inside the dust, one streaming pass."""


import logging

import numpy as np

from ..utils._atomic import parse_size
from ..utils.exceptions import InputError


log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------
# uncertainty from the temporal scatter of the frames
# --------------------------------------------------------------------------------------
def _band_scatter(source, r0, r1, cols, budget, bar):
    """Relative standard error of the median over rows ``r0:r1``, columns ``cols``: frame blocks in budget."""
    n, (c0, c1) = source.n_frames, cols
    per_frame = (r1 - r0) * source.frame_shape[1] * max(source.dtype.itemsize, 1)
    block = int(max(1, min(n, budget // max(4 * per_frame, 1))))
    s1 = np.zeros((r1 - r0, c1 - c0))
    s2 = np.zeros((r1 - r0, c1 - c0))
    shift = None
    for i in range(0, n, block):
        chunk = source.read_rows(range(i, min(i + block, n)), r0, r1)[:, :, c0:c1].astype(np.float64)
        if chunk.ndim == 4:  # RGB frames: the scatter of the channel mean, as the flat is made on
            chunk = chunk.mean(axis=-1)
        if shift is None:
            shift = chunk[0].copy()  # shifted sums: numerically stable variance
        chunk -= shift
        s1 += chunk.sum(axis=0)
        s2 += np.square(chunk).sum(axis=0)
        if bar is not None:
            bar.update(chunk.shape[0])
    var = np.clip((s2 - s1 * s1 / n) / (n - 1), 0, None)
    mean = np.abs(shift + s1 / n)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(mean > 0, 1.2533 * np.sqrt(var / n) / mean, 0.0)


def _temporal_sigma(frames, region, *, mem_limit="256MB", progress_bar=False):
    """Relative standard error of the median at the ``region`` pixels from the frames' temporal scatter.

    ``sigma_median = 1.2533 * std_t / sqrt(N)`` (normal approximation),
    divided by the temporal mean (relative, so that it does not depend on
    the scaling of the median: RGB channel mean, raw colour mosaic phases),
    computed in one streaming pass over row bands holding masked pixels, in
    bounded memory.  Returns a float64 map (0 outside ``region``).
    """
    from ..io.frames import open_frames

    source = open_frames(frames)
    try:
        colour = len(source.frame_shape) == 3 and source.frame_shape[-1] == 3
        if tuple(source.frame_shape[:2]) != region.shape or not (len(source.frame_shape) == 2 or colour):
            raise InputError(f"frames of shape {source.frame_shape} do not match the median shape {region.shape}")
        n = source.n_frames
        rows = np.flatnonzero(region.any(axis=1))
        sigma = np.zeros(region.shape)
        if rows.size == 0 or n < 2:
            return sigma
        cols = np.flatnonzero(region.any(axis=0))
        c0, c1 = int(cols[0]), int(cols[-1]) + 1
        budget = parse_size(mem_limit)
        # bands of consecutive masked rows; each band read frame-block by frame-block
        breaks = np.flatnonzero(np.diff(rows) > 1)
        bands = np.split(rows, breaks + 1)
        bar = None
        if progress_bar:
            from tqdm.auto import tqdm

            bar = tqdm(total=n * len(bands), desc="flat uncertainty", unit="frame")
        for band in bands:
            r0, r1 = int(band[0]), int(band[-1]) + 1
            sigma[r0:r1, c0:c1] = _band_scatter(source, r0, r1, (c0, c1), budget, bar)
        if bar is not None:
            bar.close()
        sigma[~region] = 0.0
        return sigma
    finally:
        if source is not frames:
            source.close()


