"""The flat's ``UNCERT``: the temporal scatter in the dust, from frames spread over the video."""


import logging

import numpy as np

from ..io.frames import spread_indices
from ..utils._atomic import parse_size
from ..utils.exceptions import InputError


log = logging.getLogger(__name__)

#: Frames (spread over the video) whose scatter sets ``UNCERT``.  The relative standard error
#: of a standard deviation from m frames is about ``1 / sqrt(2 (m - 1))``: 8.9 % at 64, i.e.
#: the error bar known to better than 10 %, while reading every frame of a 400-frame video
#: again cost 6x more for an error bar known to 3.5 % (docs/performance.rst).
SCATTER_FRAMES = 64


# --------------------------------------------------------------------------------------
# uncertainty from the temporal scatter of the frames
# --------------------------------------------------------------------------------------
def _masked_pixels(source, picks, r0, r1, flat_idx):
    """The ``flat_idx`` pixels (flat indices into rows ``r0:r1``) of frames ``picks``, float64."""
    chunk = source.read_rows(picks, r0, r1)
    if chunk.ndim == 4:  # RGB frames: the scatter of the channel mean, as the flat is made on
        return chunk.reshape(len(picks), -1, chunk.shape[-1])[:, flat_idx].mean(axis=-1)
    return chunk.reshape(len(picks), -1)[:, flat_idx].astype(np.float64)


def _pixel_scatter(source, picks, r0, r1, flat_idx, budget, bar):
    """Temporal mean and sample variance of the ``flat_idx`` pixels over frames ``picks``.

    Frames are read in blocks within ``budget`` (rows ``r0:r1`` only, one positional read a
    frame); shifted sums keep the variance numerically stable.
    """
    per_frame = (r1 - r0) * int(np.prod(source.frame_shape[1:])) * max(source.dtype.itemsize, 1)
    block = int(max(1, min(len(picks), budget // max(2 * per_frame, 1))))
    s1 = np.zeros(flat_idx.size)
    s2 = np.zeros(flat_idx.size)
    shift = None
    for i in range(0, len(picks), block):
        values = _masked_pixels(source, picks[i:i + block], r0, r1, flat_idx)
        if shift is None:
            shift = values[0].copy()
        values -= shift
        s1 += values.sum(axis=0)
        s2 += np.square(values).sum(axis=0)
        if bar is not None:
            bar.update(values.shape[0])
    m = len(picks)
    var = np.clip((s2 - s1 * s1 / m) / (m - 1), 0, None)
    return np.abs(shift + s1 / m), var


def _temporal_sigma(frames, region, *, mem_limit="256MB", progress_bar=False,
                    max_frames=SCATTER_FRAMES):
    """Relative standard error of the median at the ``region`` pixels, from the temporal scatter.

    ``sigma_median = 1.2533 * std_t / sqrt(N)`` (normal approximation, ``N``
    the frames of the video), divided by the temporal mean (relative, so that
    it does not depend on the scaling of the median: RGB channel mean, raw
    colour mosaic phases).  ``std_t`` and the mean are measured on at most
    ``max_frames`` frames spread evenly over the video (`SCATTER_FRAMES`:
    the standard error of ``std_t`` is then about 9 %), reading only the rows
    between the first and last masked row, in bounded memory.  Returns a
    float64 map (0 outside ``region``).
    """
    from ..io.frames import open_frames

    source = open_frames(frames)
    try:
        colour = len(source.frame_shape) == 3 and source.frame_shape[-1] == 3
        mono = len(source.frame_shape) == 2
        if tuple(source.frame_shape[:2]) != region.shape or not (mono or colour):
            raise InputError(f"frames of shape {source.frame_shape} do not match the median "
                             f"shape {region.shape}")
        n = source.n_frames
        sigma = np.zeros(region.shape)
        rows = np.flatnonzero(region.any(axis=1))
        if rows.size == 0 or n < 2:
            return sigma
        r0, r1 = int(rows[0]), int(rows[-1]) + 1
        flat_idx = np.flatnonzero(region[r0:r1])
        picks = spread_indices(n, max(2, int(max_frames)))
        bar = None
        if progress_bar:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(picks), desc="flat uncertainty", unit="frame")
        mean, var = _pixel_scatter(source, picks, r0, r1, flat_idx, parse_size(mem_limit), bar)
        if bar is not None:
            bar.close()
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = np.where(mean > 0, 1.2533 * np.sqrt(var / n) / mean, 0.0)
        sigma[r0:r1].flat[flat_idx] = rel
        return sigma
    finally:
        if source is not frames:
            source.close()
