"""The frame-source base class shared by SER videos, FITS cubes and FITS lists.

A *frame source* is a read-only, random-access sequence of equally shaped
frames.  Implementations keep the data on disk (positional reads, memory maps or section reads)
and hand out copies in native byte order, so that a caller never mutates the
input and never holds more than it asked for.
"""

import numbers
import os
import sys
import threading

import numpy as np

from ..utils.exceptions import InputError

__all__ = ["FrameSource"]

_SEEK_LOCK = threading.Lock()


def pread_into(fh, view, pos):
    """Read into ``view`` (a writable byte memoryview) from byte ``pos`` of the open file ``fh``.

    A positional read (``os.preadv``) that leaves the file position alone, so
    that threads can share one file; where there is none (Windows), a seek and
    a read under a lock.  Returns the number of bytes read (0 at the end).
    """
    if hasattr(os, "preadv"):
        return os.preadv(fh.fileno(), [view], pos)
    with _SEEK_LOCK:  # pragma: no cover - Windows
        fh.seek(pos)
        return fh.readinto(view)


def pread_frame_part(fh, view, pos, *, name, frame):
    """Fill ``view`` from byte ``pos`` of ``fh`` with positional reads; a short file is an error.

    ``name`` and ``frame`` say in the error which file and frame ended early.
    """
    done = 0
    while done < len(view):
        got = pread_into(fh, view[done:], pos + done)
        if got <= 0:
            raise InputError(f"{name}: file ended while reading frame {frame} (was it truncated while in use?)")
        done += got


class FrameSource:
    """Random-access, read-only sequence of equally shaped frames.

    Subclasses set ``n_frames``, ``frame_shape``, ``dtype``, ``paths``,
    ``name`` and ``meta`` and implement ``read``; they may override
    ``read_rows`` with a faster path (the temporal median calls it in its
    inner loop) and ``frame_ccd``.

    Attributes
    ----------
    n_frames : int
        Number of frames.
    frame_shape : tuple of int
        ``(height, width)`` or ``(height, width, 3)`` for colour frames.
    dtype : `numpy.dtype`
        Native-order data type of the arrays returned by `read`.
    paths : list of `pathlib.Path`
        Files the frames come from (empty for an in-memory array).
    name : str
        Short human-readable name of the source (a file or folder name).
    meta : `astropy.io.fits.Header`
        Cards summarising the source (``INSTRUME``, ``OBSERVER``, ...).
    """

    n_frames = 0
    frame_shape = ()
    dtype = np.dtype(np.uint16)
    paths = ()
    name = ""

    # -- to implement -------------------------------------------------------
    def read(self, frame_index):  # pragma: no cover - abstract
        """Return frame ``frame_index`` as a new native-order array."""
        raise NotImplementedError

    @property
    def meta(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def frame_ccd(self, frame_index):  # pragma: no cover - abstract
        """Return frame ``frame_index`` as a `~astropy.nddata.CCDData`."""
        raise NotImplementedError

    def close(self):
        """Release files held open; reading afterwards raises `ValueError`."""

    # -- shared behaviour ---------------------------------------------------
    def read_rows(self, indices, r0, r1, *, out=None):
        """Return rows ``r0:r1`` of several frames as one array.

        Parameters
        ----------
        indices : sequence of int, `range` or `slice`
            Frame indices, in the order wanted.
        r0, r1 : int
            First and one-past-last row (0 ≤ r0 ≤ r1 ≤ height).
        out : `numpy.ndarray`, optional
            Array of shape ``(len(indices), r1 - r0) + frame_shape[1:]`` and
            dtype ``self.dtype`` to fill instead of allocating a new one.

        Returns
        -------
        `numpy.ndarray`
            Shape ``(len(indices), r1 - r0, width[, 3])``, native byte order.
        """
        idx = self._normalize_indices(indices)
        r0, r1 = self._check_rows(r0, r1)
        out = self._output_array(len(idx), r0, r1, out)
        for j, i in enumerate(idx):
            out[j] = self.read(i)[r0:r1]
        return out

    def _check_index(self, frame_index):
        if not isinstance(frame_index, numbers.Integral):
            raise TypeError(f"frame index must be an integer, got {frame_index!r}")
        i = int(frame_index)
        if i < 0:
            i += self.n_frames
        if not 0 <= i < self.n_frames:
            raise IndexError(f"frame index {frame_index} out of range for {self.n_frames} frames "
                             f"in {self.name}")
        return i

    def _normalize_indices(self, indices):
        """Return ``indices`` as a checked `range` when regular, else a list of ints."""
        if isinstance(indices, slice):
            return range(*indices.indices(self.n_frames))
        if isinstance(indices, numbers.Integral):
            i = self._check_index(indices)
            return range(i, i + 1)
        if isinstance(indices, range) and len(indices) and indices[0] >= 0 and indices[-1] >= 0:
            self._check_index(indices[0])
            self._check_index(indices[-1])
            return indices
        checked = [self._check_index(i) for i in np.asarray(indices, dtype=np.int64).ravel()]
        if len(checked) >= 2:
            step = checked[1] - checked[0]
            if step != 0 and all(b - a == step for a, b in zip(checked, checked[1:])):
                return range(checked[0], checked[-1] + step, step)
        return checked

    @staticmethod
    def _range_to_slice(idx):
        """Turn a non-empty `range` of valid indices into an equivalent `slice`."""
        stop = idx[-1] + (1 if idx.step > 0 else -1)
        return slice(idx[0], stop if stop >= 0 else None, idx.step)

    def _check_rows(self, r0, r1):
        height = self.frame_shape[0]
        r0, r1 = int(r0), int(r1)
        if not 0 <= r0 <= r1 <= height:
            raise IndexError(f"row range {r0}:{r1} outside 0:{height}")
        return r0, r1

    def _output_array(self, n, r0, r1, out):
        shape = (n, r1 - r0) + tuple(self.frame_shape[1:])
        if out is None:
            return np.empty(shape, dtype=self.dtype)
        if out.shape != shape:
            raise ValueError(f"out has shape {out.shape}, expected {shape}")
        return out

    def __len__(self):
        return self.n_frames

    def __iter__(self):
        for i in range(self.n_frames):
            yield self.read(i)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __repr__(self):
        shape = "x".join(str(s) for s in self.frame_shape)
        return (f"<{type(self).__name__} {self.name!r}: {self.n_frames} frames of {shape} "
                f"{self.dtype}>")


def ccddata_class():
    """`~astropy.nddata.CCDData`, imported on first use (astropy.nddata takes 0.3 s to import)."""
    from astropy.nddata import CCDData

    return CCDData


def is_ccddata(obj):
    """Whether ``obj`` is a `~astropy.nddata.CCDData` (without importing astropy.nddata)."""
    nddata = sys.modules.get("astropy.nddata")
    return nddata is not None and isinstance(obj, nddata.CCDData)
