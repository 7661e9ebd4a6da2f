"""Dust detectors: local (offline, default), gemini, consensus."""

from .gemini import *  # noqa: F401,F403
from .consensus import *  # noqa: F401,F403
