"""The shadow catalog as ECSV: the one writer behind ``dust.ecsv`` and the measured-flat catalog."""

import logging

from ..products import CATALOG_COLUMNS
from ..utils._atomic import atomic_output

__all__ = ["write_catalog_ecsv"]

log = logging.getLogger(__name__)

#: First comment line of every aiflat catalog.
CATALOG_COMMENT = "aiflat_astro dust catalog: one row per sensor-dust shadow"


def write_catalog_ecsv(path, table, *, comments=(), meta=None, overwrite=False):
    """Write a shadow catalog as ECSV, atomically, with the standard units and column descriptions.

    Parameters
    ----------
    path : str or path-like
        Output ``.ecsv`` file.
    table : `~astropy.table.Table`
        The catalog (not modified); columns named in
        `~aiflat_astro.products.CATALOG_COLUMNS` get their unit and description.
    comments : sequence of str, optional
        Comment lines after the standard first one.
    meta : dict, optional
        Further header entries (``detector``, ``n_shadows``, ...).
    overwrite : bool, optional
        Replace an existing file (default False).

    Returns
    -------
    `~astropy.table.Table`
        The table written.

    Examples
    --------
    >>> import os, tempfile
    >>> from astropy.table import Table
    >>> from aiflat_astro.products import empty_catalog
    >>> p = os.path.join(tempfile.mkdtemp(), "c.ecsv")
    >>> _ = write_catalog_ecsv(p, empty_catalog(), meta={"detector": "local"})
    >>> t = Table.read(p)
    >>> t.meta["detector"], str(t["area"].unit), t.meta["comments"][0][:20]
    ('local', 'pix2', 'aiflat_astro dust ca')
    """
    table = table.copy()
    for name in table.colnames:
        if name in CATALOG_COLUMNS:
            _, unit, desc = CATALOG_COLUMNS[name]
            table[name].unit = unit
            table[name].description = desc
    table.meta = {"comments": [CATALOG_COMMENT, *comments], **dict(meta or {})}
    with atomic_output(path, overwrite=overwrite) as tmp:
        table.write(tmp, format="ascii.ecsv")
    log.debug("wrote %s (%d rows)", path, len(table))
    return table
