"""One interface over every kind of frame stack: SER video, FITS cube, FITS files.

`open_frames` turns what a user names on the command line (a SER video, a 3-D
FITS cube, a folder or a list of 2-D FITS files) or an in-memory 3-D array into
a `FrameSource`: a read-only, random-access sequence of equally shaped frames
that stays on disk until asked for.  The temporal median reads it strip by
strip through `FrameSource.read_rows`.
"""

import logging
import re
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.io import fits

from ..utils.exceptions import InputError
from ._base import FrameSource, ccddata_class, is_ccddata
from .ser import LUCAM_ID, SERReader

__all__ = ["open_frames", "FrameSource", "FITSCubeSource", "FITSFilesSource", "ArraySource",
           "FITS_SUFFIXES"]

log = logging.getLogger(__name__)

#: File name endings recognised as FITS (case-insensitive).
FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fts.gz", ".fits.fz", ".fz")

#: Cards copied from the source's header into `FrameSource.meta`.
_META_KEYS = ("OBSERVER", "INSTRUME", "TELESCOP", "OBJECT", "FILTER", "EXPTIME", "GAIN",
              "DATE-OBS", "BAYERPAT", "ROWORDER", "XPIXSZ", "YPIXSZ", "FOCALLEN", "FOCRATIO")


def _is_fits_name(path):
    return str(path).lower().endswith(FITS_SUFFIXES)


def _natural_key(path):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name)]


def _sniff(path):
    """Return 'ser', 'fits' or None from a file's first bytes."""
    with open(path, "rb") as fh:
        head = fh.read(30)
    if head.startswith(LUCAM_ID.encode()):
        return "ser"
    if head.startswith(b"SIMPLE  =") or head[:2] == b"\x1f\x8b":
        return "fits"
    return None


def _image_hdu(hdul, ndim, path):
    """The first image HDU of ``hdul`` with ``ndim`` axes (or raise InputError)."""
    found = []
    for k, hdu in enumerate(hdul):
        if hdu.is_image and hdu.header.get("NAXIS", 0) > 0:
            n = hdu.header["NAXIS"]
            if n == ndim:
                return k, hdu
            found.append(n)
    what = f"{found[0]}-D image" if found else "no image data"
    raise InputError(f"{path.name!r}: expected a {ndim}-D image, found {what}")


def _copy_meta(header):
    meta = fits.Header()
    for key in _META_KEYS:
        if key in header:
            meta[key] = (header[key], header.comments[key])
    return meta


def _unit_from(header, default="adu"):
    bunit = str(header.get("BUNIT", "")).strip()
    if not bunit:
        return u.Unit(default)
    try:
        return u.Unit(bunit)
    except ValueError:
        log.debug("unrecognised BUNIT %r; using %s", bunit, default)
        return u.Unit(default)


def _frame_header(header, frame_index):
    hdr = header.copy(strip=True)
    for key in ("NAXIS3", "BZERO", "BSCALE", "BLANK"):
        hdr.remove(key, ignore_missing=True)
    hdr["FRAMENUM"] = (frame_index, "frame index in the source (0 = first)")
    return hdr


