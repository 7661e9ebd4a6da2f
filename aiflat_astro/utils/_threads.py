"""Matrix products in the calling thread while a block of code runs.

The registration's upsampled DFT (a 768 x 513 by 513 x 30 complex product per
frame) and the flat's 3 x 3 solves are too small to gain from a BLAS thread
pool, and on a loaded machine each pool thread waits for a core: measured at a
load average of 8 on 2 cores, 24 ms a product with OpenBLAS's two threads and
0.9 ms with one (``docs/performance.rst``).  `threadpoolctl` sets the limit
for every BLAS loaded in the process and restores it on exit.
"""
from threadpoolctl import threadpool_limits

__all__ = ["serial_blas"]


def serial_blas():
    """A context manager that holds the process's BLAS libraries to one thread.

    Returns
    -------
    `threadpoolctl.threadpool_limits`
        Restores the previous thread counts on exit; nesting is safe.

    Examples
    --------
    >>> import numpy as np
    >>> from aiflat_astro.utils._threads import serial_blas
    >>> with serial_blas():
    ...     product = np.ones((4, 3)) @ np.ones((3, 2))
    >>> product.shape
    (4, 2)
    """
    return threadpool_limits(limits=1, user_api="blas")
