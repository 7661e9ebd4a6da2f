"""Tests of the registry of clean-estimate methods (aiflat_astro.flat.estimators.registry)."""

import numpy as np
import pytest

from aiflat_astro.flat.estimators import registry
from aiflat_astro.flat.estimators.registry import (available_inpainters, get_inpainter, register_inpainter,
                                                   run_inpainter)
from aiflat_astro.utils.exceptions import InputError


def _plane(shape=(80, 96)):
    y, x = np.mgrid[0:shape[0], 0:shape[1]]
    return (1000 + 3.0 * x - 2.0 * y).astype(np.float64)


class _Det:
    def __init__(self, weight):
        self.weight = weight
        self.dq = (weight > 0).astype(np.uint8)


def test_registry_and_run_inpainter_protects_unmasked_pixels():
    median = _plane((32, 32)).astype(np.float32)
    weight = np.zeros(median.shape, np.float32)
    weight[10:14, 10:14] = 1

    def noisy(median, detection, *, frames=None, scale=2.0):
        return median * scale, {"generated": True, "params": {"SCALE": scale}}

    register_inpainter("test-noisy", noisy)
    try:
        assert "test-noisy" in available_inpainters()
        with pytest.raises(InputError, match="already registered"):
            register_inpainter("test-noisy", noisy)
        clean, info = run_inpainter("test-noisy", median, _Det(weight), scale=3.0)
        assert np.array_equal(clean[weight == 0], median[weight == 0])  # reset outside the weight
        assert np.allclose(clean[weight > 0], 3 * median[weight > 0])
        assert info["method"] == "test-noisy" and info["generated"] is True
    finally:
        registry._INPAINTERS.pop("test-noisy")


def test_registry_lazy_and_errors():
    register_inpainter("test-lazy", "aiflat_astro.flat.estimators.local:_local_inpainter")
    try:
        assert callable(get_inpainter("test-lazy"))
    finally:
        registry._INPAINTERS.pop("test-lazy")
    with pytest.raises(InputError, match="unknown inpainting method"):
        get_inpainter("nope")
    with pytest.raises(InputError, match="callable"):
        register_inpainter("bad", 42)

    def wrong_shape(median, detection, *, frames=None):
        return np.zeros((3, 3))

    register_inpainter("test-wrong", wrong_shape)
    try:
        with pytest.raises(InputError, match="returned shape"):
            run_inpainter("test-wrong", np.ones((8, 8)), _Det(np.ones((8, 8), np.float32)))
    finally:
        registry._INPAINTERS.pop("test-wrong")
