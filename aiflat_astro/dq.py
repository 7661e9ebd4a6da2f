"""Data-quality bits of aiflat_astro products (mask.fits and flat.fits).

The bits are the project's contract: the same uint8 bitmask is stored in
``mask.fits`` (primary HDU) and ``flat.fits`` (``DQ`` HDU), documented in a
``DQ_DEF`` table, and read with `astropy.nddata.bitmask`.

Examples
--------
>>> import numpy as np
>>> from astropy.nddata.bitmask import bitfield_to_boolean_mask
>>> from aiflat_astro.dq import DustDQ
>>> dq = np.array([0, DustDQ.DUST, DustDQ.DUST_HALO, DustDQ.DUST | DustDQ.REVIEW], dtype=np.uint8)
>>> bitfield_to_boolean_mask(dq, ignore_flags="DUST_HALO", flag_name_map=DustDQ)
array([False,  True, False,  True])
"""

import numpy as np

# DustDQ is served by the module __getattr__.
__all__ = ["DustDQ", "DQ_BITS", "dq_definitions_table", "expand_mask", "static_defects"]  # noqa: F822

#: (bit, value, name, description) for every DQ bit, in bit order.
DQ_BITS = tuple(
    (bit, 1 << bit, name, desc)
    for bit, (name, desc) in enumerate([
        ("DUST", "inside a dust shadow; corrected by the flat"),
        ("DUST_HALO", "blending zone around a shadow"),
        ("LOW_TRANS", "transmission below the floor: not reliably correctable"),
        ("HOT", "static bright outlier pixel"),
        ("COLD", "static dark/dead pixel"),
        ("SATURATED", "saturated in the median"),
        ("REVIEW", "detectors disagree, or a low-confidence detection"),
        ("GENERATED", "flat value inside came from a generative model, not from data"),
    ])
)

#: Bit values by name (`DustDQ` is built from the same table on first use).
_VALUE = {name: value for _, value, name, _ in DQ_BITS}

_DUSTDQ_DOC = """Names of the aiflat_astro DQ bits, for `astropy.nddata.bitmask` functions.

    A `~astropy.nddata.bitmask.BitFlagNameMap`: use it as ``flag_name_map`` in
    `~astropy.nddata.bitmask.bitfield_to_boolean_mask` and
    `~astropy.nddata.bitmask.interpret_bit_flags`.  Each attribute is the
    bit's value with its description (``DustDQ.DUST == 1``).
    """


def _make_dustdq():
    # built on first use (module __getattr__): importing astropy.nddata takes 0.3 s that
    # the ``aiflat`` command does not need to copy a video
    from astropy.nddata.bitmask import BitFlagNameMap

    members = {"__module__": __name__, "__qualname__": "DustDQ", "__doc__": _DUSTDQ_DOC}
    members.update({name: (value, desc) for _, value, name, desc in DQ_BITS})
    return type(BitFlagNameMap)("DustDQ", (BitFlagNameMap,), members)


def __getattr__(name):
    if name == "DustDQ":
        cls = globals().get("_DustDQ") or _make_dustdq()
        globals()["_DustDQ"] = cls
        globals()["DustDQ"] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def dq_definitions_table():
    """Return the ``DQ_DEF`` table (BIT, VALUE, NAME, DESCRIPTION) as an `~astropy.table.Table`.

    Examples
    --------
    >>> t = dq_definitions_table()
    >>> [str(n) for n in t["NAME"][:2]]
    ['DUST', 'DUST_HALO']
    >>> int(t["VALUE"][7])
    128
    """
    from astropy.table import Table

    return Table(
        rows=[(b, v, n, d) for b, v, n, d in DQ_BITS],
        names=("BIT", "VALUE", "NAME", "DESCRIPTION"),
        dtype=(np.int16, np.int16, "U16", "U80"),
    )


