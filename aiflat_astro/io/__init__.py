"""Readers and writers: SER videos, frame sources, aiflat FITS products.

The names are imported from their modules on first use (PEP 562), so that
``aiflat_astro.io.ser`` can be used without loading the FITS, ASDF and TIFF
writers.
"""

from ..utils._lazy import lazy_attributes

_NAMES = {
    "read_ser": "ser", "SERReader": "ser", "write_ser": "ser", "SERWriter": "ser", "SERHeader": "ser",
    "open_frames": "frames", "FrameSource": "frames", "write_flat": "fits", "read_flat": "fits",
    "write_flat_asdf": "export", "read_flat_asdf": "export", "write_flat_tiff": "export",
}

__all__ = ["read_ser", "SERReader", "write_ser", "SERWriter", "SERHeader", "open_frames",
           "FrameSource", "write_flat", "read_flat", "write_flat_asdf", "read_flat_asdf",
           "write_flat_tiff"]


__getattr__, __dir__ = lazy_attributes(__name__, _NAMES)
