"""The detector protocol and the registry of detectors by name.

A *detector* (the "eye") is a callable that turns the temporal median into a
`~aiflat_astro.products.DustDetection`.  Detectors are looked up by name in a
small registry, so that new ones (``'gemini'``, ``'consensus'``) plug in with
`register_detector`; `~aiflat_astro.detection.detect_dust` is the front end.
"""

from ..products import CATALOG_COLUMNS, DustDetection, empty_catalog  # noqa: F401 (the detectors' data model)
from ..utils._lazy import resolve
from ..utils.exceptions import InputError

__all__ = ["DustDetector", "register_detector", "available_detectors"]


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
