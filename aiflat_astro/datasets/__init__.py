"""Simulated dusty videos with ground truth (physically based)."""

from .dust import *  # noqa: F401,F403
from .scenes import *  # noqa: F401,F403
from .simulate import *  # noqa: F401,F403

from . import dust, scenes, simulate  # noqa: E402

__all__ = list(dust.__all__ + scenes.__all__ + simulate.__all__)
