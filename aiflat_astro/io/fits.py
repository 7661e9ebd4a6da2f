"""FITS products of aiflat_astro: the dust mask (and, from the flat step, the flat).

Every product is written atomically (temporary file + rename) with
CHECKSUM/DATASUM on every HDU, ``ROWORDER = 'TOP-DOWN'`` and the provenance
keywords of `aiflat_astro.provenance`; readers verify the checksums and refuse
a corrupted or edited file.

``mask.fits`` layout:

========  ========  ===========================================================
HDU       type      content
========  ========  ===========================================================
0         uint8     DQ bitmask (`~aiflat_astro.dq.DustDQ` bits), BITPIX 8,
                    provenance keywords
DQ_DEF    table     BIT, VALUE, NAME, DESCRIPTION of the bits
WEIGHT    float32   soft blending weight 0..1
PROVJSON  uint8     provenance as UTF-8 JSON (lossless), shadow catalog included
========  ========  ===========================================================
"""

import logging
from pathlib import Path

import numpy as np
from astropy.io import fits

from ..dq import dq_definitions_table
from ..provenance import add_provenance_cards, provjson_hdu, read_provjson, verify_checksums
from ..utils._atomic import atomic_output
from ..utils._colour import is_colour
from ..utils.exceptions import InputError

__all__ = ["read_median", "write_mask", "read_mask", "write_flat", "read_flat"]

log = logging.getLogger(__name__)

# cards of the input header that describe its own data layout, not the mask's
_STRUCTURAL = {"", "SIMPLE", "BITPIX", "EXTEND", "XTENSION", "PCOUNT", "GCOUNT", "BSCALE", "BZERO",
               "BUNIT", "CHECKSUM", "DATASUM", "EXTNAME", "COMMENT", "HISTORY"}

ROWORDER = ("TOP-DOWN", "row 0 = top row of the sensor (SER order)")


def _write_hdul(path, hdul, overwrite):
    """Write ``hdul`` atomically with CHECKSUM/DATASUM on every HDU."""
    with atomic_output(path, overwrite=overwrite) as tmp:
        hdul.writeto(tmp, checksum=True)
    log.info("wrote %s", path)