class FITSCubeSource(FrameSource):
    """Frames of a 3-D FITS cube ``(n_frames, height, width)``, read by sections.

    The file stays open (memory-mapped) until `close`; scaled integer data
    (``BZERO``/``BSCALE``, e.g. unsigned 16-bit) and tile-compressed cubes are
    read through `astropy.io.fits.ImageHDU.section`, so only the requested
    frames or rows are ever decoded.

    Parameters
    ----------
    path : str or `os.PathLike`
        The FITS file; the first HDU holding a 3-D image is used.
    """

    def __init__(self, path):
        self.path = Path(path)
        self.paths = [self.path]
        self.name = self.path.name
        self._hdul = fits.open(self.path, mode="readonly")  # memory-mapped (astropy default)
        try:
            self.hdu_index, hdu = _image_hdu(self._hdul, 3, self.path)
            self.header = hdu.header
            self.n_frames = int(hdu.header["NAXIS3"])
            self.frame_shape = (int(hdu.header["NAXIS2"]), int(hdu.header["NAXIS1"]))
            if self.n_frames == 0 or 0 in self.frame_shape:
                raise InputError(f"{self.name!r}: the cube holds no frames")
            scaled = any(k in hdu.header and hdu.header[k] != d for k, d in
                         (("BZERO", 0), ("BSCALE", 1))) or "BLANK" in hdu.header
            self._scaled = isinstance(hdu, fits.CompImageHDU) or scaled
            if self._scaled:
                self._array = None
                self._section = hdu.section
                self.dtype = self._section[0:1, 0:1, 0:1].dtype.newbyteorder("=")
            else:
                self._array = hdu.data  # a memory map: nothing is read yet
                self._section = None
                self.dtype = self._array.dtype.newbyteorder("=")
        except BaseException:
            self._hdul.close()
            raise

    def __getstate__(self):
        # Reopen on unpickling rather than pickling the file handle or the data.
        state = {k: v for k, v in self.__dict__.items() if k not in ("_hdul", "_array", "_section")}
        state["_was_open"] = self._hdul is not None
        return state

    def __setstate__(self, state):
        was_open = state.pop("_was_open")
        self.__dict__.update(state)
        self._hdul = self._array = self._section = None
        if was_open:
            self._hdul = fits.open(self.path, mode="readonly")
            hdu = self._hdul[self.hdu_index]
            if self._scaled:
                self._section = hdu.section
            else:
                self._array = hdu.data

    def _block(self, key):
        if self._hdul is None:
            raise ValueError(f"FITS cube {self.name!r} is closed")
        src = self._array if self._array is not None else self._section
        return src[key]

    def read(self, frame_index):
        """Return frame ``frame_index`` as a new native-order array."""
        i = self._check_index(frame_index)
        return np.array(self._block((i, slice(None), slice(None))), dtype=self.dtype)

    def read_rows(self, indices, r0, r1, *, out=None):
        """Rows ``r0:r1`` of frames ``indices``; one strided read for regular indices."""
        idx = self._normalize_indices(indices)
        r0, r1 = self._check_rows(r0, r1)
        out = self._output_array(len(idx), r0, r1, out)
        if len(idx) == 0:
            return out
        if isinstance(idx, range) and (self._array is not None or idx.step > 0):
            out[...] = self._block((self._range_to_slice(idx), slice(r0, r1), slice(None)))
        else:
            for j, i in enumerate(idx):
                out[j] = self._block((i, slice(r0, r1), slice(None)))
        return out

    def frame_ccd(self, frame_index):
        """Frame ``frame_index`` as `~astropy.nddata.CCDData` with the cube's header."""
        i = self._check_index(frame_index)
        return ccddata_class()(self.read(i), unit=_unit_from(self.header),
                               meta=_frame_header(self.header, i))

    @property
    def meta(self):
        """Selected cards of the cube's header (``INSTRUME``, ``DATE-OBS`` ...)."""
        return _copy_meta(self.header)

    def close(self):
        """Close the FITS file."""
        if self._hdul is not None:
            self._array = self._section = None
            self._hdul.close()
            self._hdul = None


