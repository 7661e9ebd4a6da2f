"""The products every layer shares: the dust detection and its shadow catalog.

A *detector* (the "eye", `aiflat_astro.detection`) looks at the temporal
median of a video and says where sensor dust casts shadows.  Every detector
returns a `DustDetection`: a uint8 DQ bitmask (`~aiflat_astro.dq.DustDQ`
bits), a soft ``weight`` (1 inside the dust, a Gaussian soft edge outside),
and a catalog with one row per shadow (`CATALOG_COLUMNS`).  The flat (the
"hand"), the FITS writers and the pipeline read these; none of them needs to
load a detector, so this module imports nothing above `~aiflat_astro.dq`.
"""

from dataclasses import dataclass, field, replace

import numpy as np
from astropy import units as u
from astropy.table import Table

from .dq import DustDQ, expand_mask
from .utils.exceptions import InputError

__all__ = ["DustDetection", "empty_catalog", "CATALOG_COLUMNS", "catalog_from_labels"]

#: Catalog columns: name -> (dtype, unit, description).  ``distance_mm`` is
#: present only when the focal ratio and pixel size are known.
CATALOG_COLUMNS = {
    "id": (np.int32, None, "shadow number; equals its value in the detection's label map"),
    "x_centroid": (np.float64, u.pix, "column of the shadow centroid (0-based, numpy/photutils convention)"),
    "y_centroid": (np.float64, u.pix, "row of the shadow centroid (0-based, top-down SER row order)"),
    "area": (np.float64, u.pix**2, "number of pixels flagged DUST for this shadow"),
    "equivalent_diameter": (np.float64, u.pix,
                            "diameter of the circle with the area inside the half-depth outline (hole included)"),
    "depth": (np.float64, None, "1 - minimum transmission (plateau darkness, robust)"),
    "confidence": (np.float64, None, "detector confidence that this is sensor dust (0..1)"),
    "review": (bool, None, "low confidence: flagged REVIEW, a person should check it"),
    "distance_mm": (np.float64, u.mm,
                    "distance of the dust from the focal plane, equivalent_diameter * pixel_size * f_ratio"),
    "method": ("U16", None, "how the shadow was found (detector name, 'user-mask', 'include-region')"),
}


def empty_catalog(*, with_distance=False):
    """Return an empty shadow catalog with the standard columns and units.

    Examples
    --------
    >>> empty_catalog().colnames[:3]
    ['id', 'x_centroid', 'y_centroid']
    """
    names = [n for n in CATALOG_COLUMNS if with_distance or n != "distance_mm"]
    table = Table(names=names, dtype=[CATALOG_COLUMNS[n][0] for n in names])
    for name in names:
        dtype, unit, desc = CATALOG_COLUMNS[name]
        table[name].unit = unit
        table[name].description = desc
    return table


def _catalog_from_rows(rows, *, with_distance=False):
    table = empty_catalog(with_distance=with_distance)
    defaults = {np.float64: np.nan, np.int32: 0, bool: False, "U16": ""}
    for row in rows:
        table.add_row([defaults[CATALOG_COLUMNS[n][0]] if row.get(n) is None else row[n]
                       for n in table.colnames])
    return table


def _catalog_records(catalog):
    """Plain JSON-able rows of a catalog (NaN becomes None)."""
    records = []
    for row in catalog:
        rec = {}
        for name in catalog.colnames:
            value = row[name]
            value = value.item() if hasattr(value, "item") else value
            if isinstance(value, float) and not np.isfinite(value):
                value = None
            rec[name] = value
        records.append(rec)
    return records


