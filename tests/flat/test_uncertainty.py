"""The flat's UNCERT: the temporal scatter of a spread subset of the frames."""

import numpy as np
import pytest

from aiflat_astro.flat._uncertainty import SCATTER_FRAMES, _temporal_sigma
from aiflat_astro.io.frames import ArraySource
from aiflat_astro.utils.exceptions import InputError


class _CountingSource(ArraySource):
    """An array source that records the frames read."""

    def __init__(self, array):
        super().__init__(array)
        self.read_frames = []

    def read_rows(self, indices, r0, r1, *, out=None):
        self.read_frames += list(indices)
        return super().read_rows(indices, r0, r1, out=out)


def _video(n, shape=(40, 50), level=1000.0, noise=20.0, seed=3):
    rng = np.random.default_rng(seed)
    return (level + rng.normal(0, noise, (n,) + shape)).astype(np.float32)


def test_reads_a_spread_subset_and_matches_the_formula():
    n = 400
    frames = _video(n)
    region = np.zeros((40, 50), bool)
    region[5:9, 10:20] = region[30:35, 2:40] = True
    source = _CountingSource(frames)
    sigma = _temporal_sigma(source, region, mem_limit=20_000)
    # at most SCATTER_FRAMES distinct frames, spread over the whole video, each once
    assert len(source.read_frames) == len(set(source.read_frames)) == SCATTER_FRAMES
    assert min(source.read_frames) == 0 and max(source.read_frames) == n - 1
    assert np.all(sigma[~region] == 0)
    expected = 1.2533 * 20.0 / np.sqrt(n) / 1000.0   # divided by sqrt of all the frames
    assert np.median(sigma[region]) == pytest.approx(expected, rel=0.03)
    # per pixel: the scatter of an m-frame standard deviation is ~1 / sqrt(2 (m - 1))
    spread = np.std(sigma[region]) / np.mean(sigma[region])
    assert spread == pytest.approx(1 / np.sqrt(2 * (SCATTER_FRAMES - 1)), rel=0.25)


def test_all_frames_below_the_subset_size_and_rgb():
    frames = _video(30)
    region = np.zeros((40, 50), bool)
    region[12:14, 3:7] = True
    full = _temporal_sigma(frames, region, max_frames=1000)
    assert np.array_equal(_temporal_sigma(frames, region), full)
    rgb = np.repeat(frames[..., None], 3, axis=-1)
    assert np.allclose(_temporal_sigma(rgb, region), full)
    with pytest.raises(InputError):
        _temporal_sigma(frames, np.zeros((10, 10), bool))
    assert not _temporal_sigma(frames, np.zeros((40, 50), bool)).any()
