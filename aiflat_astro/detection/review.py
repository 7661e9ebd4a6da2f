"""The review loop: user masks and DS9 region edits of a dust detection.

A person looks at the preview (`~aiflat_astro.detection.write_preview`) or
at the median in DS9 with the detector's regions, then

* draws regions around false detections (``--exclude-regions``): shadows whose
  centroid falls inside are dropped;
* draws regions around missed shadows (``--include-regions``): each region
  becomes a shadow, measured on the median;
* or paints a whole mask (FITS or PNG, nonzero = dust, ``--user-mask``) that
  replaces the detector.

Region files use image coordinates (DS9 ``image``; `regions` converts them to
0-based pixels); rows are top-down, as in the median FITS file.  One file can
hold both edits (the ``review.reg`` that ``aiflat report``'s Export button
saves): regions tagged ``tag={include}`` are ignored as exclude regions and
regions tagged ``tag={reject}`` are ignored as include regions, so the same
file goes to ``--exclude-regions`` and ``--include-regions``.
"""

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..dq import DustDQ
from ..utils.exceptions import InputError
from ..products import DustDetection, catalog_from_labels

__all__ = ["read_regions", "apply_region_edits", "detection_from_mask", "catalog_from_mask",
           "read_user_mask"]

log = logging.getLogger(__name__)


def read_regions(regions):
    """Read a DS9 region file (image coordinates) into a list of pixel regions.

    Parameters
    ----------
    regions : str, `pathlib.Path`, `regions.Regions` or list of pixel regions

    Returns
    -------
    list of `regions.PixelRegion`

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> p = Path(tempfile.mkdtemp()) / "x.reg"
    >>> _ = p.write_text("image; circle(11,21,5)")
    >>> r = read_regions(p)[0]
    >>> float(r.center.x), float(r.center.y), float(r.radius)
    (10.0, 20.0, 5.0)
    """
    from regions import PixelRegion, Regions

    if isinstance(regions, (str, Path)):
        path = Path(regions)
        if not path.is_file():
            raise InputError(f"region file {str(path)!r} does not exist")
        try:
            regions = Regions.read(str(path), format="ds9")
        except Exception as exc:  # regions raises several parser exceptions
            raise InputError(f"cannot read {path.name} as a DS9 region file: {exc}") from None
    items = list(regions)
    for reg in items:
        if not isinstance(reg, PixelRegion):
            raise InputError("regions must be in image (pixel) coordinates, not sky coordinates: "
                             "save them from DS9 with coordinate system 'image'")
    return items


def _tagged(region, tag):
    """True if a region carries the DS9 tag ``tag`` (``# tag={include}``)."""
    tags = region.meta.get("tag", ()) if region.meta else ()
    return tag in ([tags] if isinstance(tags, str) else tags)


def _region_mask(region, shape):
    mask = region.to_mask(mode="center").to_image(shape)
    return np.zeros(shape, bool) if mask is None else mask.astype(bool)


def read_user_mask(user_mask, shape):
    """A user-made dust mask as a boolean array (FITS or PNG file, or an array).

    FITS: the first 2-D image; an aiflat ``mask.fits`` contributes its DUST bit,
    any other image its nonzero pixels.  PNG (or another image format Pillow
    reads): pixels brighter than half of the maximum (any colour channel).
    Rows are top-down, as in the median FITS file; the mask must have the
    median's shape (it is never resampled).

    Examples
    --------
    >>> import numpy as np
    >>> read_user_mask(np.eye(3), (3, 3)).sum()
    np.int64(3)
    """
    if isinstance(user_mask, (str, Path)):
        path = Path(user_mask)
        if not path.is_file():
            raise InputError(f"user mask {str(path)!r} does not exist")
        if path.suffix.lower() in (".fits", ".fit", ".fts", ".fz") or path.name.lower().endswith(".fits.gz"):
            from astropy.io import fits

            try:
                with fits.open(path) as hdul:
                    hdu = next((h for h in hdul if h.data is not None and h.data.ndim == 2), None)
                    if hdu is None:
                        raise InputError(f"{path.name} has no 2-D image to use as a mask")
                    data = np.asarray(hdu.data)
                    is_dq = "WEIGHT" in hdul and data.dtype == np.uint8
                    mask = (data & DustDQ.DUST) > 0 if is_dq else (np.nan_to_num(data) != 0)
            except OSError as exc:
                raise InputError(f"cannot read {path.name} as FITS: {exc}") from None
        else:
            from PIL import Image, UnidentifiedImageError

            try:
                with Image.open(path) as img:
                    arr = np.asarray(img.convert("RGB") if img.mode not in ("L", "I", "I;16", "F", "1")
                                     else img)
            except (UnidentifiedImageError, OSError) as exc:
                raise InputError(f"cannot read {path.name} as an image mask: {exc}") from None
            arr = arr.astype(np.float64)
            if arr.ndim == 3:
                arr = arr.max(axis=2)
            top = arr.max()
            mask = arr > 0.5 * top if top > 0 else np.zeros(arr.shape, bool)
    else:
        arr = np.asarray(user_mask)
        mask = arr if arr.dtype == bool else (np.nan_to_num(arr.astype(np.float64)) != 0)
    if mask.shape != tuple(shape):
        raise InputError(f"the user mask is {mask.shape[1]}x{mask.shape[0]} pixels but the median is "
                         f"{shape[1]}x{shape[0]}")
    return mask.astype(bool)