class FITSFilesSource(FrameSource):
    """Frames from a list of 2-D FITS files (one frame per file).

    Parameters
    ----------
    paths : list of str or `os.PathLike`
        The files, in frame order.  Each one's first 2-D image HDU is used;
        all must have the same shape (`~aiflat_astro.utils.exceptions.InputError`
        naming the first file that differs otherwise).
    name : str, optional
        Name of the source (the folder name when opened from a folder).
    """

    def __init__(self, paths, *, name=None):
        self.paths = [Path(p) for p in paths]
        if not self.paths:
            raise InputError("no FITS files given")
        self.name = name or (self.paths[0].name if len(self.paths) == 1 else
                             f"{self.paths[0].name} (+{len(self.paths) - 1} files)")
        self._hdu_index = []
        dtypes = []
        shape = None
        for path in self.paths:
            if not path.is_file():
                raise InputError(f"no such file: {str(path)!r}")
            try:
                with fits.open(path) as hdul:
                    k, hdu = _image_hdu(hdul, 2, path)
                    this = (int(hdu.header["NAXIS2"]), int(hdu.header["NAXIS1"]))
                    if shape is None:
                        shape, self.header = this, hdu.header.copy()
                    elif this != shape:
                        raise InputError(f"{str(path)!r} has frame shape {this}, but "
                                         f"{self.paths[0].name!r} has {shape}")
                    dtypes.append(_header_dtype(hdu.header))
            except OSError as exc:
                raise InputError(f"cannot read {str(path)!r} as FITS: {exc}") from None
            self._hdu_index.append(k)
        self.frame_shape = shape
        self.n_frames = len(self.paths)
        self.dtype = np.result_type(*dtypes).newbyteorder("=")

    def _section(self, i, key):
        with fits.open(self.paths[i]) as hdul:
            return np.array(hdul[self._hdu_index[i]].section[key], dtype=self.dtype)

    def read(self, frame_index):
        """Read frame ``frame_index`` (one file) as a new native-order array."""
        i = self._check_index(frame_index)
        return self._section(i, (slice(None), slice(None)))

    def read_rows(self, indices, r0, r1, *, out=None):
        """Rows ``r0:r1`` of each file in ``indices`` (only those rows are decoded)."""
        idx = self._normalize_indices(indices)
        r0, r1 = self._check_rows(r0, r1)
        out = self._output_array(len(idx), r0, r1, out)
        for j, i in enumerate(idx):
            out[j] = self._section(i, (slice(r0, r1), slice(None)))
        return out

    def frame_ccd(self, frame_index):
        """Frame ``frame_index`` as `~astropy.nddata.CCDData` with its file's header."""
        i = self._check_index(frame_index)
        with fits.open(self.paths[i]) as hdul:
            hdu = hdul[self._hdu_index[i]]
            data = np.array(hdu.section[:, :], dtype=self.dtype)
            header = hdu.header.copy()
        return ccddata_class()(data, unit=_unit_from(header), meta=_frame_header(header, i))

    @property
    def meta(self):
        """Selected cards of the first file's header."""
        return _copy_meta(self.header)


def _header_dtype(header):
    """The dtype astropy gives the data described by an image header."""
    bitpix = header["BITPIX"]
    bzero, bscale = header.get("BZERO", 0), header.get("BSCALE", 1)
    base = {8: np.uint8, 16: np.int16, 32: np.int32, 64: np.int64, -32: np.float32,
            -64: np.float64}[bitpix]
    if bscale == 1 and bitpix > 8 and bzero == 2 ** (bitpix - 1):
        return np.dtype(f"uint{bitpix}")
    if bscale == 1 and bitpix == 8 and bzero == -128:
        return np.dtype(np.int8)
    if bscale != 1 or bzero != 0:
        return np.dtype(np.float64 if bitpix in (32, 64, -64) else np.float32)
    return np.dtype(base)


class ArraySource(FrameSource):
    """Frames of an in-memory array ``(n_frames, height, width[, 3])``.

    The array is not copied; `read` returns copies.

    Examples
    --------
    >>> import numpy as np
    >>> src = ArraySource(np.zeros((5, 4, 6), np.uint16))
    >>> src.n_frames, src.frame_shape, src.read_rows([0, 2], 1, 3).shape
    (5, (4, 6), (2, 2, 6))
    """

    def __init__(self, array, *, name="array"):
        array = np.asanyarray(array)
        if is_ccddata(array) or array.ndim not in (3, 4) or (
                array.ndim == 4 and array.shape[-1] != 3):
            raise InputError(f"an array of frames must be 3-D (n_frames, height, width), "
                             f"got shape {np.shape(array)}")
        if array.shape[0] == 0:
            raise InputError("the array holds no frames")
        self._array = array
        self.n_frames = array.shape[0]
        self.frame_shape = tuple(array.shape[1:])
        self.dtype = array.dtype.newbyteorder("=")
        self.paths = []
        self.name = name

    def read(self, frame_index):
        """Return a copy of frame ``frame_index``."""
        return np.array(self._array[self._check_index(frame_index)], dtype=self.dtype)

    def read_rows(self, indices, r0, r1, *, out=None):
        """Rows ``r0:r1`` of frames ``indices``."""
        idx = self._normalize_indices(indices)
        r0, r1 = self._check_rows(r0, r1)
        out = self._output_array(len(idx), r0, r1, out)
        if len(idx):
            key = self._range_to_slice(idx) if isinstance(idx, range) else list(idx)
            out[...] = self._array[key, r0:r1]
        return out

    def frame_ccd(self, frame_index):
        """Frame ``frame_index`` as `~astropy.nddata.CCDData` (unit adu)."""
        i = self._check_index(frame_index)
        return ccddata_class()(self.read(i), unit="adu", meta=fits.Header([("FRAMENUM", i)]))

    @property
    def meta(self):
        """An empty header (an array carries no metadata)."""
        return fits.Header()


