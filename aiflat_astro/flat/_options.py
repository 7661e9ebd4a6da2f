"""`FlatOptions`: the options of `~aiflat_astro.flat.make_flat` besides its inputs."""

from dataclasses import dataclass

import numpy as np

from ..utils._options import merged_options
from ..utils.exceptions import InputError

__all__ = ["FlatOptions", "FLAT_PROFILES"]

#: Transmission models understood by `~aiflat_astro.flat.make_flat` (``'auto'`` lets the inpainter choose).
FLAT_PROFILES = ("auto", "radial", "none")


@dataclass(frozen=True)
class FlatOptions:
    """The options of `make_flat` besides its inputs (the same names as its keywords).

    Parameters
    ----------
    floor, profile, min_signal, inpaint_options, mem_limit, progress_bar, full
        See `make_flat`.
    scene_motion, silhouette
        See `make_flat`.

    Examples
    --------
    >>> FlatOptions(floor=0.1).profile
    'auto'
    """

    floor: float = 0.05
    profile: str = "auto"
    min_signal: object = None
    inpaint_options: object = None
    mem_limit: object = "256MB"
    progress_bar: bool = False
    full: bool = False
    scene_motion: object = "auto"
    silhouette: bool = False

    def __post_init__(self):
        if self.profile not in FLAT_PROFILES:
            raise InputError(f"unknown flat profile {self.profile!r}; "
                             f"choose one of {', '.join(FLAT_PROFILES)}")
        try:
            floor = float(self.floor)
        except (TypeError, ValueError):
            raise InputError(f"floor must be a number between 0 and 1, got {self.floor!r}") \
                from None
        if not 0 < floor < 1:
            raise InputError(f"floor must be between 0 and 1, got {self.floor}")
        object.__setattr__(self, "floor", floor)
        motion = self.scene_motion
        if motion is None or (isinstance(motion, str) and motion == "auto"):
            return
        number = not isinstance(motion, (str, bytes, bool)) and np.isscalar(motion)
        if not number or not float(motion) >= 0:
            raise InputError("scene_motion must be 'auto', None or a number of pixels >= 0, "
                             f"got {motion!r}")


def _flat_options(options, keywords):
    """`FlatOptions` from an ``options`` object and/or `make_flat`'s keywords (keywords win)."""
    return merged_options(FlatOptions, options, keywords, "make_flat")
