"""Readers and writers: SER videos, frame sources, aiflat FITS products."""

from .ser import SERHeader, SERReader, SERWriter, read_ser, write_ser  # noqa: F401
from .frames import FrameSource, open_frames  # noqa: F401
from .fits import read_flat, write_flat  # noqa: F401
from .export import read_flat_asdf, write_flat_asdf, write_flat_tiff  # noqa: F401

__all__ = ["read_ser", "SERReader", "write_ser", "SERWriter", "SERHeader", "open_frames",
           "FrameSource", "write_flat", "read_flat", "write_flat_asdf", "read_flat_asdf",
           "write_flat_tiff"]