def expand_mask(dust_mask, *, dilate=2, soft_edge=1.5):
    """Dilate a dust mask and give it a Gaussian soft edge.

    Parameters
    ----------
    dust_mask : `numpy.ndarray`
        Boolean (H, W), True inside the dust shadows.
    dilate : float, optional
        Radius (pixels) of the disc the mask is dilated with; default 2.
    soft_edge : float, optional
        Gaussian sigma (pixels) of the edge outside the dilated mask; the
        weight there is ``exp(-d**2 / (2 soft_edge**2))`` for the distance
        ``d`` to the dilated mask, cut at ``3 soft_edge``.  0 gives a hard edge.

    Returns
    -------
    weight : `numpy.ndarray`
        float32 (H, W): 1 inside the dilated mask, 0..1 in the soft edge, 0 elsewhere.
    halo : `numpy.ndarray`
        Boolean (H, W): the blending zone (weight > 0 outside ``dust_mask``),
        the pixels to flag DUST_HALO.

    Examples
    --------
    >>> import numpy as np
    >>> m = np.zeros((9, 9), bool); m[4, 4] = True
    >>> w, halo = expand_mask(m, dilate=1, soft_edge=1)
    >>> float(w[4, 4]), float(w[4, 5]), round(float(w[4, 6]), 3), bool(halo[4, 4]), bool(halo[4, 6])
    (1.0, 1.0, 0.607, False, True)
    """
    from scipy import ndimage

    dust_mask = np.asarray(dust_mask, dtype=bool)
    if dust_mask.ndim != 2:
        raise ValueError(f"dust_mask must be 2-D, got shape {dust_mask.shape}")
    if not (dilate >= 0 and soft_edge >= 0):
        raise ValueError("dilate and soft_edge must be >= 0")
    weight = np.zeros(dust_mask.shape, np.float32)
    if not dust_mask.any():
        return weight, np.zeros(dust_mask.shape, bool)
    reach = int(np.ceil(dilate + 3 * soft_edge)) + 1
    # work inside the bounding box of the mask grown by the reach: fast for sparse dust
    rows = np.flatnonzero(dust_mask.any(axis=1))
    cols = np.flatnonzero(dust_mask.any(axis=0))
    r0, r1 = max(rows[0] - reach, 0), min(rows[-1] + reach + 1, dust_mask.shape[0])
    c0, c1 = max(cols[0] - reach, 0), min(cols[-1] + reach + 1, dust_mask.shape[1])
    sub = dust_mask[r0:r1, c0:c1]
    # distance of every pixel to the nearest dust pixel (0 inside)
    dist = ndimage.distance_transform_edt(~sub)
    core = dist <= dilate
    if soft_edge > 0:
        outside = np.clip(dist - dilate, 0, None)
        w = np.exp(-0.5 * (outside / soft_edge) ** 2)
        w[outside > 3 * soft_edge] = 0
        w[core] = 1
    else:
        w = core.astype(np.float64)
    weight[r0:r1, c0:c1] = w
    halo = (weight > 0) & ~dust_mask
    return weight, halo


def static_defects(median, *, nsigma=8.0, contrast=4.0):
    """Flag HOT, COLD and SATURATED pixels that are evident in a median.

    A median of many frames keeps only static defects.  A pixel is HOT (COLD)
    when it stands above (below) *all* of its 8 neighbours by more than
    ``nsigma`` robust sigmas of the pixel-to-pixel residual, and its excess over
    the local level is ``contrast`` times larger than that of its brightest
    (darkest) neighbour: stars and solar fine structure, which spill into
    neighbouring pixels, are not defects.  SATURATED pixels are those at the
    observed maximum when the histogram piles up there (a clipped sensor), so
    the saturation level comes from the data, not from the nominal bit depth.

    Parameters
    ----------
    median : `numpy.ndarray` or `~astropy.nddata.CCDData`
        2-D image.
    nsigma : float, optional
        Significance of a defect in robust sigmas; default 8.
    contrast : float, optional
        Required ratio of the pixel's excess to its most extreme neighbour's; default 4.

    Returns
    -------
    `numpy.ndarray`
        uint8 (H, W) with the HOT, COLD and SATURATED bits.

    Examples
    --------
    >>> import numpy as np
    >>> img = np.random.default_rng(0).normal(1000, 5, (64, 64))
    >>> img[10, 10] = 3000; img[20, 30] = 0; img[40:43, 40:43] = 4095
    >>> dq = static_defects(img)
    >>> int(dq[10, 10]), int(dq[20, 30]), int(dq[41, 41])
    (8, 16, 32)
    """
    from scipy import ndimage

    data = np.array(getattr(median, "data", median), dtype=np.float32)
    if data.ndim != 2:
        raise ValueError(f"median must be 2-D, got shape {data.shape}")
    dq = np.zeros(data.shape, np.uint8)
    finite = np.isfinite(data)
    if finite.sum() < 9:
        return dq
    fill = np.where(finite, data, np.nanmedian(data))
    # -- saturation: a pile-up at the observed maximum
    vmax = float(fill[finite].max())
    at_max = finite & (data >= vmax - 1e-6 * max(abs(vmax), 1.0))
    n_max = int(at_max.sum())
    if n_max >= 3:
        span = vmax - float(np.median(fill[finite]))
        below = finite & (data < vmax - 1e-6 * max(abs(vmax), 1.0)) & (data >= vmax - 0.005 * span)
        if span > 0 and n_max > 3 * int(below.sum()):
            dq[at_max] |= np.uint8(_VALUE["SATURATED"])
    # -- hot and cold pixels against their 8 neighbours
    ring = np.ones((3, 3), bool)
    ring[1, 1] = False
    nmax = ndimage.maximum_filter(fill, footprint=ring, mode="nearest")
    nmin = ndimage.minimum_filter(fill, footprint=ring, mode="nearest")
    # local level: mean of the 8 neighbours (a median filter costs 20x more)
    level = (9 * ndimage.uniform_filter(fill, size=3, mode="nearest") - fill) / 8
    resid = fill - level
    sample = resid[finite][:: max(1, int(finite.sum()) // 200000)]
    sigma = 1.4826 * float(np.median(np.abs(sample - np.median(sample))))
    sigma = max(sigma, 1e-6 * max(abs(float(np.median(fill))), 1.0))
    hot = (fill - nmax > nsigma * sigma) & (fill - level > contrast * np.abs(nmax - level))
    cold = (nmin - fill > nsigma * sigma) & (level - fill > contrast * np.abs(level - nmin))
    sat = (dq & _VALUE["SATURATED"]) > 0
    dq[hot & finite & ~sat] |= np.uint8(_VALUE["HOT"])
    dq[cold & finite] |= np.uint8(_VALUE["COLD"])
    return dq
