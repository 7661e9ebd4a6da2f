"""Apply a synthetic dust flat: ``ccdproc.flat_correct`` semantics, at copy speed.

`apply_flat` calibrates one frame in memory and is, by construction and by
test, exactly ``ccdproc.flat_correct(frame, flat, norm_value=1)``.

`apply_to_file` calibrates whole files in bounded memory:

* **SER → SER**: same sample type, byte order, header and timestamps.  The
  flat is exactly 1.0 outside the dust, so the output is a byte copy of the
  input in which only the bounding boxes of the dust are recomputed: every
  other pixel, the header and the trailer are bit-identical, and the
  calibration runs at the speed of a file copy.  Corrected values are
  rounded and clipped to the sample range (and to ``2**PixelDepth - 1`` when
  the header depth is below the sample size and the data are LSB-aligned).
  A damaged input (FrameCount that disagrees with the file size, truncated
  last frame) is instead streamed through `~aiflat_astro.io.SERWriter.like`,
  which writes a repaired file.
* **FITS → FITS**: a 2-D image or a 3-D cube ``(n_frames, ny, nx)``;
  integer data keep their type (rounded and clipped, ``BZERO``/``BSCALE``
  kept), floating-point data are divided exactly; a ``HISTORY`` card and the
  flat's identity (``FLATFILE``, ``FLATSHA``) are added, CHECKSUM/DATASUM
  recomputed when the input had them.

Outputs are written atomically; inputs are opened read-only and never changed.
"""

import collections
import contextlib
import logging
import os
import time
from pathlib import Path

import numpy as np

from .io._base import ccddata_class, is_ccddata
from .utils._atomic import atomic_output, output_name, parse_size  # noqa: F401 (output_name: used by callers)
from .utils._copy import BackgroundCopy
from .utils.exceptions import InputError

__all__ = ["apply_flat", "apply_to_file", "flat_boxes"]

#: Largest flat value accepted by `check_flat_values`: a flat divides, 1e30 would zero the pixel.
FLAT_MAX = 100.0

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------
# in memory
# --------------------------------------------------------------------------------------
def _as_flat(flat):
    if isinstance(flat, (str, os.PathLike)):
        from .io.fits import read_flat

        return read_flat(flat)
    if is_ccddata(flat):
        return flat
    data = np.asarray(flat)
    if data.ndim != 2:
        raise InputError(f"a flat must be 2-D, got shape {data.shape}")
    return ccddata_class()(data.astype(np.float32, copy=False), unit="")


def _read_flat_data(path):
    """The flat's data and primary header, checksums verified, read as fast as possible.

    A ``flat.fits`` as aiflat writes it is read with NumPy alone
    (``aiflat_astro.io._fastflat``: the command line does not wait 0.25 s for
    `astropy.io.fits`); any other file, or one whose checksums do not verify,
    with `~aiflat_astro.io.fits.read_flat`'s checks and errors.
    """
    from .io._fastflat import read_flat_fast

    fast = read_flat_fast(path)
    if fast is not None:
        return fast[0], fast[2]
    from .io.fits import _read_flat_parts

    data, _, _, header = _read_flat_parts(path, provenance=False)
    return data, header


class _FlatParts(collections.namedtuple("_FlatParts", "data header name")):
    """A flat already read (`~aiflat_astro.io.fits._read_flat_parts`): data, header, file name."""


def _flat_data(flat):
    """``(float32 data, header or None, name)`` of a flat given as a path, a CCDData or an array.

    A path is read with checksum verification but without building a CCDData
    (``aiflat apply`` does not import astropy.nddata)."""
    if isinstance(flat, _FlatParts):
        return np.asarray(flat.data, dtype=np.float32), flat.header, flat.name
    if isinstance(flat, (str, os.PathLike)):
        data, header = _read_flat_data(flat)
        return data, header, Path(flat).name
    if is_ccddata(flat):
        return np.asarray(flat.data, dtype=np.float32), flat.meta, "in-memory flat"
    data = np.asarray(flat, dtype=np.float32)
    if data.ndim != 2:
        raise InputError(f"a flat must be 2-D, got shape {data.shape}")
    return data, None, "in-memory flat"