def _expand(inputs):
    """Paths named by ``inputs`` (folders expanded to their FITS files)."""
    paths = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted((q for q in p.iterdir() if q.is_file() and _is_fits_name(q)),
                           key=_natural_key)
            if not found:
                raise InputError(f"no FITS files ({', '.join(FITS_SUFFIXES[:3])} ...) in folder "
                                 f"{str(p)!r}")
            paths.extend(found)
        elif not p.exists():
            raise InputError(f"no such file: {str(p)!r}")
        else:
            paths.append(p)
    return paths


def _kind(path):
    if path.suffix.lower() == ".ser":
        return "ser"
    if _is_fits_name(path):
        return "fits"
    kind = _sniff(path)
    if kind is None:
        raise InputError(f"{str(path)!r} is neither a SER video nor a FITS file")
    return kind


def open_frames(inputs, *, byte_order="auto"):
    """Open a stack of frames, whatever its form, as a `FrameSource`.

    Parameters
    ----------
    inputs : path, list of paths, folder, `numpy.ndarray` or `FrameSource`
        - a SER video (``.ser``, or any file starting with ``LUCAM-RECORDER``);
        - a FITS file holding a 3-D cube ``(n_frames, height, width)``;
        - a 2-D FITS file, a list of them, or a folder of them (sorted by name,
          numbers in natural order);
        - an in-memory array ``(n_frames, height, width)``;
        - an already open `FrameSource` (returned unchanged).
    byte_order : {'auto', '<', '>'}, optional
        Byte order of 16-bit SER data (see `~aiflat_astro.io.SERReader`).

    Returns
    -------
    FrameSource
        Use it as a context manager to close the files.

    Raises
    ------
    `~aiflat_astro.utils.exceptions.InputError`
        Missing file, unknown format, no frames, or FITS files of different
        shapes (the message names the file).

    Examples
    --------
    >>> import os, tempfile, numpy as np
    >>> from astropy.io import fits
    >>> d = tempfile.mkdtemp()
    >>> for k in range(3):
    ...     fits.writeto(os.path.join(d, f"f{k}.fits"), np.full((4, 5), k, np.int16))
    >>> with open_frames(d) as src:
    ...     print(src.n_frames, src.frame_shape, src.dtype, src.read(2)[0, 0])
    3 (4, 5) int16 2
    """
    if isinstance(inputs, FrameSource):
        return inputs
    if isinstance(inputs, np.ndarray):
        return ArraySource(inputs)
    if isinstance(inputs, (str, bytes)) or hasattr(inputs, "__fspath__"):
        inputs = [inputs]
    inputs = list(inputs)
    if not inputs:
        raise InputError("no input frames given")
    named_folder = len(inputs) == 1 and Path(inputs[0]).is_dir()
    paths = _expand(inputs)
    kinds = [_kind(p) for p in paths]
    if len(paths) == 1 and not named_folder:
        path = paths[0]
        if kinds[0] == "ser":
            return SERReader(path, byte_order=byte_order)
        try:
            with fits.open(path) as hdul:
                naxis = [h.header.get("NAXIS", 0) for h in hdul if h.is_image]
        except OSError as exc:
            raise InputError(f"cannot read {str(path)!r} as FITS: {exc}") from None
        if 3 in naxis and (2 not in naxis or naxis.index(3) < naxis.index(2)):
            return FITSCubeSource(path)
        return FITSFilesSource([path])
    if "ser" in kinds:
        bad = paths[kinds.index("ser")]
        raise InputError(f"{str(bad)!r}: give one SER video at a time (or several 2-D FITS "
                         "frames)")
    return FITSFilesSource(paths, name=Path(inputs[0]).name if named_folder else None)