def _open_verified(path, what):
    """Open a FITS product and verify its checksums; the caller closes it."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} file {str(path)!r} does not exist")
    try:
        hdul = fits.open(path, memmap=False)
    except OSError as exc:
        raise InputError(f"cannot read {str(path)!r} as FITS: {exc}") from None
    try:
        verify_checksums(hdul, filename=path.name)
    except Exception:
        hdul.close()
        raise
    return hdul


def read_median(path):
    """Read a 2-D image (the temporal median) from a FITS file as float32 `~astropy.nddata.CCDData`.

    The first HDU holding a 2-D image (or an RGB image, ``ny x nx x 3``) is used.  Checksums are verified when the
    file has them (every aiflat product does); a file that is not FITS, or has
    no 2-D image, raises `~aiflat_astro.utils.exceptions.InputError`.

    Examples
    --------
    >>> import os, tempfile, numpy as np
    >>> from astropy.io import fits
    >>> path = os.path.join(tempfile.mkdtemp(), "median.fits")
    >>> fits.PrimaryHDU(np.full((4, 5), 7, np.uint16)).writeto(path, checksum=True)
    >>> median = read_median(path)
    >>> median.shape, median.data.dtype, str(median.unit)
    ((4, 5), dtype('float32'), 'adu')
    """
    from astropy.nddata import CCDData

    path = Path(path)
    if not path.is_file():
        raise InputError(f"median file {str(path)!r} does not exist")
    try:
        hdul = fits.open(path, memmap=False)
    except OSError as exc:
        raise InputError(f"cannot read {str(path)!r} as FITS (expected the median of aiflat median): "
                         f"{exc}") from None
    with hdul:
        if any("CHECKSUM" in h.header for h in hdul):
            verify_checksums(hdul, filename=path.name)
        hdu = next((h for h in hdul if h.data is not None and (h.data.ndim == 2 or is_colour(h.data))), None)
        if hdu is None:
            raise InputError(f"{str(path)!r} has no 2-D (or RGB) image (expected the median of aiflat median)")
        header = hdu.header.copy()
        data = np.array(hdu.data, dtype=np.float32)
    return CCDData(data, unit=header.get("BUNIT") or "adu", meta=header)


def write_mask(path, detection, *, overwrite=False, header=None):
    """Write a `~aiflat_astro.detection.DustDetection` as ``mask.fits``.

    Parameters
    ----------
    path : str or `pathlib.Path`
        Output file.
    detection : `~aiflat_astro.detection.DustDetection`
        DQ, weight, catalog and provenance to write.
    overwrite : bool, optional
        Replace an existing file.
    header : `~astropy.io.fits.Header`, optional
        Extra cards for the primary header (for example ``OBSERVER``,
        ``INSTRUME`` copied from the median).

    Examples
    --------
    >>> import tempfile, os, numpy as np
    >>> from aiflat_astro.detection import DustDetection, empty_catalog
    >>> dq = np.zeros((16, 16), np.uint8); dq[4:6, 4:6] = 1
    >>> det = DustDetection(dq=dq, weight=(dq > 0).astype(np.float32), catalog=empty_catalog())
    >>> path = os.path.join(tempfile.mkdtemp(), "mask.fits")
    >>> write_mask(path, det)
    >>> int(read_mask(path).dust_mask.sum())
    4
    """
    dq = np.asarray(detection.dq)
    if dq.dtype != np.uint8 or dq.ndim != 2:
        raise InputError("the detection's DQ must be a 2-D uint8 array")
    hdr = fits.Header()
    if header is not None:
        for card in header.cards:
            if card.keyword not in _STRUCTURAL and not card.keyword.startswith("NAXIS"):
                hdr.append(card)
    prov = dict(detection.provenance or {})
    prov.setdefault("detector", detection.detector)
    add_provenance_cards(hdr, prov)
    hdr["ROWORDER"] = ROWORDER
    # explicit, as in flat.fits: CCDData.read(mask.fits) then needs no unit=
    hdr["BUNIT"] = ("", "dimensionless: data-quality bit flags")
    hdr["EXTNAME"] = ("DQ", "data-quality bits (see DQ_DEF)")
    primary = fits.PrimaryHDU(dq, header=hdr)
    weight = fits.ImageHDU(np.asarray(detection.weight, dtype=np.float32), name="WEIGHT")
    weight.header["ROWORDER"] = ROWORDER
    weight.header["COMMENT"] = "soft blending weight: 1 inside the dust, Gaussian soft edge outside"
    dq_def = fits.BinTableHDU(dq_definitions_table(), name="DQ_DEF")
    from ..products import _catalog_records

    record = dict(prov)
    record["catalog"] = _catalog_records(detection.catalog)
    hdul = fits.HDUList([primary, dq_def, weight, provjson_hdu(record)])
    _write_hdul(path, hdul, overwrite)


def read_mask(path):
    """Read a ``mask.fits`` written by `write_mask`; checksums are verified.

    Parameters
    ----------
    path : str or `pathlib.Path`
        The mask file.

    Returns
    -------
    `~aiflat_astro.detection.DustDetection`
        With the catalog stored in ``PROVJSON`` (or rebuilt from the DUST bit
        when absent).

    Raises
    ------
    `~aiflat_astro.utils.exceptions.ProvenanceError`
        A checksum does not verify (the file is corrupted or was edited).
    `~aiflat_astro.utils.exceptions.InputError`
        The file is not an aiflat mask.
    """
    from ..products import DustDetection, _catalog_from_rows, empty_catalog

    hdul = _open_verified(path, "mask")
    with hdul:
        names = [h.name for h in hdul]
        data = hdul[0].data
        if data is None or data.ndim != 2 or data.dtype != np.uint8 or "WEIGHT" not in names:
            raise InputError(f"{Path(path).name} is not an aiflat mask (uint8 DQ primary + WEIGHT expected)")
        dq = np.array(data, dtype=np.uint8)
        weight = np.array(hdul["WEIGHT"].data, dtype=np.float32)
        prov = read_provjson(hdul) if "PROVJSON" in names else {}
        detector = hdul[0].header.get("DETECTOR", prov.get("detector", "unknown"))
    rows = prov.pop("catalog", None)
    if rows is None:
        from scipy import ndimage

        from ..dq import DustDQ
        from ..products import catalog_from_labels

        labels, _ = ndimage.label((dq & DustDQ.DUST) > 0, structure=np.ones((3, 3), bool))
        catalog = catalog_from_labels(labels)
    else:
        with_distance = any("distance_mm" in r for r in rows)
        catalog = _catalog_from_rows(rows, with_distance=with_distance) if rows else \
            empty_catalog(with_distance=with_distance)
    return DustDetection(dq=dq, weight=weight, catalog=catalog, detector=str(detector), provenance=prov)


# --------------------------------------------------------------------------------------
# flat.fits (the hand)
# --------------------------------------------------------------------------------------
#: ``flat.fits`` layout: primary float32 flat (``BUNIT = ''``, provenance keywords),
#: ``DQ`` uint8, ``DQ_DEF`` table, optional ``UNCERT`` float32 (``UTYPE``), ``PROVJSON``.
FLAT_HDUS = ("PRIMARY", "DQ", "DQ_DEF", "UNCERT", "PROVJSON")
_FLAT_ROWORDER = ("TOP-DOWN", "row 0 = top row of the sensor (SER order)")


def _flat_provenance(header):
    """The flat's provenance dict: the in-memory JSON record, else what the cards say."""
    import json

    text = header.get("PROVJSON")
    if text:
        return json.loads(text)
    keys = {"DETECTOR": "detector", "INPAINT": "inpaint", "INPSHA": "input_sha256",
            "MASKSHA": "mask_sha256", "AIMODEL": "ai_model", "PRMTSHA": "prompt_sha256",
            "RESPSHA": "response_sha256"}
    return {v: header[k] for k, v in keys.items() if k in header}