def apply_flat(frame, flat, *, add_keyword=True):
    """Flat-field one frame: exactly ``ccdproc.flat_correct(frame, flat, norm_value=1)``.

    With ``norm_value=1`` the flat is not renormalised, so pixels where the
    aiflat flat is 1.0 are divided by exactly 1.0 and keep their values.  The
    flat's DQ bits are ORed into the result's ``flags`` (ccdproc arithmetic
    drops flags).

    Parameters
    ----------
    frame : `~astropy.nddata.CCDData` or `~numpy.ndarray`
        The science frame (an array is taken as adu).
    flat : `~astropy.nddata.CCDData`, `~numpy.ndarray` or path
        The dust flat (`~aiflat_astro.flat.make_flat`, or a ``flat.fits``,
        read with checksum verification).
    add_keyword : bool, optional
        Passed to ccdproc (log the step in the header).

    Returns
    -------
    `~astropy.nddata.CCDData`
        The calibrated frame.

    Examples
    --------
    >>> import numpy as np
    >>> from astropy.nddata import CCDData
    >>> frame = CCDData(np.full((4, 4), 100.0), unit="adu")
    >>> flat = np.ones((4, 4), np.float32); flat[1, 1] = 0.5
    >>> out = apply_flat(frame, flat)
    >>> float(out.data[1, 1]), float(out.data[0, 0])
    (200.0, 100.0)
    """
    import ccdproc

    flat = _as_flat(flat)
    if not is_ccddata(frame):
        frame = ccddata_class()(np.asarray(frame), unit="adu")
    if frame.shape != flat.shape:
        raise InputError(f"frame shape {frame.shape} does not match the flat shape {flat.shape}")
    result = ccdproc.flat_correct(frame, flat, norm_value=1, add_keyword=add_keyword)
    flags = [np.asarray(f) for f in (frame.flags, flat.flags) if f is not None]
    if flags:
        result.flags = np.bitwise_or.reduce(flags) if len(flags) > 1 else flags[0].copy()
    return result


def _runs(occupied, merge):
    """(start, stop) of the runs of True in a 1-D array, joined across gaps shorter than ``merge``."""
    idx = np.flatnonzero(occupied)
    if idx.size == 0:
        return []
    cuts = np.flatnonzero(np.diff(idx) > merge)  # a gap of at least `merge` empty entries
    starts = np.concatenate([[idx[0]], idx[cuts + 1]])
    stops = np.concatenate([idx[cuts], [idx[-1]]]) + 1
    return list(zip(starts.tolist(), stops.tolist()))


def flat_boxes(flat, *, merge=4):
    """Bounding boxes (slices) of the pixels where the flat differs from 1.0.

    The boxes are found by recursive XY cuts: a box is split wherever a band
    of at least ``merge`` rows or columns without dust crosses it, until no
    such band is left.  Boxes therefore never overlap, boxes closer than
    ``merge`` pixels end up in one box (fewer, larger array operations), and
    outside the boxes the flat is exactly 1.0.  (NumPy only: the command line
    ``aiflat apply`` does not pay for importing ``scipy.ndimage``.)

    Examples
    --------
    >>> import numpy as np
    >>> f = np.ones((10, 10), np.float32); f[2:4, 5:7] = 0.9
    >>> flat_boxes(f)
    [(slice(2, 4, None), slice(5, 7, None))]
    """
    data = np.asarray(getattr(flat, "data", flat))
    touched = data != 1.0
    merge = max(int(merge), 1)
    boxes = []
    todo = [(0, touched.shape[0], 0, touched.shape[1])]
    while todo:
        y0, y1, x0, x1 = todo.pop()
        sub = touched[y0:y1, x0:x1]
        rows = _runs(sub.any(axis=1), merge)
        if not rows:
            continue
        cells = []
        for r0, r1 in rows:
            for c0, c1 in _runs(sub[r0:r1].any(axis=0), merge):
                cells.append((y0 + r0, y0 + r1, x0 + c0, x0 + c1))
        if len(cells) == 1 and cells[0] == (y0, y1, x0, x1):
            boxes.append((slice(y0, y1), slice(x0, x1)))  # no cut left
        else:
            todo.extend(cells)  # a cell may split further once its neighbours are cut away
    return sorted(boxes, key=lambda b: (b[0].start, b[1].start))


