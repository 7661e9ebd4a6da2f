"""The loaders of the real observations in shared/data/real."""

import numpy as np

from aiflat_astro.datasets.real import XU2016_CENTROIDS


def test_xu2016_loads(xu2016):
    assert xu2016.frames.shape == (9, 2032, 2032)
    assert xu2016.frames.dtype == np.float32
    # the disc is bright where the README puts its centre, in every frame
    for frame, (r, c) in zip(xu2016.frames, XU2016_CENTROIDS):
        assert frame[int(r) - 5:int(r) + 5, int(c) - 5:int(c) + 5].mean() > 20


def test_star_field_path(real_star_field):
    assert real_star_field.name == "a8280271.fits"
