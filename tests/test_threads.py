"""The BLAS thread limit used by the registration and the run (utils._threads)."""
import numpy as np
import pytest
from threadpoolctl import threadpool_info

from aiflat_astro.utils._threads import serial_blas


def _blas_threads():
    return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]


def test_serial_blas_holds_one_thread_and_restores():
    np.ones((8, 8)) @ np.ones((8, 8))  # numpy's BLAS is loaded
    before = _blas_threads()
    if not before:
        pytest.skip("no BLAS library that threadpoolctl can see")
    with serial_blas():
        assert _blas_threads() == [1] * len(before)
        with serial_blas():  # nested: still one, restored by the outer exit only
            assert _blas_threads() == [1] * len(before)
        assert _blas_threads() == [1] * len(before)
    assert _blas_threads() == before


def test_registration_products_unchanged_in_one_thread():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(300, 200)), rng.normal(size=(200, 30))
    free = a @ b
    with serial_blas():
        serial = a @ b
    np.testing.assert_allclose(serial, free, rtol=1e-12, atol=1e-12)
