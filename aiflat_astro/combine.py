"""Exact temporal median of a video or image stack in bounded memory.

`median_combine` computes, for every pixel, the median of its values over the
selected frames: exactly what ``np.median(stack, axis=0)`` returns, cast to
float32, without ever holding the stack in memory.

The frames are processed in *strips* of rows: a strip holds rows ``r0:r1`` of
every selected frame, read with one block per frame (the source's
``read_rows``).  The strip is cut into chunks of pixels, each chunk is
transposed into a small contiguous buffer (one row per pixel, one column per
frame, about 1 MB: it stays in cache) and partitioned in place with
`numpy.partition` around the middle order statistic.  numpy's partition
releases the GIL, so the chunks run on a pool of threads (one per core) while
another thread reads the next strip.  With a single ``kth`` numpy uses its
SIMD selection (AVX-512 where available) for 16-, 32- and 64-bit types, which
is several times faster than the two-``kth`` introselect that ``np.median``
uses for an even number of frames; 8-bit data are widened to 16 bits for that
reason.

For an odd number of frames ``n`` the median is the order
statistic ``k = (n - 1) // 2``; for an even number ``np.median`` averages the
order statistics ``k`` and ``k + 1`` in float64.  We partition around
``k + 1``; order statistic ``k`` is then the maximum of the elements before
it.  The average is computed in float64 exactly as numpy does and cast to
float32 once, so the result is bit-identical to
``np.median(stack, axis=0).astype(np.float32)``.  Lanes holding a NaN give NaN,
as in ``np.median``.
"""

import hashlib
import logging
import math
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.nddata import CCDData

from .provenance import add_provenance_cards, sha256_file
from .utils._atomic import parse_size
from .utils.exceptions import InputError

__all__ = ["median_combine"]

log = logging.getLogger(__name__)

#: Raw bytes aimed at for one strip (all frames); larger strips do not help.
_STRIP_TARGET = 32 * 1024**2
#: Smallest block read per frame and strip that we aim at (fewer, larger reads).
_MIN_BLOCK = 64 * 1024
#: Size of each per-thread staging / transposed buffer (both fit in the L2 cache).
_CHUNK_BYTES = 256 * 1024
#: Keywords never copied from the source's summary header.
_STRUCTURAL = {"SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "NAXIS3", "NAXIS4", "EXTEND",
               "BZERO", "BSCALE", "BLANK", "PCOUNT", "GCOUNT", "XTENSION", "CHECKSUM", "DATASUM",
               "BUNIT", "END", "COMMENT", "HISTORY", ""}
#: Above this many input files PROVSHA1 is the hash of a ``sha256sum``-style manifest
#: (FITS keywords have 8 characters: PROVSHA1..PROVSHA9 at most).
_MAX_PROV_FILES = 9
_HASH_CHUNK = 4 * 1024**2