@dataclass
class DustDetection:
    """Result of a dust detector: where the dust is, how sure, how to blend.

    Parameters
    ----------
    dq : `numpy.ndarray`
        uint8 (H, W) bitmask with `~aiflat_astro.dq.DustDQ` bits (DUST, DUST_HALO,
        REVIEW, HOT, COLD, SATURATED, ...).
    weight : `numpy.ndarray`
        float32 (H, W) soft mask, 1 inside the (dilated) dust, falling to 0
        with a Gaussian soft edge; the flat blends ``median/clean`` with 1.0
        using it.
    catalog : `~astropy.table.Table`
        One row per shadow, columns `CATALOG_COLUMNS`.
    detector : str
        Name of the detector that made it (``'local'``, ``'gemini'``, ...).
    provenance : dict
        Provenance record (keys of `aiflat_astro.provenance.add_provenance_cards`).
    labels : `numpy.ndarray`, optional
        int32 (H, W) map: ``k`` on the DUST pixels of catalog row ``id == k``.
        Rebuilt from the DUST bit when not given.
    rejected : `~astropy.table.Table`, optional
        Candidates the detector looked at and rejected (with the reason), for
        diagnostics.

    Examples
    --------
    >>> import numpy as np
    >>> dq = np.zeros((8, 8), np.uint8); dq[2:4, 2:4] = 1
    >>> det = DustDetection(dq=dq, weight=(dq > 0).astype(np.float32), catalog=empty_catalog())
    >>> int(det.dust_mask.sum()), det.shape
    (4, (8, 8))
    """

    dq: np.ndarray
    weight: np.ndarray
    catalog: Table
    detector: str = "local"
    provenance: dict = field(default_factory=dict)
    labels: np.ndarray = None
    rejected: Table = None

    def __post_init__(self):
        self.dq = np.asarray(self.dq)
        if self.dq.ndim != 2:
            raise InputError(f"a dust DQ mask must be 2-D, got shape {self.dq.shape}")
        if self.dq.dtype != np.uint8:
            if self.dq.size and (self.dq.min() < 0 or self.dq.max() > 255):
                raise InputError("DQ values must fit in uint8 (0..255)")
            self.dq = self.dq.astype(np.uint8)
        self.weight = np.asarray(self.weight, dtype=np.float32)
        if self.weight.shape != self.dq.shape:
            raise InputError(f"weight shape {self.weight.shape} differs from DQ shape {self.dq.shape}")
        if self.labels is None:
            self.labels = _labels_from_dq(self.dq, self.catalog)
        else:
            self.labels = np.asarray(self.labels, dtype=np.int32)

    @property
    def shape(self):
        """(H, W) of the mask."""
        return self.dq.shape

    @property
    def dust_mask(self):
        """Boolean (H, W): pixels with the DUST bit."""
        return (self.dq & DustDQ.DUST) > 0

    @property
    def review_mask(self):
        """Boolean (H, W): pixels with the REVIEW bit."""
        return (self.dq & DustDQ.REVIEW) > 0

    @property
    def n_dust(self):
        """Number of shadows in the catalog."""
        return len(self.catalog)

    def expanded(self, *, dilate=2, soft_edge=1.5):
        """Return a copy with WEIGHT and DUST_HALO recomputed by `~aiflat_astro.dq.expand_mask`.

        The DUST, REVIEW and defect bits are kept; old DUST_HALO bits are
        cleared first.
        """
        weight, halo = expand_mask(self.dust_mask, dilate=dilate, soft_edge=soft_edge)
        dq = self.dq & np.uint8(0xFF ^ DustDQ.DUST_HALO)
        dq[halo] |= np.uint8(DustDQ.DUST_HALO)
        prov = dict(self.provenance)
        params = dict(prov.get("params") or {})
        params.update({"DILATE": float(dilate), "SOFTEDGE": float(soft_edge)})
        prov["params"] = params
        return replace(self, dq=dq, weight=weight, provenance=prov, labels=self.labels.copy())


def _labels_from_dq(dq, catalog):
    """Label the DUST pixels; give each component the id of the catalog row inside it."""
    from scipy import ndimage

    dust = (dq & DustDQ.DUST) > 0
    comp, n = ndimage.label(dust, structure=np.ones((3, 3), bool))
    labels = np.zeros(dq.shape, np.int32)
    if n == 0:
        return labels
    if catalog is None or len(catalog) == 0 or "x_centroid" not in catalog.colnames:
        return comp.astype(np.int32)
    ids = np.zeros(n + 1, np.int32)
    # assign every component to the nearest catalog centroid (components of one
    # annular shadow share its id)
    centres = np.array(ndimage.center_of_mass(dust, comp, np.arange(1, n + 1))).reshape(n, 2)
    cy = np.asarray(catalog["y_centroid"], float)
    cx = np.asarray(catalog["x_centroid"], float)
    for k in range(n):
        d2 = (cy - centres[k, 0]) ** 2 + (cx - centres[k, 1]) ** 2
        ids[k + 1] = int(catalog["id"][int(np.argmin(d2))])
    labels = ids[comp]
    return labels


def catalog_from_labels(labels, ids=None, *, depths=None, f_ratio=None, pixel_size=None, method="user-mask",
                        confidence=1.0):
    """Catalog rows of labelled shadows: centroid, area, equivalent diameter (hole filled).

    Parameters
    ----------
    labels : `numpy.ndarray`
        int (H, W) label map; ``k`` on the pixels of shadow ``k``.
    ids : sequence of int, optional
        Labels to measure (default: every label present, ascending).
    depths : dict or callable, optional
        ``depths[k]`` or ``depths(selection)`` gives the ``depth`` column
        (NaN without it).
    f_ratio, pixel_size : float, optional
        Add the ``distance_mm`` column (both needed).
    method : str, optional
        Value of the ``method`` column.
    confidence : float, optional
        Value of the ``confidence`` column.

    Returns
    -------
    `~astropy.table.Table`
        Columns `CATALOG_COLUMNS`.

    Examples
    --------
    >>> import numpy as np
    >>> lab = np.zeros((20, 20), np.int32); lab[2:6, 2:6] = 1; lab[10:12, 10:12] = 2
    >>> t = catalog_from_labels(lab)
    >>> len(t), float(t["area"][0]), float(t["x_centroid"][1])
    (2, 16.0, 10.5)
    """
    from scipy import ndimage

    labels = np.asarray(labels)
    if ids is None:
        ids = [int(k) for k in np.unique(labels) if k > 0]
    with_distance = f_ratio is not None and pixel_size is not None
    catalog = empty_catalog(with_distance=with_distance)
    for k in ids:
        sel = labels == k
        area = int(sel.sum())
        if area == 0:
            continue
        y, x = ndimage.center_of_mass(sel)
        diameter = float(np.sqrt(4 * ndimage.binary_fill_holes(sel).sum() / np.pi))
        depth = np.nan if depths is None else float(depths(sel) if callable(depths) else depths[k])
        row = {"id": int(k), "x_centroid": float(x), "y_centroid": float(y), "area": float(area),
               "equivalent_diameter": diameter, "depth": depth, "confidence": float(confidence),
               "review": False, "method": method}
        if with_distance:
            row["distance_mm"] = diameter * pixel_size * f_ratio * 1e-3
        catalog.add_row([row[c] for c in catalog.colnames])
    return catalog
