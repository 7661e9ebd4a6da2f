"""The detection result, the detector protocol, and the `detect_dust` front end.

A *detector* (the "eye") looks at the temporal median of a video and says where
sensor dust casts shadows.  Every detector returns a `DustDetection`: a uint8
DQ bitmask (`~aiflat_astro.dq.DustDQ` bits), a soft ``weight`` (1 inside the
dust, a Gaussian soft edge outside), and a catalog with one row per shadow.
Detectors are looked up by name in a small registry, so that new ones
(``'gemini'``, ``'consensus'``) plug in with `register_detector`.
"""

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.nddata import CCDData
from astropy.table import Table

from ..dq import DustDQ, expand_mask, static_defects
from ..provenance import sha256_array
from ..utils._colour import cfa_normalise, is_colour, to_mono
from ..utils._lazy import resolve
from ..utils.exceptions import InputError, NoDustDetectedWarning, warn_user

__all__ = [
    "DustDetection",
    "DustDetector",
    "detect_dust",
    "register_detector",
    "available_detectors",
    "empty_catalog",
    "CATALOG_COLUMNS",
]

log = logging.getLogger(__name__)

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


class DustDetector:
    """Base class (protocol) of dust detectors.

    A detector is a callable with a ``name``::

        detector(median, *, frames=None, mask=None, f_ratio=None, pixel_size=None) -> DustDetection

    ``median`` is a 2-D float array (the temporal median), ``frames`` an
    optional frame source (anything `aiflat_astro.io.frames.open_frames`
    accepts) for detectors that use image motion, ``mask`` an optional boolean
    array of pixels to ignore, ``f_ratio`` and ``pixel_size`` (µm) optional
    optics that set the expected shadow sizes.  Any object that follows the
    protocol can be passed to `detect_dust` as ``detector``.
    """

    #: Registry name of the detector.
    name = "base"

    def __call__(self, median, *, frames=None, mask=None, f_ratio=None, pixel_size=None):  # pragma: no cover
        raise NotImplementedError


# name -> class, factory callable or "module:attribute" string (imported lazily)
_DETECTORS = {
    "local": "aiflat_astro.detection.local:LocalDustDetector",
    "gemini": "aiflat_astro.detection.gemini:GeminiDustDetector",
    "consensus": "aiflat_astro.detection.consensus:ConsensusDetector",
}


def register_detector(name, factory):
    """Register a detector under ``name`` for `detect_dust` and ``aiflat detect``.

    Parameters
    ----------
    name : str
        Registry name (``'gemini'``, ``'consensus'``, ...).
    factory : callable or str
        A class or function returning a `DustDetector` when called with the
        detector options as keywords, or ``'module:attribute'`` naming one
        (imported only when the detector is used).

    Examples
    --------
    >>> register_detector("local-copy", "aiflat_astro.detection.local:LocalDustDetector")
    >>> "local-copy" in available_detectors()
    True
    >>> _ = _DETECTORS.pop("local-copy")
    """
    _DETECTORS[str(name)] = factory


def available_detectors():
    """Return the registered detector names.

    Examples
    --------
    >>> "local" in available_detectors()
    True
    """
    return sorted(_DETECTORS)


def _make_detector(detector, options):
    if not isinstance(detector, str):
        if options:
            raise InputError("detector options can only be given with a detector name, not an instance")
        if not callable(detector):
            raise InputError(f"detector must be a name or a callable DustDetector, got {type(detector).__name__}")
        return detector
    try:
        factory = _DETECTORS[detector]
    except KeyError:
        raise InputError(f"unknown detector {detector!r}; available: {', '.join(available_detectors())}") from None
    return resolve(factory, what=f"detector {detector!r}")(**options)


def _as_image(median):
    """2-D float32 array (a new one) and a name from CCDData, ndarray or a FITS path.

    RGB: the channel mean; a raw colour mosaic (``BAYERPAT`` in the header):
    its phases divided by their gains (`~aiflat_astro.utils._colour.cfa_normalise`).
    """
    name = None
    pattern = None
    if isinstance(median, (str, Path)):
        name = Path(median).name
        from astropy.io import fits

        try:
            with fits.open(median) as hdul:
                hdu = next((h for h in hdul if h.data is not None
                            and (h.data.ndim == 2 or is_colour(h.data))), None)
                if hdu is None:
                    raise InputError(f"{str(median)!r} has no 2-D (or RGB) image to detect dust in")
                data = np.array(hdu.data, dtype=np.float32)
                pattern = hdu.header.get("BAYERPAT")
        except OSError as exc:
            raise InputError(f"cannot read {str(median)!r} as FITS: {exc}") from None
    elif isinstance(median, CCDData):
        data = np.array(median.data, dtype=np.float32)
        name = median.meta.get("FILENAME") if median.meta else None
        pattern = median.meta.get("BAYERPAT") if median.meta else None
    else:
        data = np.array(median, dtype=np.float32)
    data = cfa_normalise(to_mono(data), pattern)
    if data.ndim != 2:
        raise InputError(f"the median must be a 2-D image (or RGB, ny x nx x 3), got shape {data.shape}")
    if min(data.shape) < 16:
        raise InputError(f"the median is too small for dust detection: shape {data.shape}")
    if not np.isfinite(data).any():
        raise InputError("the median has no finite pixel")
    return data, name