def _measure(labels, ids, median, *, f_ratio=None, pixel_size=None, method="user-mask", confidence=1.0):
    """Catalog rows for labelled shadows, measured on the median (depth against a local background)."""
    from .local import darkness_map

    darkness = None
    if median is not None and len(ids):
        darkness, _ = darkness_map(median, ignore=ndimage.binary_dilation(labels > 0, iterations=3))
    depths = None if darkness is None else (lambda sel: np.percentile(darkness[sel], 95))
    return catalog_from_labels(labels, ids, depths=depths, f_ratio=f_ratio, pixel_size=pixel_size,
                               method=method, confidence=confidence)


def catalog_from_mask(dq_or_mask, median=None, *, f_ratio=None, pixel_size=None, method="user-mask"):
    """Catalog of the connected DUST regions of a DQ array or boolean mask.

    Parameters
    ----------
    dq_or_mask : `numpy.ndarray`
        uint8 DQ (DUST bit used) or boolean mask.
    median : `numpy.ndarray`, optional
        The median, to measure depths (NaN without it).
    f_ratio, pixel_size : float, optional
        Add the ``distance_mm`` column.
    method : str, optional
        Value of the ``method`` column.

    Returns
    -------
    `~astropy.table.Table`

    Examples
    --------
    >>> import numpy as np
    >>> m = np.zeros((20, 20), bool); m[2:6, 2:6] = True; m[10:12, 10:12] = True
    >>> t = catalog_from_mask(m)
    >>> len(t), float(t["area"][0])
    (2, 16.0)
    """
    arr = np.asarray(dq_or_mask)
    mask = arr if arr.dtype == bool else (arr.astype(np.int64) & DustDQ.DUST) > 0
    labels, n = ndimage.label(mask, structure=np.ones((3, 3), bool))
    return _measure(labels, np.arange(1, n + 1), median, f_ratio=f_ratio, pixel_size=pixel_size, method=method)


def detection_from_mask(user_mask, median, *, f_ratio=None, pixel_size=None):
    """A `DustDetection` from a user-made mask (path or array), measured on the median.

    Every connected region of the mask is a shadow with confidence 1.
    """
    median = np.asarray(getattr(median, "data", median), dtype=np.float32)
    mask = read_user_mask(user_mask, median.shape)
    labels, n = ndimage.label(mask, structure=np.ones((3, 3), bool))
    catalog = _measure(labels, np.arange(1, n + 1), median, f_ratio=f_ratio, pixel_size=pixel_size)
    dq = np.where(mask, np.uint8(DustDQ.DUST), np.uint8(0)).astype(np.uint8)
    name = Path(user_mask).name if isinstance(user_mask, (str, Path)) else "array"
    prov = {"detector": "user", "params": {"USERMASK": name},
            "history": [f"dust mask supplied by the user ({name}): {n} shadows"]}
    log.info("user mask %s: %d shadows", name, n)
    return DustDetection(dq=dq, weight=mask.astype(np.float32), catalog=catalog, detector="user",
                         provenance=prov, labels=labels.astype(np.int32))