def write_flat(path, flat, *, overwrite=False):
    """Write a synthetic flat (`~aiflat_astro.flat.make_flat`) as ``flat.fits``.

    Layout (the contract of DESIGN.md): primary HDU float32 flat with an
    explicit ``BUNIT = ''`` (so that ``CCDData.read`` gives a dimensionless
    flat), ``ROWORDER`` and the provenance keywords; ``DQ`` uint8 bitmask;
    ``DQ_DEF`` table; ``UNCERT`` float32 standard deviation (only when the
    flat has an uncertainty, with ``UTYPE``); ``PROVJSON`` lossless
    provenance; CHECKSUM/DATASUM on every HDU.  No HDU is named ``MASK``:
    ``CCDData.read`` would load it as the mask, and ``ccdproc.flat_correct``
    resets masked flat pixels to 1.0, leaving the dust uncorrected.

    Parameters
    ----------
    path : str or `pathlib.Path`
        Output file (written atomically).
    flat : `~astropy.nddata.CCDData`
        The flat; ``flags`` holds the DQ bits (zeros are written when None).
        A ``mask`` is not written (see above): a warning says so.  A dust
        flat is dimensionless; a master flat with the dust flat multiplied in
        (`~aiflat_astro.flat.multiply_master_flat`) keeps its unit in ``BUNIT``.
    overwrite : bool, optional
        Replace an existing file.

    Examples
    --------
    >>> import os, tempfile, numpy as np
    >>> from astropy.nddata import CCDData
    >>> flat = CCDData(np.ones((8, 8), np.float32), unit="")
    >>> path = os.path.join(tempfile.mkdtemp(), "flat.fits")
    >>> write_flat(path, flat)
    >>> back = read_flat(path)
    >>> back.unit, back.flags.dtype.name, float(back.data.sum())
    (Unit(dimensionless), 'uint8', 64.0)
    """
    from astropy import units as u
    from astropy.nddata import CCDData

    from ..utils.exceptions import warn_user

    if not isinstance(flat, CCDData):
        raise InputError("write_flat needs a CCDData flat (see make_flat)")
    data = np.asarray(flat.data)
    if data.ndim != 2:
        raise InputError(f"a flat must be 2-D, got shape {data.shape}")
    unit = u.dimensionless_unscaled if flat.unit is None else flat.unit
    from ..utils._atomic import check_output_path

    check_output_path(path, overwrite=overwrite)
    if flat.mask is not None and np.any(flat.mask):
        warn_user("the flat's mask is not written: a MASK HDU would make ccdproc.flat_correct leave "
                  "the dust uncorrected; the DQ extension carries the flags")
    meta = fits.Header(flat.meta) if flat.meta else fits.Header()
    prov = _flat_provenance(meta)
    hdr = fits.Header()
    for card in meta.cards:
        if card.keyword in _STRUCTURAL or card.keyword.startswith("NAXIS") or card.keyword in ("PROVJSON", "UTYPE"):
            continue
        hdr.append(card)
    for line in meta.get("HISTORY", []):
        hdr.add_history(line)
    for key in ("PROCSOFT", "DATE"):
        if key not in hdr:
            add_provenance_cards(hdr, prov)
            break
    if unit == u.dimensionless_unscaled:
        hdr["BUNIT"] = ("", "dimensionless: divide science frames by the flat")
    else:  # a master flat with the dust flat multiplied in keeps the master's unit
        hdr["BUNIT"] = unit.to_string("fits")
    hdr["ROWORDER"] = _FLAT_ROWORDER
    primary = fits.PrimaryHDU(data.astype(np.float32, copy=False), header=hdr)
    flags = np.zeros(data.shape, np.uint8) if flat.flags is None else np.asarray(flat.flags)
    if flags.shape != data.shape:
        raise InputError(f"flags shape {flags.shape} differs from the flat's {data.shape}")
    if flags.size and (flags.min() < 0 or flags.max() > 255):
        raise InputError("the flat's flags must be uint8 DustDQ bits")
    dq = fits.ImageHDU(flags.astype(np.uint8), name="DQ")
    dq.header["ROWORDER"] = _FLAT_ROWORDER
    dq.header["COMMENT"] = "data-quality bits, see DQ_DEF and aiflat_astro.dq.DustDQ"
    hdus = [primary, dq, fits.BinTableHDU(dq_definitions_table(), name="DQ_DEF")]
    if flat.uncertainty is not None:
        from astropy.nddata import StdDevUncertainty

        unc = flat.uncertainty
        if not isinstance(unc, StdDevUncertainty):
            unc = unc.represent_as(StdDevUncertainty)
        uhdu = fits.ImageHDU(np.asarray(unc.array, dtype=np.float32), name="UNCERT")
        uhdu.header["UTYPE"] = ("StdDevUncertainty", "1-sigma uncertainty of the flat")
        uhdu.header["ROWORDER"] = _FLAT_ROWORDER
        hdus.append(uhdu)
    hdus.append(provjson_hdu(prov))
    _write_hdul(path, fits.HDUList(hdus), overwrite)


