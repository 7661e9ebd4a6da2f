"""Readers and writers: SER videos, frame sources, aiflat FITS products.

The names are imported from their modules on first use (PEP 562), so that
``aiflat_astro.io.ser`` can be used without loading the FITS, ASDF and TIFF
writers.
"""

import importlib

_NAMES = {
    "read_ser": "ser", "SERReader": "ser", "write_ser": "ser", "SERWriter": "ser", "SERHeader": "ser",
    "open_frames": "frames", "FrameSource": "frames", "write_flat": "fits", "read_flat": "fits",
    "write_flat_asdf": "export", "read_flat_asdf": "export", "write_flat_tiff": "export",
}

__all__ = ["read_ser", "SERReader", "write_ser", "SERWriter", "SERHeader", "open_frames",
           "FrameSource", "write_flat", "read_flat", "write_flat_asdf", "read_flat_asdf",
           "write_flat_tiff"]


def __getattr__(name):
    module = _NAMES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
