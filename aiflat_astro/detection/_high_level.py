"""`detect_dust`: the front end of the detectors (input parsing, review edits, provenance).

Like reproject's ``_high_level`` modules, this turns what a user has (a
FITS path, `~astropy.nddata.CCDData`, an array, RGB or a raw colour mosaic)
into the 2-D float32 array the detectors work on, runs the chosen detector
(`~aiflat_astro.detection._base`), applies the user's DS9 review edits
(`~aiflat_astro.detection.review`), expands the mask and records provenance.
"""

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.nddata import CCDData

from ..dq import static_defects
from ..products import DustDetection
from ..provenance import sha256_array
from ..utils._colour import cfa_normalise, is_colour, to_mono
from ..utils._options import merged_options, option_names
from ..utils.exceptions import InputError, NoDustDetectedWarning, renamed_keyword, warn_user
from ._base import _make_detector
from ._protocol import ignore_keyword
from .review import apply_region_edits, detection_from_mask

__all__ = ["detect_dust", "DetectOptions"]

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


@dataclass(frozen=True)
class DetectOptions:
    """The options of `detect_dust` besides its inputs and the detector's own (the same names as its keywords).

    Parameters
    ----------
    f_ratio, pixel_size, dilate, soft_edge, exclude_regions, include_regions, user_mask, defects
        See `detect_dust`.

    Examples
    --------
    >>> DetectOptions(f_ratio=40).dilate
    2
    """

    f_ratio: object = None
    pixel_size: object = None
    dilate: float = 2
    soft_edge: float = 1.5
    exclude_regions: object = None
    include_regions: object = None
    user_mask: object = None
    defects: bool = True

    def __post_init__(self):
        for label, value in (("f_ratio", self.f_ratio), ("pixel_size", self.pixel_size)):
            if value is not None and not (np.isfinite(value) and value > 0):
                raise InputError(f"{label} must be a positive number, got {value!r}")


def _split_keywords(keywords):
    """``(options of DetectOptions, the detector's options)`` from `detect_dust`'s keywords."""
    names = option_names(DetectOptions)
    return ({k: v for k, v in keywords.items() if k in names},
            {k: v for k, v in keywords.items() if k not in names})


def _checked_ignore(ignore, mask, shape):
    if mask is not None:
        ignore = renamed_keyword("detect_dust", "mask", "ignore", mask, given=ignore, stacklevel=2)
    if ignore is None:
        return None
    ignore = np.asarray(ignore, dtype=bool)
    if ignore.shape != shape:
        raise InputError(f"ignore shape {ignore.shape} differs from the median's {shape}")
    return ignore


def _detected(data, detector, detector_options, frames, ignore, opts):
    """The detector's (or the user mask's) `DustDetection`, its type and shape checked."""
    if opts.user_mask is not None:
        return detection_from_mask(opts.user_mask, data, f_ratio=opts.f_ratio, pixel_size=opts.pixel_size)
    det_callable = _make_detector(detector, detector_options)
    det = det_callable(data, frames=frames, **ignore_keyword(det_callable, ignore, stacklevel=2), f_ratio=opts.f_ratio,
                       pixel_size=opts.pixel_size)
    if not isinstance(det, DustDetection):
        raise InputError(f"detector {getattr(det_callable, 'name', det_callable)!r} did not return a DustDetection")
    if det.shape != data.shape:
        raise InputError(f"detector returned a mask of shape {det.shape} for a median of shape {data.shape}")
    return det


def _record_provenance(det, data, name, opts):
    prov = dict(det.provenance)
    prov.setdefault("detector", det.detector)
    prov["input_sha256"] = sha256_array(data)
    prov["mask_sha256"] = sha256_array(det.dq)
    if name:
        prov.setdefault("inputs", [{"path": name}])
    params = dict(prov.get("params") or {})
    if opts.f_ratio is not None:
        params["FRATIO"] = float(opts.f_ratio)
    if opts.pixel_size is not None:
        params["PIXSIZE"] = float(opts.pixel_size)
    params["NDUST"] = int(len(det.catalog))
    params["NREVIEW"] = int(np.count_nonzero(det.catalog["review"])) if len(det.catalog) else 0
    prov["params"] = params
    det.provenance = prov
    return params


def detect_dust(median, *, detector="local", frames=None, ignore=None, options=None, mask=None, **keywords):
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
    ignore : `numpy.ndarray`, optional
        Boolean, True for pixels the detector must ignore.
    options : `DetectOptions`, optional
        The options below as one object; keywords given as well override it.
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
    mask : `numpy.ndarray`, optional
        Deprecated name of ``ignore``.
    **keywords
        The options above by name, and the detector's own options, passed
        to its constructor when ``detector`` is a name.

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
    option_keywords, detector_options = _split_keywords(keywords)
    opts = merged_options(DetectOptions, options, option_keywords, "detect_dust")
    ignore = _checked_ignore(ignore, mask, data.shape)
    det = _detected(data, detector, detector_options, frames, ignore, opts)
    if opts.exclude_regions is not None or opts.include_regions is not None:
        det = apply_region_edits(det, data, exclude=opts.exclude_regions, include=opts.include_regions,
                                 f_ratio=opts.f_ratio, pixel_size=opts.pixel_size)
    det = det.expanded(dilate=opts.dilate, soft_edge=opts.soft_edge)
    if opts.defects:
        det.dq |= static_defects(data)
    params = _record_provenance(det, data, name, opts)
    if len(det.catalog) == 0:
        warn_user("no dust shadow detected; the mask is empty", NoDustDetectedWarning)
    log.info("detector %s: %d shadows (%d for review)", det.detector, params["NDUST"], params["NREVIEW"])
    return det
