"""aiflat_astro: synthetic dust flats for astropy and ccdproc reductions.

An eye (a local detector or Google Gemini) locates sensor dust shadows in the
temporal median of a video or image stack; deterministic math sets the pixel
values of a synthetic flat that is exactly 1.0 outside the dust, written as
FITS with full provenance and applied with `ccdproc.flat_correct`.
"""

try:
    from ._version import version as __version__
except ImportError:  # pragma: no cover - only without setuptools_scm metadata
    __version__ = ""

from .utils.exceptions import *  # noqa: F401,F403
from .dq import *  # noqa: F401,F403
from .io import *  # noqa: F401,F403
from .combine import *  # noqa: F401,F403
from .datasets import *  # noqa: F401,F403
from .detection import *  # noqa: F401,F403
from .inpaint import *  # noqa: F401,F403
from .flat import *  # noqa: F401,F403
from .registration import *  # noqa: F401,F403
from .measured import *  # noqa: F401,F403
from .apply import *  # noqa: F401,F403
from .pipeline import *  # noqa: F401,F403