def median_combine(source, *, max_frames=None, step=1, mem_limit="256MB", progress_bar=False,
                   bias=None, dark=None):
    """Exact per-pixel temporal median of a video or stack, in bounded memory.

    Parameters
    ----------
    source : str, `~pathlib.Path`, list, `~numpy.ndarray` or frame source
        Anything `aiflat_astro.io.frames.open_frames` accepts: a SER video, a
        3-D FITS cube, a list or folder of 2-D FITS files, a 3-D array
        ``(n_frames, ny, nx)`` (or 4-D ``(n_frames, ny, nx, 3)`` for RGB), or
        an open frame source (anything with ``n_frames``, ``frame_shape``,
        ``dtype`` and ``read_rows(indices, r0, r1)``; it is not closed).
    max_frames : int, optional
        Use at most this many frames: the first ``max_frames`` of
        ``range(0, n_frames, step)``.  Default is ``None`` (all of them).
    step : int, optional
        Use every ``step``-th frame, starting with frame 0.  Default is 1.
        Spreading frames over the video (``step > 1``) helps more than taking
        many consecutive ones.
    mem_limit : int, float or str, optional
        Bound on the working memory (strip buffers, the result and the master
        calibration frames), e.g. ``'256MB'``, ``'1GiB'`` or a number of bytes.
        The Python process itself (numpy, astropy) needs about 100 MB more.
        Default is ``'256MB'``.
    progress_bar : bool, optional
        Show a `tqdm` progress bar (one step per strip).  Default is `False`.
    bias, dark : `~astropy.nddata.CCDData`, `~numpy.ndarray`, str or `~pathlib.Path`, optional
        Master bias and master dark (a FITS file name, or data) in adu, of
        the frame shape, subtracted from every frame before combining (the
        dark must be for the frames' exposure time).  See Notes.

    Returns
    -------
    median : `~astropy.nddata.CCDData`
        float32 data of the frame shape, unit adu.  The header holds
        ``NCOMBINE``, ``FRAME0``/``FRAME1``/``FRAMESTP`` (0-based first and
        last frame used, step), ``PROV1``/``PROVSHA1`` (input name and SHA-256
        of the input file; see Notes), ``ROWORDER``, ``BUNIT``, ``PROCSOFT``,
        ``DATE``, the source's instrument keywords and ``HISTORY``.

    Raises
    ------
    aiflat_astro.InputError
        No frames, bad options, master frames of the wrong shape or unit, or a
        memory limit too small for one row of every selected frame.

    Notes
    -----
    The result equals ``np.median(stack, axis=0).astype(np.float32)`` bit for
    bit (odd and even frame counts, any integer or float type; NaN wherever a
    pixel has a NaN in some frame).  With ``bias``/``dark`` it equals
    ``np.median(stack.astype(np.float64) - bias - dark, axis=0)`` cast to
    float32: subtracting a per-pixel constant is a monotonic map of each
    pixel's values, so it commutes with taking order statistics.  The
    masters are therefore subtracted from the one or two middle order
    statistics of each pixel (in float64, in that order) instead of from every
    frame, which gives the same numbers at no cost.

    Memory: strips of rows are sized so that two strips (the one being
    combined and the one being read ahead), a transient copy and the result
    fit in ``mem_limit``; the minimum is one row of every selected frame.
    The whole file is never loaded: peak memory does not grow with the
    number of frames beyond that.

    Provenance: the SHA-256 of each input file (the whole file, not only the
    frames used) is computed in a background thread while the median runs; it
    costs about 1 s of one core per GB.  With more than 9 input files,
    ``PROV1`` names the first and last file and ``PROVSHA1`` is the SHA-256 of
    the manifest that ``sha256sum FILE...`` prints (file base names, in
    input order).  Array sources have no file: ``PROV1`` describes the array
    and there is no ``PROVSHA1``.

    Examples
    --------
    >>> import numpy as np
    >>> from aiflat_astro import median_combine
    >>> rng = np.random.default_rng(0)
    >>> stack = rng.integers(0, 4096, size=(10, 32, 48), dtype=np.uint16)
    >>> median = median_combine(stack, mem_limit="1MB")
    >>> median.shape, median.dtype, median.unit
    ((32, 48), dtype('float32'), Unit("adu"))
    >>> bool(np.all(median.data == np.median(stack, axis=0).astype(np.float32)))
    True
    >>> median.header["NCOMBINE"], median.header["FRAMESTP"]
    (10, 1)
    """
    mem_bytes = parse_size(mem_limit)
    from .io.frames import opened_frames

    with opened_frames(source) as src:
        return _median_combine(src, max_frames=max_frames, step=step, mem_bytes=mem_bytes,
                               progress_bar=progress_bar, bias=bias, dark=dark)