# --------------------------------------------------------------------------------------
# one way to take frames: open them unless already a source; choose which to use


def is_frame_source(obj):
    """True for an open frame source (anything with ``read_rows``, ``n_frames``, ``frame_shape``, ``dtype``).

    Examples
    --------
    >>> import numpy as np
    >>> is_frame_source(open_frames(np.zeros((2, 4, 4)))), is_frame_source(np.zeros((2, 4, 4)))
    (True, False)
    """
    return all(hasattr(obj, attr) for attr in ("read_rows", "n_frames", "frame_shape", "dtype"))


class opened_frames:  # noqa: N801 - used like a function: ``with opened_frames(x) as src``
    """Context manager: the frames as a source, opened here (and closed on exit) unless already one.

    Parameters
    ----------
    frames : path, list of paths, array, `FrameSource`
        Anything `open_frames` accepts, or an open source (used as is and
        left open: its owner closes it).
    byte_order : {'auto', 'little', 'big'}, optional
        For SER files opened here.

    Examples
    --------
    >>> import numpy as np
    >>> with opened_frames(np.zeros((3, 4, 5))) as src:
    ...     src.n_frames, src.frame_shape
    (3, (4, 5))
    """

    def __init__(self, frames, *, byte_order="auto"):
        self.frames = frames
        self.byte_order = byte_order
        self.owned = not is_frame_source(frames)
        self._source = None

    def __enter__(self):
        self._source = open_frames(self.frames, byte_order=self.byte_order) if self.owned else self.frames
        return self._source

    def __exit__(self, *exc):
        if self.owned and self._source is not None:
            self._source.close()
        self._source = None


def spread_indices(n, max_count):
    """At most ``max_count`` positions in ``range(n)``, evenly spread, both ends included.

    A drift path, a gain solve or a motion test needs frames from the whole
    video, not its first seconds.  All positions when ``n <= max_count``.

    Examples
    --------
    >>> spread_indices(10, 4)
    array([0, 3, 6, 9])
    >>> spread_indices(3, 5)
    array([0, 1, 2])
    """
    n, max_count = int(n), int(max_count)
    if max_count < 1:
        raise InputError(f"max_frames must be a positive integer, got {max_count}")
    if n <= max_count:
        return np.arange(n)
    return np.unique(np.round(np.linspace(0, n - 1, max_count)).astype(int))


def select_frames(n_frames, *, step=1, max_frames=None, spread=True):
    """Indices of the frames to use: every ``step``-th, then at most ``max_frames`` of them.

    Parameters
    ----------
    n_frames : int
        Frames in the video.
    step : int, optional
        Use every ``step``-th frame (default 1).
    max_frames : int, optional
        Use at most this many of those.
    spread : bool, optional
        True (default): spread them over the whole selection
        (`spread_indices`); False: the first ``max_frames`` (what
        `~aiflat_astro.combine.median_combine` does).

    Examples
    --------
    >>> select_frames(100, step=10, max_frames=4)
    array([ 0, 30, 60, 90])
    >>> select_frames(100, step=10, max_frames=4, spread=False)
    array([ 0, 10, 20, 30])
    """
    for name, value in (("step", step), ("max_frames", max_frames)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1):
            raise InputError(f"{name} must be a positive integer, got {value!r}")
    if int(n_frames) < 1:
        raise InputError("the video has no frames")
    indices = np.arange(0, int(n_frames), int(step), dtype=np.intp)
    if max_frames is None or indices.size <= max_frames:
        return indices
    return indices[spread_indices(indices.size, max_frames)] if spread else indices[:int(max_frames)]