# --------------------------------------------------------------------------------------
# integer output
# --------------------------------------------------------------------------------------
class _Quantiser:
    """Round and clip corrected values to what the output sample type can hold."""

    def __init__(self, dtype, *, vmin=None, vmax=None, step=1):
        self.dtype = np.dtype(dtype)
        info = np.iinfo(self.dtype) if self.dtype.kind in "iu" else None
        self.lo = vmin if vmin is not None else (info.min if info else None)
        self.hi = vmax if vmax is not None else (info.max if info else None)
        self.step = step
        self.n_clipped = 0

    def __call__(self, values):
        if self.lo is None:  # floating point: no rounding
            return values.astype(self.dtype)
        if self.step > 1:
            values = np.rint(values / self.step) * self.step
        else:
            values = np.rint(values)
        clip = (values < self.lo) | (values > self.hi)
        n = int(np.count_nonzero(clip))
        if n:
            self.n_clipped += n
            np.clip(values, self.lo, self.hi, out=values)
        return values.astype(self.dtype)


def _ser_quantiser(reader):
    depth = int(reader.header.pixel_depth)
    bits = 8 * reader.dtype.itemsize
    if 0 < depth < bits:
        if reader.unused_low_bits >= bits - depth and reader.max_value > (1 << depth) - 1:
            step = 1 << (bits - depth)  # MSB-aligned data: keep the alignment
            return _Quantiser(reader.dtype, vmin=0, vmax=(1 << bits) - step, step=step)
        return _Quantiser(reader.dtype, vmin=0, vmax=(1 << depth) - 1)
    return _Quantiser(reader.dtype)


# --------------------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------------------
def _progress(total, desc, unit, enabled):
    if not enabled:
        return contextlib.nullcontext(None)
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, unit_scale=True, leave=False)


