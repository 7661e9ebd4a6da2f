"""`DustDetector`: the protocol every detector follows (imports nothing from the detectors)."""

import inspect

from ..utils.exceptions import AiflatDeprecationWarning, warn_user

__all__ = ["DustDetector", "ignore_keyword"]


class DustDetector:
    """Base class (protocol) of dust detectors.

    A detector is a callable with a ``name``::

        detector(median, *, frames=None, ignore=None, f_ratio=None, pixel_size=None) -> DustDetection

    ``median`` is a 2-D float array (the temporal median), ``frames`` an
    optional frame source (anything `aiflat_astro.io.frames.open_frames`
    accepts) for detectors that use image motion, ``ignore`` an optional boolean
    array, True for the pixels to ignore, ``f_ratio`` and ``pixel_size`` (µm)
    optional optics that set the expected shadow sizes.  Any object that
    follows the protocol can be passed to `~aiflat_astro.detection.detect_dust`
    as ``detector``.  The keyword was ``mask`` before: the shipped detectors
    still take ``mask=`` with an `~aiflat_astro.utils.exceptions.AiflatDeprecationWarning`,
    and `~aiflat_astro.detection.detect_dust` still calls a detector of one's
    own whose ``__call__`` takes ``mask`` but not ``ignore`` (with the same warning).
    """

    #: Registry name of the detector.
    name = "base"

    def __call__(self, median, *, frames=None, ignore=None, f_ratio=None, pixel_size=None):  # pragma: no cover
        raise NotImplementedError


def ignore_keyword(det_callable, ignore, *, stacklevel=1):
    """``{'ignore': ignore}``, or ``{'mask': ignore}`` for a detector of the old protocol (with a warning).

    A detector of one's own written before the protocol's ``mask=`` became
    ``ignore=`` keeps working: its ``__call__`` takes ``mask`` and neither
    ``ignore`` nor ``**kwargs``.  ``stacklevel`` 1 attributes the warning to
    the caller of the function calling `ignore_keyword`.

    Examples
    --------
    >>> class Old:
    ...     def __call__(self, median, *, frames=None, mask=None, f_ratio=None, pixel_size=None):
    ...         pass
    >>> import warnings
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore")
    ...     sorted(ignore_keyword(Old(), None))
    ['mask']
    >>> sorted(ignore_keyword(DustDetector(), None))
    ['ignore']
    """
    try:
        parameters = inspect.signature(det_callable).parameters
    except (TypeError, ValueError):     # a builtin or C callable: assume the current protocol
        return {"ignore": ignore}
    if "ignore" in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        return {"ignore": ignore}
    if "mask" in parameters:
        name = getattr(det_callable, "name", type(det_callable).__name__)
        warn_user(f"detector {name!r} takes mask=, the protocol's old name: its __call__ should take "
                  f"ignore= (DustDetector)", AiflatDeprecationWarning, stacklevel=stacklevel + 1)
        return {"mask": ignore}
    return {"ignore": ignore}