def detect_dust(median, *, detector="local", frames=None, f_ratio=None, pixel_size=None, mask=None,
                dilate=2, soft_edge=1.5, exclude_regions=None, include_regions=None, user_mask=None,
                defects=True, **detector_options):
    """Find sensor dust shadows in a temporal median.

    Parameters
    ----------
    median : `~astropy.nddata.CCDData`, `numpy.ndarray` or path
        The temporal median (2-D).  It is not modified.
    detector : str or `DustDetector`, optional
        ``'local'`` (default: offline, deterministic), another registered
        name (see `available_detectors`), or a detector instance.
    frames : path, `~aiflat_astro.io.FrameSource` or array, optional
        The frames the median was made from.  Detectors that use image motion
        (the local one does) then tell dust, fixed on the sensor, from solar
        features that move with the scene.
    f_ratio : float, optional
        Focal ratio N of the light cone at the sensor.
    pixel_size : float, optional
        Pixel size in µm.  With ``f_ratio`` it sets the expected shadow sizes
        and adds the ``distance_mm`` column (Δz ≈ D·p·N).
    mask : `numpy.ndarray`, optional
        Boolean, True for pixels the detector must ignore.
    dilate : float, optional
        Dilation (pixels) of the DUST mask before the soft edge; default 2.
    soft_edge : float, optional
        Gaussian sigma (pixels) of the weight's soft edge; default 1.5.
    exclude_regions, include_regions : path or `regions.Regions`, optional
        DS9 regions: shadows whose centroid falls in an exclude region are
        dropped; include regions are added as shadows (the review loop).
    user_mask : path or `numpy.ndarray`, optional
        A user-made mask (FITS or PNG; nonzero = dust) that replaces the
        detector's result.
    defects : bool, optional
        Also flag HOT, COLD and SATURATED pixels (`~aiflat_astro.dq.static_defects`).
    **detector_options
        Passed to the detector's constructor when ``detector`` is a name.

    Returns
    -------
    `DustDetection`

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(1)
    >>> y, x = np.mgrid[:128, :128]
    >>> image = 1000 * (1 - 0.2 * (np.hypot(y - 64, x - 40) < 7)) + rng.normal(0, 3, (128, 128))
    >>> det = detect_dust(image)
    >>> len(det.catalog), round(float(det.catalog["x_centroid"][0]))
    (1, 40)
    """
    from .review import apply_region_edits, detection_from_mask

    data, name = _as_image(median)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != data.shape:
            raise InputError(f"mask shape {mask.shape} differs from the median's {data.shape}")
    for label, value in (("f_ratio", f_ratio), ("pixel_size", pixel_size)):
        if value is not None and not (np.isfinite(value) and value > 0):
            raise InputError(f"{label} must be a positive number, got {value!r}")
    if user_mask is not None:
        det = detection_from_mask(user_mask, data, f_ratio=f_ratio, pixel_size=pixel_size)
    else:
        det_callable = _make_detector(detector, detector_options)
        det = det_callable(data, frames=frames, mask=mask, f_ratio=f_ratio, pixel_size=pixel_size)
        if not isinstance(det, DustDetection):
            raise InputError(f"detector {getattr(det_callable, 'name', det_callable)!r} did not return a DustDetection")
        if det.shape != data.shape:
            raise InputError(f"detector returned a mask of shape {det.shape} for a median of shape {data.shape}")
    if exclude_regions is not None or include_regions is not None:
        det = apply_region_edits(det, data, exclude=exclude_regions, include=include_regions,
                                 f_ratio=f_ratio, pixel_size=pixel_size)
    det = det.expanded(dilate=dilate, soft_edge=soft_edge)
    if defects:
        det.dq |= static_defects(data)
    prov = dict(det.provenance)
    prov.setdefault("detector", det.detector)
    prov["input_sha256"] = sha256_array(data)
    prov["mask_sha256"] = sha256_array(det.dq)
    if name:
        prov.setdefault("inputs", [{"path": name}])
    params = dict(prov.get("params") or {})
    if f_ratio is not None:
        params["FRATIO"] = float(f_ratio)
    if pixel_size is not None:
        params["PIXSIZE"] = float(pixel_size)
    params["NDUST"] = int(len(det.catalog))
    params["NREVIEW"] = int(np.count_nonzero(det.catalog["review"])) if len(det.catalog) else 0
    prov["params"] = params
    det.provenance = prov
    if len(det.catalog) == 0:
        warn_user("no dust shadow detected; the mask is empty", NoDustDetectedWarning)
    log.info("detector %s: %d shadows (%d for review)", det.detector, params["NDUST"], params["NREVIEW"])
    return det
