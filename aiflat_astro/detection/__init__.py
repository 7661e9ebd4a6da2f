"""Dust detectors: local (offline, default), gemini, consensus."""

from ._base import *  # noqa: F401,F403
from .local import *  # noqa: F401,F403
from .review import *  # noqa: F401,F403
from .outputs import *  # noqa: F401,F403
from .gemini import *  # noqa: F401,F403
from .consensus import *  # noqa: F401,F403
