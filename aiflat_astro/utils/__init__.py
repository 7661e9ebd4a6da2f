"""Utilities shared across aiflat_astro (exceptions, warnings, atomic output).

The exception classes are imported on first use: they derive from astropy's
warning classes, and the ``aiflat`` command starts copying a video before it
spends the tenth of a second that importing astropy takes.
"""

import importlib

#: The names of `aiflat_astro.utils.exceptions` (``tests/test_package.py`` checks the list).
__all__ = [
    "AiflatError", "SERFormatError", "InputError", "DetectionError", "GeminiError", "ProvenanceError",
    "AiflatWarning", "AiflatUserWarning", "SERFormatWarning", "NoDustDetectedWarning",
    "DetectorFallbackWarning",
]


def __getattr__(name):
    if name in __all__:
        value = getattr(importlib.import_module(".exceptions", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
