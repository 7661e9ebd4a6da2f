"""Dust detectors: local (offline, default), gemini, consensus."""

from ._base import *  # noqa: F401,F403
from .local import *  # noqa: F401,F403
from .review import *  # noqa: F401,F403
from .outputs import *  # noqa: F401,F403
from .gemini import *  # noqa: F401,F403
from .consensus import *  # noqa: F401,F403

from . import _base, local, review, outputs, gemini, consensus  # noqa: E402

__all__ = list(_base.__all__ + local.__all__ + review.__all__ + outputs.__all__ + gemini.__all__ + consensus.__all__)
