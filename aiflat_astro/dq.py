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
from astropy.nddata.bitmask import BitFlagNameMap

__all__ = ["DustDQ", "DQ_BITS", "dq_definitions_table"]


class DustDQ(BitFlagNameMap):
    """Names of the aiflat_astro DQ bits, for `astropy.nddata.bitmask` functions.

    Use it as ``flag_name_map`` in
    `~astropy.nddata.bitmask.bitfield_to_boolean_mask` and
    `~astropy.nddata.bitmask.interpret_bit_flags`.
    """

    DUST = 1, "inside a dust shadow; corrected by the flat"
    DUST_HALO = 2, "blending zone around a shadow"
    LOW_TRANS = 4, "transmission below the floor: not reliably correctable"
    HOT = 8, "static bright outlier pixel"
    COLD = 16, "static dark/dead pixel"
    SATURATED = 32, "saturated in the median"
    REVIEW = 64, "detectors disagree, or a low-confidence detection"
    GENERATED = 128, "flat value inside came from a generative model, not from data"


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
