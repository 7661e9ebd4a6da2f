"""The registry of detectors by name.

A *detector* (the "eye") is a callable that turns the temporal median into a
`~aiflat_astro.products.DustDetection` (the protocol: `DustDetector`, in
``_protocol``).  Detectors are looked up by name in a small registry, so that
new ones (``'gemini'``, ``'consensus'``) plug in with `register_detector`;
`~aiflat_astro.detection.detect_dust` is the front end.  The registry points
at the detectors; the detectors import only the protocol, so no cycle.
"""

from ..products import CATALOG_COLUMNS, DustDetection, empty_catalog  # noqa: F401 (the detectors' data model)
from ..utils._lazy import resolve
from ..utils.exceptions import InputError
from ._protocol import DustDetector

__all__ = ["DustDetector", "register_detector", "available_detectors"]


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
