"""`DustDetector`: the protocol every detector follows (imports nothing from the detectors)."""

__all__ = ["DustDetector"]


class DustDetector:
    """Base class (protocol) of dust detectors.

    A detector is a callable with a ``name``::

        detector(median, *, frames=None, mask=None, f_ratio=None, pixel_size=None) -> DustDetection

    ``median`` is a 2-D float array (the temporal median), ``frames`` an
    optional frame source (anything `aiflat_astro.io.frames.open_frames`
    accepts) for detectors that use image motion, ``mask`` an optional boolean
    array of pixels to ignore, ``f_ratio`` and ``pixel_size`` (µm) optional
    optics that set the expected shadow sizes.  Any object that follows the
    protocol can be passed to `~aiflat_astro.detection.detect_dust` as ``detector``.
    """

    #: Registry name of the detector.
    name = "base"

    def __call__(self, median, *, frames=None, mask=None, f_ratio=None, pixel_size=None):  # pragma: no cover
        raise NotImplementedError