def _median_combine(src, *, max_frames, step, mem_bytes, progress_bar, bias, dark):
    t_start = time.perf_counter()
    n_total = int(src.n_frames)
    frame_shape = tuple(int(s) for s in src.frame_shape)
    dtype = np.dtype(src.dtype)
    name = str(getattr(src, "name", "") or "frames")
    if n_total < 1:
        raise InputError(f"{name}: no frames to combine")
    indices = _select_frames(n_total, max_frames=max_frames, step=step)
    n = len(indices)

    masters = []
    for kind, value in (("bias", bias), ("dark", dark)):
        if value is not None:
            masters.append((kind, *_load_master(value, kind, frame_shape)))

    paths = [Path(p) for p in (getattr(src, "paths", None) or [])]
    stop = threading.Event()
    with ThreadPoolExecutor(1, thread_name_prefix="aiflat-hash") as hash_pool:
        # The input files are hashed while the median runs (hashlib releases the GIL).
        hash_future = hash_pool.submit(_hash_files, paths, stop) if paths else None
        try:
            data = _strip_median(src, indices, frame_shape, dtype, mem_bytes=mem_bytes,
                                 offsets=[m[2] for m in masters], progress_bar=progress_bar,
                                 name=name)
        except BaseException:
            stop.set()  # do not keep hashing a large file after a failure
            raise
        hashes = hash_future.result() if hash_future is not None else []

    header = _build_header(src, name=name, paths=paths, hashes=hashes, indices=indices,
                           step=step, n_total=n_total, masters=masters)
    log.info("median of %d frames of %s done in %.2f s", n, name, time.perf_counter() - t_start)
    return CCDData(data.reshape(frame_shape), unit="adu", meta=header)


# --------------------------------------------------------------------------- sources

def _select_frames(n_total, *, max_frames, step):
    """Every ``step``-th frame, the first ``max_frames`` of them (`~aiflat_astro.io.frames.select_frames`)."""
    from .io.frames import select_frames

    if int(n_total) < 1:
        return np.arange(0, dtype=np.intp)
    return select_frames(n_total, step=step, max_frames=max_frames, spread=False)


def _load_master(value, kind, frame_shape):
    """Return ``(label, float64 array of frame_shape)`` for a master bias or dark."""
    label = f"<{type(value).__name__}>"
    if isinstance(value, (str, os.PathLike)):
        path = Path(value)
        if not path.is_file():
            raise InputError(f"master {kind} {str(path)!r} does not exist")
        with fits.open(path, memmap=False) as hdul:
            hdu = next((h for h in hdul if h.is_image and h.data is not None and h.data.ndim >= 2),
                       None)
            if hdu is None:
                raise InputError(f"master {kind} {str(path)!r} has no image data")
            unit = hdu.header.get("BUNIT")
            data = np.array(hdu.data, dtype=np.float64)
        label = path
    elif isinstance(value, CCDData):
        unit = value.unit
        data = np.array(value.data, dtype=np.float64)
    elif isinstance(value, np.ndarray):
        unit = None
        data = np.array(value, dtype=np.float64)
    else:
        raise InputError(f"master {kind} must be a CCDData, an array or a FITS file name, "
                         f"got {type(value).__name__}")
    if unit not in (None, "") and str(unit).strip().lower() != "adu":
        raise InputError(f"master {kind} is in {unit!s}, but the frames are in adu")
    if data.shape != frame_shape:
        if len(frame_shape) == 3 and data.shape == frame_shape[:2]:
            data = np.repeat(data[:, :, None], frame_shape[2], axis=2)
        else:
            raise InputError(f"master {kind} has shape {data.shape}, "
                             f"but the frames have shape {frame_shape}")
    return label, data.reshape(frame_shape[0], -1)


# --------------------------------------------------------------------------- median

def _n_workers():
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        n = os.cpu_count() or 1
    return max(1, min(n, 16))


def _work_dtype(dtype):
    if dtype.kind == "b" or dtype.kind not in "uif":
        raise InputError(f"cannot combine frames of type {dtype}")
    if dtype.itemsize == 1:  # numpy has no SIMD selection for 8-bit types: widen
        return np.dtype(np.uint16 if dtype.kind == "u" else np.int16)
    return dtype.newbyteorder("=")


