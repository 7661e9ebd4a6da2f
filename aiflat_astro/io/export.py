"""Other formats of the synthetic flat: an ASDF sidecar and TIFF for PixInsight & co.

* `write_flat_asdf`: an ASDF file (asdf-astropy) with the flat, its DQ bits,
  the soft weight, the uncertainty, the dust catalog and the provenance tree,
  zlib-compressed, with a history entry naming the software.
* `write_flat_tiff`: a single-channel TIFF.  ``'uint16'`` follows the seed
  convention used in PixInsight (``65535 = 1.0``: divide with PixelMath
  ``$T / (flat / 65535)``); values above 1.0 (bright diffraction rims) are
  **clipped** to 65535 and the quantisation step is 1/65535.  ``'float32'``
  keeps the exact flat values.

The FITS file (`~aiflat_astro.io.fits.write_flat`) stays the reference
product: only it carries checksums that `~aiflat_astro.io.fits.read_flat`
verifies.
"""

import json
import logging

import numpy as np

from ..utils._atomic import atomic_output
from ..utils.exceptions import InputError, warn_user

__all__ = ["write_flat_asdf", "read_flat_asdf", "write_flat_tiff"]

log = logging.getLogger(__name__)

TIFF_SCALE = 65535


def _flat_parts(flat):
    from astropy.nddata import CCDData

    if not isinstance(flat, CCDData):
        raise InputError("the flat must be a CCDData (see make_flat / read_flat)")
    data = np.asarray(flat.data, dtype=np.float32)
    if data.ndim != 2:
        raise InputError(f"a flat must be 2-D, got shape {data.shape}")
    meta = flat.meta or {}
    prov = json.loads(meta["PROVJSON"]) if "PROVJSON" in meta else {}
    return data, prov


def write_flat_asdf(path, flat, *, detection=None, overwrite=False):
    """Write the flat and everything about it as an ASDF sidecar file.

    Parameters
    ----------
    path : str or `pathlib.Path`
        Output ``.asdf`` file (written atomically).
    flat : `~astropy.nddata.CCDData`
        The flat (`~aiflat_astro.flat.make_flat` or
        `~aiflat_astro.io.fits.read_flat`).
    detection : `~aiflat_astro.detection.DustDetection`, optional
        The dust mask the flat was made from: its ``weight`` and ``catalog``
        are stored too.
    overwrite : bool, optional
        Replace an existing file.

    Notes
    -----
    Tree keys: ``flat`` (float32), ``dq`` (uint8), ``uncertainty`` (float32
    or None), ``weight`` (float32 or None), ``catalog`` (`~astropy.table.Table`
    or None), ``provenance`` (the PROVJSON record), ``header`` (the primary
    header cards as a dict), ``dq_bits`` (name → value).

    Examples
    --------
    >>> import os, tempfile, numpy as np
    >>> from astropy.nddata import CCDData
    >>> path = os.path.join(tempfile.mkdtemp(), "flat.asdf")
    >>> write_flat_asdf(path, CCDData(np.ones((4, 4), np.float32), unit=""))
    >>> tree = read_flat_asdf(path)
    >>> tree["flat"].shape, tree["dq"].dtype.name
    ((4, 4), 'uint8')
    """
    import asdf

    from .. import __version__
    from ..dq import DQ_BITS

    data, prov = _flat_parts(flat)
    dq = np.zeros(data.shape, np.uint8) if flat.flags is None else np.asarray(flat.flags, dtype=np.uint8)
    header = {k: v for k, v in (flat.meta or {}).items()
              if k not in ("PROVJSON", "HISTORY", "COMMENT", "") and isinstance(v, (str, int, float, bool))}
    tree = {
        "flat": data,
        "dq": dq,
        "uncertainty": None if flat.uncertainty is None else np.asarray(flat.uncertainty.array, np.float32),
        "weight": None if detection is None else np.asarray(detection.weight, np.float32),
        "catalog": None if detection is None or detection.catalog is None else detection.catalog.copy(),
        "provenance": prov,
        "header": header,
        "dq_bits": {name: int(value) for _, value, name, _ in DQ_BITS},
    }
    af = asdf.AsdfFile(tree)
    af.add_history_entry("aiflat_astro synthetic dust flat",
                         software={"name": "aiflat_astro", "version": __version__})
    with atomic_output(path, overwrite=overwrite) as tmp:
        af.write_to(tmp, all_array_compression="zlib")
    log.info("wrote %s", path)


def read_flat_asdf(path):
    """Read an ASDF sidecar written by `write_flat_asdf` (block checksums verified).

    Returns
    -------
    dict
        The tree, with arrays loaded in memory.
    """
    import asdf

    with asdf.open(path, validate_checksums=True, lazy_load=False, memmap=False) as af:
        return {k: (np.array(v) if hasattr(v, "shape") and not hasattr(v, "colnames") else v)
                for k, v in af.tree.items() if not k.startswith("asdf_")}


def write_flat_tiff(path, flat, *, dtype="uint16", overwrite=False):
    """Write the flat as a single-channel TIFF for image-processing programs.

    Parameters
    ----------
    path : str or `pathlib.Path`
        Output ``.tif`` file (written atomically).
    flat : `~astropy.nddata.CCDData` or `~numpy.ndarray`
        The flat.
    dtype : {'uint16', 'float32'}, optional
        ``'uint16'``: ``round(flat * 65535)``, so 65535 = 1.0; values above
        1.0 are clipped (a warning gives the count) and values are quantised
        to 1/65535.  ``'float32'``: the exact values.
    overwrite : bool, optional
        Replace an existing file.

    Returns
    -------
    int
        Number of pixels clipped at 1.0 (always 0 for float32).

    Examples
    --------
    >>> import os, tempfile, numpy as np, tifffile
    >>> path = os.path.join(tempfile.mkdtemp(), "flat.tif")
    >>> f = np.ones((4, 4), np.float32); f[1, 1] = 0.5
    >>> write_flat_tiff(path, f)
    0
    >>> int(tifffile.imread(path)[1, 1])
    32768
    """
    import tifffile

    data = np.asarray(getattr(flat, "data", flat), dtype=np.float32)
    if data.ndim != 2:
        raise InputError(f"a flat must be 2-D, got shape {data.shape}")
    meta = getattr(flat, "meta", None) or {}
    description = {"software": str(meta.get("PROCSOFT", "aiflat_astro")),
                   "inpaint": str(meta.get("INPAINT", "")), "paramsha": str(meta.get("PARAMSHA", "")),
                   "roworder": "TOP-DOWN"}
    n_clipped = 0
    if dtype == "uint16":
        scaled = np.rint(data.astype(np.float64) * TIFF_SCALE)
        n_clipped = int(np.count_nonzero(scaled > TIFF_SCALE))
        if n_clipped:
            warn_user(f"{n_clipped} flat value(s) above 1.0 (bright rims) clipped to 65535 in the uint16 "
                      "TIFF; use the float32 TIFF or the FITS flat to keep them")
        out = np.clip(scaled, 0, TIFF_SCALE).astype(np.uint16)
        description["scale"] = "65535 = 1.0"
    elif dtype == "float32":
        out = data
        description["scale"] = "1.0 = 1.0"
    else:
        raise InputError(f"TIFF dtype must be 'uint16' or 'float32', got {dtype!r}")
    with atomic_output(path, overwrite=overwrite) as tmp:
        tifffile.imwrite(tmp, out, photometric="minisblack", description=json.dumps(description),
                         metadata=None)
    log.info("wrote %s (%s)", path, dtype)
    return n_clipped
