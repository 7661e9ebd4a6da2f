"""`DustDetector`: the protocol every detector follows (imports nothing from the detectors)."""

__all__ = ["DustDetector"]


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