def _frame_blocks(n_frames, per_frame_bytes, mem_limit, *, max_frames=None):
    budget = parse_size(mem_limit)
    if budget < 6 * per_frame_bytes:  # honoured, or refused: never silently exceeded
        raise InputError(f"mem_limit {mem_limit} is too small to correct the dust of one frame "
                         f"(needs {6 * per_frame_bytes:,} bytes)")
    block = int(max(1, min(n_frames, budget // max(6 * per_frame_bytes, 1), max_frames or n_frames)))
    return [(i, min(i + block, n_frames)) for i in range(0, n_frames, block)]


def _correct_block(values, flat_box, quantise):
    """Divide a block (k, h, w[, 3]) by the flat box (h, w) in float64 and quantise."""
    f = flat_box[..., None] if values.ndim == 4 else flat_box
    return quantise(values.astype(np.float64) / f)


def _check_paths(input_path, output_path):
    input_path, output_path = Path(input_path), Path(output_path)
    if not input_path.is_file():
        raise InputError(f"no such file: {str(input_path)!r}")
    if output_path.exists() and output_path.resolve() == input_path.resolve():
        raise InputError(f"the output {str(output_path)!r} is the input: aiflat never modifies an input")
    return input_path, output_path


def _apply_ser(flat, input_path, output_path, *, overwrite, progress_bar, mem_limit, byte_order, started=None):
    from .io.ser import HEADER_SIZE, SERReader, SERWriter

    stats = {"format": "ser"}
    boxes = flat_boxes(flat)
    # the header, layout and byte order are checked before anything is written
    with SERReader(input_path, byte_order=byte_order) as reader:
        n = reader.n_frames
        if tuple(reader.frame_shape[:2]) != flat.shape:
            raise InputError(f"{reader.name}: frame shape {reader.frame_shape[:2]} does not match the flat "
                             f"shape {flat.shape}")
        clean_layout = reader.header.frame_count == n and not reader.layout.notes
        quantise = _ser_quantiser(reader)
        if clean_layout:
            # a byte copy of the input in which only the dust boxes are recomputed, each block of
            # frames as soon as the kernel's copy (in a background thread) has passed it; into an
            # anonymous temporary file where the OS allows (nothing left behind by a kill)
            with atomic_output(output_path, overwrite=overwrite, anonymous=True,
                               tmp=None if started is None else started.tmp) as tmp:
                copy = started if started is not None else BackgroundCopy(input_path, tmp)
                try:
                    if boxes:
                        _patch_ser(reader, input_path, tmp, copy, flat, boxes, quantise, HEADER_SIZE,
                                   mem_limit=mem_limit, progress_bar=progress_bar)
                    copy.finish()
                except BaseException:
                    copy.cancel()  # stop the copy before the temporary output is removed
                    raise
            stats["method"] = "copy+patch"
        else:
            if started is not None:
                started.cancel()  # a repaired file is written instead of the byte copy
                started.tmp.discard()
            with SERWriter.like(reader, output_path, overwrite=overwrite) as writer, \
                    _progress(n, f"calibrate {reader.name}", "frame", progress_bar) as bar:
                for i in range(n):
                    frame = reader.read(i)
                    for ys, xs in boxes:
                        frame[ys, xs] = _correct_block(frame[None, ys, xs], flat[ys, xs], quantise)[0]
                    writer.write(frame)
                    if bar is not None:
                        bar.update(1)
            stats["method"] = "stream (input layout repaired)"
        stats.update(n_frames=n, n_clipped=quantise.n_clipped)
    return stats


def _patch_ser(reader, input_path, tmp, copy, flat, boxes, quantise, header_size, *, mem_limit, progress_bar):
    """Recompute the dust boxes of every frame in the output, block by block behind the copy."""
    n = reader.n_frames
    frame_bytes = reader.header.frame_bytes
    frame_shape = tuple(reader.frame_shape)
    # raw samples in file order (byte order and BGR channel order as stored)
    src = np.memmap(input_path, dtype=reader.file_dtype, mode="r", offset=header_size, shape=(n,) + frame_shape)
    try:
        rows = max(b[0].stop - b[0].start for b in boxes)
        width_bytes = reader.width * reader.planes * reader.file_dtype.itemsize
        # blocks of at most ~32 MB of video, so that the patching follows the copy closely
        blocks = _frame_blocks(n, rows * width_bytes, mem_limit, max_frames=max(1, (32 << 20) // frame_bytes))
        with _progress(n, f"calibrate {reader.name}", "frame", progress_bar) as bar:
            for i0, i1 in blocks:
                corrected = [_correct_block(src[i0:i1, ys, xs], flat[ys, xs], quantise) for ys, xs in boxes]
                copy.wait_for(header_size + i1 * frame_bytes)  # never patch what the copy will still write
                # map only these frames: the output is still growing beyond them
                out = np.memmap(tmp, dtype=reader.file_dtype, mode="r+", offset=header_size + i0 * frame_bytes,
                                shape=(i1 - i0,) + frame_shape)
                for (ys, xs), values in zip(boxes, corrected):
                    out[:, ys, xs] = values
                # no msync: like the copy itself, the pages reach the disk through the page cache
                # (a forced sync of the scattered patches would cost more than the copy)
                del out
                if bar is not None:
                    bar.update(i1 - i0)
    finally:
        del src


def _fits_image_hdu(hdul, path):
    for i, hdu in enumerate(hdul):
        if hdu.is_image and hdu.header.get("NAXIS", 0) in (2, 3):
            return i
    raise InputError(f"{Path(path).name} has no 2-D image or 3-D cube to calibrate")


def _apply_fits(flat, input_path, output_path, *, overwrite, progress_bar, mem_limit, flat_id):
    from astropy.io import fits

    stats = {"format": "fits"}
    with fits.open(input_path, memmap=True, do_not_scale_image_data=True, mode="readonly") as hdul:
        idx = _fits_image_hdu(hdul, input_path)
        hdu = hdul[idx]
        hdr = hdu.header
        naxis = hdr["NAXIS"]
        shape = tuple(hdr[f"NAXIS{k}"] for k in range(naxis, 0, -1))
        if shape[-2:] != flat.shape:
            raise InputError(f"{Path(input_path).name}: image shape {shape[-2:]} does not match the flat "
                             f"shape {flat.shape}")
        bitpix = hdr["BITPIX"]
        bscale, bzero = float(hdr.get("BSCALE", 1.0)), float(hdr.get("BZERO", 0.0))
        had_checksum = any("CHECKSUM" in h.header for h in hdul)
        # headers are edited in memory only (the input is open read-only); data stay memory-mapped
        target = hdul[idx]
        target.header.add_history(f"aiflat: divided by the dust flat {flat_id[0]} (norm_value=1)")
        target.header["FLATFILE"] = (flat_id[0][:68], "aiflat dust flat applied")
        if flat_id[1]:
            target.header["FLATSHA"] = flat_id[1]
        boxes = flat_boxes(flat)
        with atomic_output(output_path, overwrite=overwrite) as tmp:
            hdul.writeto(tmp, checksum=had_checksum, output_verify="silentfix")
            stored = np.dtype(fits.BITPIX2DTYPE[bitpix]).newbyteorder(">")
            if bitpix > 0:
                lo = np.iinfo(stored).min * bscale + bzero
                hi = np.iinfo(stored).max * bscale + bzero
                quantise = _Quantiser(np.float64, vmin=min(lo, hi), vmax=max(lo, hi))
            else:
                quantise = _Quantiser(np.float64)
            if boxes:
                with fits.open(tmp, mode="readonly") as written:
                    offset = written.fileinfo(idx)["datLoc"]
                out = np.memmap(tmp, dtype=stored, mode="r+", offset=offset, shape=shape)
                cube = out if naxis == 3 else out[None]
                src = hdu.data if naxis == 3 else hdu.data[None]
                n = cube.shape[0]
                rows = max(b[0].stop - b[0].start for b in boxes)
                blocks = _frame_blocks(n, rows * shape[-1] * stored.itemsize, mem_limit)
                with _progress(n, f"calibrate {Path(input_path).name}", "frame", progress_bar) as bar:
                    for i0, i1 in blocks:
                        for ys, xs in boxes:
                            phys = np.asarray(src[i0:i1, ys, xs], dtype=np.float64) * bscale + bzero
                            corr = _correct_block(phys, flat[ys, xs], quantise)
                            if bitpix > 0:
                                corr = np.rint((corr - bzero) / bscale)
                            cube[i0:i1, ys, xs] = corr.astype(stored)
                        if bar is not None:
                            bar.update(i1 - i0)
                del out, cube
                if had_checksum:
                    with fits.open(tmp, mode="update", do_not_scale_image_data=True) as upd:
                        upd[idx].add_checksum()
            stats.update(n_frames=shape[0] if naxis == 3 else 1, n_clipped=quantise.n_clipped,
                         method="copy+patch")
    return stats


def apply_to_file(flat, input_path, output_path, *, overwrite=False, progress_bar=False, mem_limit="256MB",
                  byte_order="auto"):
    """Calibrate a SER video, a FITS cube or a FITS image with a dust flat.

    Parameters
    ----------
    flat : `~astropy.nddata.CCDData`, `~numpy.ndarray` or path
        The dust flat (a ``flat.fits`` is read with checksum verification).
    input_path : str or `pathlib.Path`
        ``.ser`` video, or FITS file with a 2-D image or a 3-D cube
        ``(n_frames, ny, nx)`` (the first such HDU is calibrated; the other
        HDUs are copied).
    output_path : str or `pathlib.Path`
        Output file, of the same format as the input (written atomically).
    overwrite : bool, optional
        Replace an existing output.
    progress_bar : bool, optional
        Show progress bars.
    mem_limit : str or int, optional
        Bound on the working memory (default ``'256MB'``).
    byte_order : {'auto', '<', '>'}, optional
        Byte order of 16-bit SER data (see `~aiflat_astro.io.SERReader`).

    Returns
    -------
    dict
        ``input``, ``output``, ``format``, ``method``, ``n_frames``,
        ``n_clipped`` (corrected samples clipped to the output range) and
        ``seconds``.

    Examples
    --------
    >>> import os, tempfile, numpy as np
    >>> from aiflat_astro.io import write_ser, SERReader
    >>> d = tempfile.mkdtemp()
    >>> frames = np.full((5, 16, 16), 800, np.uint16)
    >>> frames[:, 4:8, 4:8] = 400                      # a dust shadow, transmission 0.5
    >>> write_ser(os.path.join(d, "in.ser"), frames, pixel_depth=12)
    >>> flat = np.ones((16, 16), np.float32); flat[4:8, 4:8] = 0.5
    >>> stats = apply_to_file(flat, os.path.join(d, "in.ser"), os.path.join(d, "out.ser"))
    >>> with SERReader(os.path.join(d, "out.ser")) as out:
    ...     print(stats["n_frames"], out.read(3)[5, 5], out.read(3)[0, 0])
    5 800 800
    """
    return _apply_to_file(flat, input_path, output_path, overwrite=overwrite, progress_bar=progress_bar,
                          mem_limit=mem_limit, byte_order=byte_order)


def check_flat_values(data, *, name):
    """Refuse a flat with values that would destroy pixels on division.

    NaN, infinite, zero or negative values, and values above `FLAT_MAX`
    (1e30 in a shadow would set the corrected pixels to 0) are refused.

    Examples
    --------
    >>> import numpy as np
    >>> f = np.ones((4, 4), np.float32); f[1, 1] = 1e30
    >>> check_flat_values(f, name="flat.fits")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    aiflat_astro.utils.exceptions.InputError: flat.fits: 1 flat value(s) above 100 (largest 1e+30); ...
    """
    a = np.asarray(data)
    finite = np.isfinite(a)
    if not finite.all():
        raise InputError(f"{name}: the flat has {int(a.size - np.count_nonzero(finite))} NaN or infinite value(s); "
                         "it cannot be applied")
    if a.size and float(a.min()) <= 0:
        raise InputError(f"{name}: the flat has {int(np.count_nonzero(a <= 0))} zero or negative value(s); "
                         "it cannot be applied")
    high = a > FLAT_MAX
    if high.any():
        raise InputError(f"{name}: {int(np.count_nonzero(high))} flat value(s) above {FLAT_MAX:g} (largest "
                         f"{float(a.max()):.6g}); dividing by them would wipe out the pixels (a flat is about 1: "
                         "is this a flat?)")


def _apply_to_file(flat, input_path, output_path, *, overwrite=False, progress_bar=False, mem_limit="256MB",
                   byte_order="auto", started=None, t0=None):
    """`apply_to_file`; ``started`` is a `BackgroundCopy` of a SER input already copying to a
    temporary file for the output (its ``tmp``, a `~aiflat_astro.utils._atomic.TemporaryOutput`;
    the command line starts it before loading the libraries): it is adopted, or cancelled and
    its output dropped if anything fails first."""
    t0 = time.perf_counter() if t0 is None else t0
    try:
        data, meta, name = _flat_data(flat)
        flat_id = (name, meta.get("PARAMSHA", "") if meta else "")
        check_flat_values(data, name=name)
        input_path, output_path = _check_paths(input_path, output_path)
        if input_path.suffix.lower() == ".ser":
            kind = "ser"
        else:
            from .io.frames import _kind

            kind = _kind(input_path)
        if kind == "ser":
            stats = _apply_ser(data, input_path, output_path, overwrite=overwrite, progress_bar=progress_bar,
                               mem_limit=mem_limit, byte_order=byte_order, started=started)
        else:
            if started is not None:
                raise InputError(f"{input_path.name}: not a SER video")  # the command line only starts SER copies
            stats = _apply_fits(data, input_path, output_path, overwrite=overwrite, progress_bar=progress_bar,
                                mem_limit=mem_limit, flat_id=flat_id)
    except BaseException:
        if started is not None:
            started.cancel()
            started.tmp.discard()
        raise
    stats.update(input=str(input_path), output=str(output_path), seconds=time.perf_counter() - t0)
    if stats.get("n_clipped"):
        log.warning("%s: %d corrected sample(s) clipped to the output range", input_path.name,
                    stats["n_clipped"])
    log.info("%s -> %s: %d frame(s) in %.2f s (%s)", input_path.name, output_path.name, stats["n_frames"],
             stats["seconds"], stats["method"])
    return stats
