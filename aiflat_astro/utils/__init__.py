"""Utilities shared across aiflat_astro (exceptions, warnings, atomic output).

The exception classes are imported on first use: they derive from astropy's
warning classes, and the ``aiflat`` command starts copying a video before it
spends the tenth of a second that importing astropy takes.
"""

#: The names of `aiflat_astro.utils.exceptions` (``tests/test_package.py`` checks the list).
__all__ = [
    "AiflatError", "SERFormatError", "InputError", "DetectionError", "GeminiError", "ProvenanceError",
    "AiflatWarning", "AiflatUserWarning", "SERFormatWarning", "NoDustDetectedWarning",
    "DetectorFallbackWarning",
]

from ._lazy import lazy_attributes  # noqa: E402 (after __all__, which it reads)

__getattr__, __dir__ = lazy_attributes(__name__, dict.fromkeys(__all__, "exceptions"))
