"""Dust detectors (the "eye"): local (offline, default), gemini, consensus.

`detect_dust` (``_high_level``) is the front end; ``_base`` holds the
detector protocol and registry; the result, `DustDetection`, and its catalog
live one layer down in `aiflat_astro.products`, so that readers of
``mask.fits`` need not load a detector.
"""

from ..products import CATALOG_COLUMNS, DustDetection, empty_catalog  # noqa: F401
from ._base import *  # noqa: F401,F403
from ._high_level import *  # noqa: F401,F403
from .local import *  # noqa: F401,F403
from .review import *  # noqa: F401,F403
from .outputs import *  # noqa: F401,F403
from .gemini import *  # noqa: F401,F403
from .consensus import *  # noqa: F401,F403

from . import _base, _high_level, local, review, outputs, gemini, consensus  # noqa: E402,F401

__all__ = list(["DustDetection", "DustDetector", "detect_dust", "DetectOptions", "register_detector",
                "available_detectors",
                "empty_catalog", "CATALOG_COLUMNS"]
               + local.__all__ + review.__all__ + outputs.__all__ + gemini.__all__ + consensus.__all__)
