"""Simulated dusty videos with ground truth (physically based)."""

from .dust import *  # noqa: F401,F403
from .scenes import *  # noqa: F401,F403
from .simulate import *  # noqa: F401,F403