def _plan_rows(n, height, row_elems, itemsize, work_itemsize, *, mem_bytes, fixed_bytes,
               n_workers):
    """Rows per strip within the memory budget (see median_combine's Notes)."""
    row_bytes = n * row_elems * itemsize          # one row of every selected frame
    # two strip buffers (combined / read ahead), a transient copy some sources make, float64 temps
    per_row = 3 * row_bytes + 8 * row_elems * 3
    # per-thread staging and transposed buffers: about _CHUNK_BYTES each, never more than
    # the whole stack
    chunk = min(n_workers * max(_CHUNK_BYTES, n * work_itemsize),
                n * height * row_elems * work_itemsize)
    chunk += min(n_workers * max(_CHUNK_BYTES, n * itemsize), n * height * row_elems * itemsize)
    budget = mem_bytes - fixed_bytes - chunk
    if budget < per_row:
        need = fixed_bytes + chunk + per_row
        raise InputError(f"mem_limit of {mem_bytes / 1e6:.1f} MB is too small for {n} frames of "
                         f"{row_elems} values a row: at least {math.ceil(need / 1e6)} MB is "
                         f"needed (use a larger mem_limit, or fewer frames with step/max_frames)")
    rows_max = budget // per_row
    rows_wanted = max(math.ceil(_STRIP_TARGET / row_bytes),
                      math.ceil(_MIN_BLOCK / (row_elems * itemsize)))
    return int(max(1, min(rows_max, rows_wanted, height)))


def _strip_reader(src, indices):
    """Return ``read(r0, r1, out) -> array`` reading rows of the frames ``indices``.

    SER videos and plain FITS cubes are read with positional reads (one
    ``pread`` per frame and strip) into our own buffers rather than through a
    memory map: the pages of a memory-mapped multi-GB file would otherwise
    stay mapped and count in the process's resident memory.
    """
    raw = _raw_layout(src)
    if raw is not None:
        return _PreadStrips(src, indices, **raw).read
    from .io.frames import FrameSource

    if isinstance(src, FrameSource):
        return lambda r0, r1, out: src.read_rows(indices, r0, r1, out=out)
    return lambda r0, r1, out: src.read_rows(indices, r0, r1)


def _raw_layout(src):
    """Byte layout of an uncompressed, frame-major source file, or None."""
    from .io.frames import FITSCubeSource
    from .io.ser import HEADER_SIZE, SERReader

    if type(src) is SERReader and src.header.color_id != 101:  # BGR: let the reader reorder
        return {"path": src.path, "offset": HEADER_SIZE, "file_dtype": np.dtype(src.file_dtype),
                "xor": 0}
    if type(src) is FITSCubeSource:
        try:
            with fits.open(src.path, memmap=False, lazy_load_hdus=True) as hdul:
                hdu = hdul[src.hdu_index]
                header = hdu.header
                offset = hdul.fileinfo(src.hdu_index)["datLoc"]
                compressed = isinstance(hdu, fits.CompImageHDU)
        except (OSError, KeyError, IndexError):  # pragma: no cover - defensive
            return None
        bitpix = header.get("BITPIX")
        base = {8: "u1", 16: ">i2", 32: ">i4", 64: ">i8", -32: ">f4", -64: ">f8"}.get(bitpix)
        bzero, bscale = header.get("BZERO", 0), header.get("BSCALE", 1)
        if compressed or base is None or bscale != 1 or "BLANK" in header:
            return None
        xor = 0
        if bzero == 2 ** 15 and bitpix == 16:  # the usual unsigned 16-bit convention
            base, xor = ">u2", 0x8000
        elif bzero != 0:
            return None
        if np.dtype(base).newbyteorder("=") != np.dtype(src.dtype):  # pragma: no cover
            return None
        return {"path": src.path, "offset": offset, "file_dtype": np.dtype(base), "xor": xor}
    return None


class _PreadStrips:
    """Read rows ``r0:r1`` of frames ``indices`` of a frame-major file with pread."""

    def __init__(self, src, indices, *, path, offset, file_dtype, xor):
        self.indices = [int(i) for i in indices]
        self.path = path
        self.offset = int(offset)
        self.file_dtype = file_dtype
        self.native = np.dtype(src.dtype)
        self.swap = file_dtype.itemsize > 1 and not file_dtype.isnative
        self.xor = xor
        self.row_bytes = int(np.prod(src.frame_shape[1:])) * file_dtype.itemsize
        self.frame_bytes = int(src.frame_shape[0]) * self.row_bytes

    def read(self, r0, r1, out):
        from .io._base import pread_frame_part

        with open(self.path, "rb", buffering=0) as f:
            for j, i in enumerate(self.indices):
                pread_frame_part(f, memoryview(out[j]).cast("B")[:(r1 - r0) * self.row_bytes],
                                 self.offset + i * self.frame_bytes + r0 * self.row_bytes,
                                 name=self.path.name, frame=i)
        if self.swap:
            out.byteswap(inplace=True)
        if self.xor:
            out ^= self.native.type(self.xor)
        return out


