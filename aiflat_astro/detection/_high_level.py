"""`detect_dust`: the front end of the detectors (input parsing, review edits, provenance).

Like reproject's ``_high_level`` modules, this turns what a user has (a
FITS path, `~astropy.nddata.CCDData`, an array, RGB or a raw colour mosaic)
into the 2-D float32 array the detectors work on, runs the chosen detector
(`~aiflat_astro.detection._base`), applies the user's DS9 review edits
(`~aiflat_astro.detection.review`), expands the mask and records provenance.
"""

import logging
from pathlib import Path

import numpy as np
from astropy.nddata import CCDData

from ..dq import static_defects
from ..products import DustDetection
from ..provenance import sha256_array
from ..utils._colour import cfa_normalise, is_colour, to_mono
from ..utils.exceptions import InputError, NoDustDetectedWarning, warn_user
from ._base import _make_detector
from .review import apply_region_edits, detection_from_mask

__all__ = ["detect_dust"]

log = logging.getLogger(__name__)


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
