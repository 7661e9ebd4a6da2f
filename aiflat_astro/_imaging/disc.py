"""The circle through the limb of a solar or lunar disc."""

import numpy as np

__all__ = ["fit_circle"]


def fit_circle(y, x, *, refine=False):
    """Least-squares circle through points ``(y, x)``: ``(cy, cx, radius)``, or None if degenerate.

    The algebraic (Kåsa) fit; with ``refine`` it is the starting point of a
    geometric fit with a soft-L1 loss (`scipy.optimize.least_squares`), which
    is not pulled by a few points off the limb (a spot, a prominence).

    Parameters
    ----------
    y, x : array-like
        Row and column of the limb points (at least three, not on one line).
    refine : bool, optional
        Refine by the robust geometric fit (default False).

    Examples
    --------
    >>> import numpy as np
    >>> t = np.linspace(0, np.pi, 50)
    >>> cy, cx, r = fit_circle(30 + 100 * np.sin(t), 40 + 100 * np.cos(t))
    >>> round(cy, 6), round(cx, 6), round(r, 6)
    (30.0, 40.0, 100.0)
    >>> fit_circle([0.0, 1.0, 2.0], [0.0, 1.0, 2.0]) is None
    True
    """
    y = np.asarray(y, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    a = np.column_stack([x, y, np.ones_like(x)])
    (d, e, f), _, rank, _ = np.linalg.lstsq(a, -(x**2 + y**2), rcond=None)
    cy, cx = -e / 2, -d / 2
    r2 = cx**2 + cy**2 - f
    if rank < 3 or not r2 > 0:
        return None
    if not refine:
        return float(cy), float(cx), float(np.sqrt(r2))
    from scipy import optimize

    def residuals(p):
        return np.hypot(y - p[0], x - p[1]) - p[2]

    sol = optimize.least_squares(residuals, [cy, cx, np.sqrt(max(r2, 1.0))], loss="soft_l1", f_scale=1.0)
    return tuple(float(v) for v in sol.x)