def _strip_median(src, indices, frame_shape, dtype, *, mem_bytes, offsets=(),
                  progress_bar=False, name="frames"):
    """Median over axis 0 of the frames ``indices``; returns float32 ``(ny, rest)``."""
    from tqdm import tqdm

    n = len(indices)
    height = frame_shape[0]
    tail = tuple(frame_shape[1:])
    row_elems = int(np.prod(tail, dtype=np.int64))
    work_dtype = _work_dtype(dtype)
    n_workers = _n_workers()
    out = np.empty((height, row_elems), dtype=np.float32)
    fixed = out.nbytes + sum(o.nbytes for o in offsets)
    rows = _plan_rows(n, height, row_elems, dtype.itemsize, work_dtype.itemsize,
                      mem_bytes=mem_bytes, fixed_bytes=fixed, n_workers=n_workers)
    strips = [(r0, min(height, r0 + rows)) for r0 in range(0, height, rows)]
    read_strip = _strip_reader(src, indices)
    log.info("median of %d frames of %s: %d strips of %d rows (%.1f MB read per strip, "
             "%d threads, mem_limit %.0f MB)", n, name, len(strips), rows,
             n * rows * row_elems * dtype.itemsize / 1e6, n_workers, mem_bytes / 1e6)
    # Two strip buffers: one being combined, one being filled by the read-ahead thread.
    buffers = [np.empty(n * rows * row_elems, dtype=dtype) for _ in range(min(2, len(strips)))]

    def read(i):
        r0, r1 = strips[i]
        shape = (n, r1 - r0) + tail
        buf = buffers[i % len(buffers)][:n * (r1 - r0) * row_elems].reshape(shape)
        block = read_strip(r0, r1, buf)
        if block.shape != shape:
            raise InputError(f"{name}: read_rows returned shape {block.shape}, expected {shape}")
        return block

    with ThreadPoolExecutor(1, thread_name_prefix="aiflat-read") as reader, \
            ThreadPoolExecutor(n_workers, thread_name_prefix="aiflat-median") as workers, \
            tqdm(total=len(strips), desc="median", unit="strip", disable=not progress_bar) as bar:
        pending = reader.submit(read, 0)
        for i, (r0, r1) in enumerate(strips):
            block = np.asarray(pending.result(), dtype=dtype).reshape(n, -1)
            pending = reader.submit(read, i + 1) if i + 1 < len(strips) else None
            target = out[r0:r1].reshape(-1)
            strip_offsets = [o[r0:r1].reshape(-1) for o in offsets]
            n_lanes = block.shape[1]
            bounds = np.linspace(0, n_lanes, min(n_workers, n_lanes) + 1).astype(np.intp)
            jobs = [workers.submit(_lanes_median, block, target, strip_offsets, a, b, work_dtype)
                    for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
            for job in jobs:
                job.result()
            del block, jobs
            bar.update(1)
    return out


def _lanes_median(block, target, offsets, a, b, work_dtype):
    """Median of lanes ``block[:, a:b]`` into ``target[a:b]``, in cache-sized chunks."""
    n = block.shape[0]
    k = (n - 1) // 2
    even = n % 2 == 0
    kth = k + 1 if even else k
    lanes = max(1, _CHUNK_BYTES // (n * work_dtype.itemsize))
    # The strip's rows (one per frame) are a power-of-two-ish stride apart: gathering a
    # pixel's values straight from them thrashes the cache (about 200 Melem/s).  Copying
    # the chunk's rows into a small contiguous block first, then transposing that block,
    # runs at memory-copy speed (see docs/median.rst, "Speed").
    rows = np.empty((n, min(lanes, b - a)), dtype=block.dtype)
    buf = np.empty((min(lanes, b - a), n), dtype=work_dtype)
    is_float = work_dtype.kind == "f"
    # Integers of up to 16 bits, their sums and half-sums are exact in float32:
    # the float64 arithmetic of np.median then gives the same float32 numbers.
    exact32 = not is_float and work_dtype.itemsize <= 2 and not offsets
    for c0 in range(a, b, lanes):
        c1 = min(b, c0 + lanes)
        staged = rows[:, :c1 - c0]
        staged[...] = block[:, c0:c1]
        work = buf[:c1 - c0]
        work[...] = staged.T
        work.partition(kth, axis=1)
        upper = work[:, kth]
        if exact32:
            if even:
                value = np.add(work[:, :kth].max(axis=1), upper, dtype=np.float32)
                value *= np.float32(0.5)
                target[c0:c1] = value
            else:
                target[c0:c1] = upper
            continue
        upper = upper.astype(np.float64)
        for o in offsets:
            upper -= o[c0:c1]
        if even:
            lower = work[:, :kth].max(axis=1).astype(np.float64)
            for o in offsets:
                lower -= o[c0:c1]
            with np.errstate(invalid="ignore", over="ignore"):
                value = (lower + upper) / 2.0
        else:
            value = upper
        if is_float:
            value[np.isnan(work[:, kth:]).any(axis=1)] = np.nan
        target[c0:c1] = value


# --------------------------------------------------------------------------- provenance

def _hash_files(paths, stop):
    """SHA-256 of each file, read in 4 MiB chunks; gives up when ``stop`` is set."""
    digests = []
    buffer = bytearray(_HASH_CHUNK)  # reused: no new allocation (and page faults) per chunk
    view = memoryview(buffer)
    for path in paths:
        h = hashlib.sha256()
        with open(path, "rb", buffering=0) as f:
            while not stop.is_set() and (got := f.readinto(buffer)):
                h.update(view[:got])
        digests.append(h.hexdigest())
    return digests


def _build_header(src, *, name, paths, hashes, indices, step, n_total, masters):
    header = fits.Header()
    meta = getattr(src, "meta", None)
    if meta is not None:
        for card in fits.Header(meta).cards:
            if card.keyword not in _STRUCTURAL and not card.keyword.startswith("NAXIS"):
                header.append(card)
    n = len(indices)
    inputs = []
    if not paths:
        inputs.append({"path": name})
    elif len(paths) <= _MAX_PROV_FILES:
        inputs.extend({"path": str(p), "sha256": h} for p, h in zip(paths, hashes))
    else:
        manifest = "".join(f"{h}  {p.name}\n" for p, h in zip(paths, hashes))
        inputs.append({"path": f"{paths[0].name} .. {paths[-1].name} ({len(paths)} files)",
                       "sha256": hashlib.sha256(manifest.encode("utf-8")).hexdigest()})
    master_lines = []
    for kind, label, _ in masters:
        if isinstance(label, Path):
            digest = sha256_file(label)
            inputs.append({"path": str(label), "sha256": digest})
            master_lines.append(f"Subtracted master {kind} {label.name} (SHA-256 {digest}).")
        else:
            master_lines.append(f"Subtracted master {kind} {label}.")
    history = [f"Exact temporal median (aiflat_astro.median_combine) of {n} of {n_total} frames "
               f"of {name}: frames {indices[0]}..{indices[-1]} step {step} (0-based)."]
    if len(paths) > _MAX_PROV_FILES:
        history.append(f"PROVSHA1 is the SHA-256 of the 'sha256sum' manifest of the "
                       f"{len(paths)} input files.")
    history.extend(master_lines)
    add_provenance_cards(header, {"ncombine": n, "inputs": inputs, "history": history})
    header["FRAME0"] = (int(indices[0]), "first frame combined (0-based)")
    header["FRAME1"] = (int(indices[-1]), "last frame combined (0-based)")
    header["FRAMESTP"] = (int(step), "step between frames combined")
    header["COMBMETH"] = ("MEDIAN", "exact per-pixel median over frames")
    header["BIASSUB"] = (any(m[0] == "bias" for m in masters), "master bias subtracted")
    header["DARKSUB"] = (any(m[0] == "dark" for m in masters), "master dark subtracted")
    header["BUNIT"] = "adu"
    header["ROWORDER"] = ("TOP-DOWN", "row order of the data (first row = top)")
    return header