def apply_region_edits(detection, median, *, exclude=None, include=None, f_ratio=None, pixel_size=None):
    """Drop shadows inside ``exclude`` regions and add ``include`` regions as shadows.

    Parameters
    ----------
    detection : `DustDetection`
        Not modified.
    median : `numpy.ndarray`
        The median (to measure added shadows).
    exclude, include : path, `regions.Regions` or list of pixel regions, optional
        DS9 regions in image coordinates.
    f_ratio, pixel_size : float, optional
        For the ``distance_mm`` column of added shadows.

    Returns
    -------
    `DustDetection`
        A new detection; provenance records the edits.

    Examples
    --------
    >>> import numpy as np
    >>> from regions import CirclePixelRegion, PixCoord
    >>> dq = np.zeros((40, 40), np.uint8); dq[5:9, 5:9] = 1
    >>> det = DustDetection(dq=dq, weight=dq.astype(np.float32), catalog=catalog_from_mask(dq))
    >>> new = apply_region_edits(det, np.ones((40, 40)),
    ...                          exclude=[CirclePixelRegion(PixCoord(6.5, 6.5), 3)],
    ...                          include=[CirclePixelRegion(PixCoord(30, 30), 4)])
    >>> len(new.catalog), int(new.labels[30, 30]), bool(new.dust_mask[6, 6])
    (1, 2, False)
    """
    median = np.asarray(getattr(median, "data", median), dtype=np.float32)
    shape = detection.shape
    dq = detection.dq.copy()
    labels = detection.labels.copy()
    catalog = detection.catalog.copy()
    history = list((detection.provenance or {}).get("history", []))
    n_drop = n_add = 0
    if exclude is not None:
        ex = np.zeros(shape, bool)
        for reg in read_regions(exclude):
            if not _tagged(reg, "include"):
                ex |= _region_mask(reg, shape)
        drop = []
        for i, row in enumerate(catalog):
            iy = int(np.clip(round(float(row["y_centroid"])), 0, shape[0] - 1))
            ix = int(np.clip(round(float(row["x_centroid"])), 0, shape[1] - 1))
            if ex[iy, ix]:
                drop.append(i)
                sel = labels == int(row["id"])
                dq[sel] &= np.uint8(0xFF ^ (DustDQ.DUST | DustDQ.REVIEW))
                labels[sel] = 0
        catalog.remove_rows(drop)
        # stray DUST pixels inside the regions (not part of a catalogued shadow) go too
        stray = ex & (labels == 0)
        dq[stray] &= np.uint8(0xFF ^ (DustDQ.DUST | DustDQ.REVIEW))
        n_drop = len(drop)
    if include is not None:
        # new ids follow the original ones (an excluded shadow's id is not reused)
        next_id = int(max(detection.labels.max(initial=0),
                          max((int(i) for i in detection.catalog["id"]), default=0))) + 1
        new_ids = []
        for reg in read_regions(include):
            if _tagged(reg, "reject"):
                continue
            m = _region_mask(reg, shape) & (labels == 0)
            if not m.any():
                continue
            labels[m] = next_id
            dq[m] |= np.uint8(DustDQ.DUST)
            dq[m] &= np.uint8(0xFF ^ DustDQ.REVIEW)
            new_ids.append(next_id)
            next_id += 1
        added = _measure(labels, new_ids, median, f_ratio=f_ratio, pixel_size=pixel_size,
                         method="include-region")
        for row in added:
            catalog.add_row([row[c] if c in added.colnames else np.nan for c in catalog.colnames])
        n_add = len(new_ids)
    history.append(f"review: {n_drop} shadows excluded by regions, {n_add} added from regions")
    prov = dict(detection.provenance or {})
    prov["history"] = history
    params = dict(prov.get("params") or {})
    params.update({"NEXCL": n_drop, "NINCL": n_add})
    prov["params"] = params
    log.info("region edits: %d excluded, %d included", n_drop, n_add)
    return replace(detection, dq=dq, weight=((dq & DustDQ.DUST) > 0).astype(np.float32), catalog=catalog,
                   labels=labels, provenance=prov)