def read_flat(path):
    """Read a ``flat.fits`` written by `write_flat`; checksums are verified.

    Parameters
    ----------
    path : str or `pathlib.Path`
        The flat file.

    Returns
    -------
    `~astropy.nddata.CCDData`
        float32 data, unit from ``BUNIT`` (dimensionless for a dust flat), ``flags`` = uint8 DQ,
        ``uncertainty`` from ``UNCERT`` when present, ``meta`` = primary
        header plus the ``PROVJSON`` record (as JSON text under that key, so
        that writing it again keeps the record).

    Raises
    ------
    `~aiflat_astro.utils.exceptions.ProvenanceError`
        A checksum does not verify: the file is corrupted or was edited.
    `~aiflat_astro.utils.exceptions.InputError`
        The file is not an aiflat flat.
    """
    from astropy import units as u
    from astropy.nddata import CCDData, StdDevUncertainty

    flat, flags, unc, header = _read_flat_parts(path)
    unit = u.Unit(header.get("BUNIT", ""), format="fits") if header.get("BUNIT") else u.dimensionless_unscaled
    unc = None if unc is None else StdDevUncertainty(unc)
    return CCDData(flat, unit=unit, flags=flags, uncertainty=unc, meta=header)


def _read_flat_parts(path, *, provenance=True):
    """`read_flat` without building a `~astropy.nddata.CCDData` (for ``aiflat apply``).

    Returns ``(flat, dq, uncertainty or None, header)``: the same checks and
    checksum verification as `read_flat`, without importing `astropy.nddata`.
    ``provenance=False`` leaves the ``PROVJSON`` record out of the header.
    """
    import json

    hdul = _open_verified(path, "flat")
    with hdul:
        names = [h.name for h in hdul]
        data = hdul[0].data
        if data is None or data.ndim != 2 or data.dtype.kind != "f" or "DQ" not in names:
            raise InputError(f"{Path(path).name} is not an aiflat flat (float primary image + DQ expected)")
        if "MASK" in names:
            raise InputError(f"{Path(path).name} has a MASK extension: not an aiflat flat (ccdproc would "
                             "leave masked dust uncorrected)")
        header = hdul[0].header.copy()
        for key in ("CHECKSUM", "DATASUM"):
            header.remove(key, ignore_missing=True)
        flags = np.array(hdul["DQ"].data, dtype=np.uint8)
        unc = np.array(hdul["UNCERT"].data, dtype=np.float32) if "UNCERT" in names else None
        if provenance and "PROVJSON" in names:
            header["PROVJSON"] = json.dumps(read_provjson(hdul), sort_keys=True, ensure_ascii=True,
                                            separators=(",", ":"))
        flat = np.array(data, dtype=np.float32)
    return flat, flags, unc, header
