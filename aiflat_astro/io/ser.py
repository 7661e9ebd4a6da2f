"""Read and write SER videos (Lucam Recorder format, V3), lazily and memory-mapped.

SER is the de-facto format of solar and planetary video capture (FireCapture,
SharpCap, Siril, PIPP, INDI ...).  A file is a 178-byte little-endian header,
the frames one after another with no padding, and an optional trailer of one
64-bit timestamp per frame.  Real files deviate from the specification in many
ways; `SERReader` handles all the known deviations (see ``docs/ser.rst``):

- the *LittleEndian* flag is used with the opposite meaning by most writers
  (0 = little-endian data); the flag is taken as a prior in that de-facto
  meaning and checked against the data with a byte-smoothness test;
- *PixelDepthPerPlane* is often wrong: the header depth and the depth measured
  on the data are both reported; data are never rescaled;
- trailer timestamps (.NET ticks, top two bits masked) may be in local time,
  absent, short or garbage; they are validated and dropped with a warning when
  unusable;
- *FrameCount* may be 0 (capture program crashed), too large, or the last frame
  truncated: the complete frames are used, with a warning;
- header strings may carry junk after the terminating NUL and non-ASCII bytes.

Frames are read on demand: opening a file of any size reads only the header,
the trailer and a bounded sample of rows of three frames.  Rows are top-down (the first row
of a frame is the top of the image) and are never flipped; FITS headers made
here carry ``ROWORDER = 'TOP-DOWN'``.
"""

import dataclasses
import datetime
import logging
import os
import re
import struct
from pathlib import Path

import numpy as np

from ..utils._atomic import atomic_output
from ..utils.exceptions import InputError, SERFormatError, SERFormatWarning, warn_user
from ._base import FrameSource, ccddata_class, is_ccddata, pread_frame_part

__all__ = [
    "SERHeader",
    "SERReader",
    "SERWriter",
    "read_ser",
    "write_ser",
    "decide_byte_order",
    "ser_layout",
    "ticks_to_datetime64",
    "datetime_to_ticks",
    "parse_capture_metadata",
    "COLOR_IDS",
]

log = logging.getLogger(__name__)

#: Layout of the 178-byte SER header; every integer is little-endian.
HEADER_STRUCT = struct.Struct("<14s7i40s40s40sqq")
HEADER_SIZE = HEADER_STRUCT.size  # 178
LUCAM_ID = "LUCAM-RECORDER"

#: ColorID → name.  Bayer (8-11) and CMY (16-19) mosaics are read as raw mono mosaics.
COLOR_IDS = {
    0: "MONO",
    8: "RGGB", 9: "GRBG", 10: "GBRG", 11: "BGGR",
    16: "CYYM", 17: "YCMY", 18: "YMCY", 19: "MYYC",
    100: "RGB", 101: "BGR",
}
_RGB_IDS = (100, 101)

#: .NET ticks (100 ns since 0001-01-01) at the Unix epoch.
TICKS_UNIX_EPOCH = 621_355_968_000_000_000
TICKS_PER_SECOND = 10_000_000
TICKS_PER_DAY = 86_400 * TICKS_PER_SECOND
#: Mask for the 62 significant bits of a SER timestamp (the top two are undefined).
TICKS_MASK = (1 << 62) - 1


def _ticks_at(year):
    delta = datetime.datetime(year, 1, 1) - datetime.datetime(1, 1, 1)
    return (delta.days * 86_400 + delta.seconds) * TICKS_PER_SECOND


#: Plausible range of capture dates; timestamps outside it are rejected.
TICKS_MIN = _ticks_at(1990)
TICKS_MAX = _ticks_at(2100)

#: Byte-smoothness decision: the data "clearly" say little- (big-) endian when
#: the mean absolute neighbour difference of the first byte is more than
#: ``BYTE_ORDER_RATIO`` times that of the second (or less than its inverse).
BYTE_ORDER_RATIO = 2.0
#: Below this mean absolute byte difference a frame is too flat to decide.
BYTE_ORDER_MIN_TV = 0.02
#: Fewer same-channel neighbour pairs than this in the samples (tiny frames) is no evidence.
BYTE_ORDER_MIN_PAIRS = 64
#: At most this many bytes in each of the (up to three) bands of rows sampled in
#: each of the first, middle and last frames to decide the byte order and
#: measure the bit depth: ``aiflat info`` reads a few MB whatever the frame size.
SAMPLE_BAND_BYTES = 1 << 19


# ---------------------------------------------------------------------------
# Timestamps
# ---------------------------------------------------------------------------

def ticks_to_datetime64(ticks):
    """Convert .NET ticks (as stored in SER files) to `numpy.datetime64` [us].

    The two most significant bits are undefined in SER files and are masked.

    Parameters
    ----------
    ticks : int or array-like of int
        100-ns intervals since 0001-01-01T00:00 (proleptic Gregorian).

    Returns
    -------
    `numpy.datetime64` or `numpy.ndarray` of ``datetime64[us]``

    Examples
    --------
    >>> ticks_to_datetime64(638_000_000_000_000_000)
    np.datetime64('2022-09-28T22:13:20.000000')
    """
    t = np.asarray(ticks, dtype=np.int64) & np.int64(TICKS_MASK)
    us = (t - np.int64(TICKS_UNIX_EPOCH)) // 10
    out = us.astype("datetime64[us]")
    return out[()] if out.ndim == 0 else out


def datetime_to_ticks(value):
    """Convert a time to .NET ticks (100 ns since 0001-01-01, UTC).

    Parameters
    ----------
    value : int, `datetime.datetime`, `numpy.datetime64`, `astropy.time.Time` or str
        An int is returned unchanged (raw ticks).  A naive `datetime.datetime`
        is taken as UTC; an aware one is converted to UTC.  A string is parsed
        by `numpy.datetime64` (ISO 8601, UTC).

    Returns
    -------
    int

    Examples
    --------
    >>> datetime_to_ticks("2022-09-28T22:13:20")
    638000000000000000
    """
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, datetime.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(datetime.timezone.utc).replace(tzinfo=None)
        value = np.datetime64(value, "us")
    elif hasattr(value, "to_value") and hasattr(value, "scale"):  # astropy Time
        value = np.datetime64(value.utc.to_value("isot", subfmt="date_hms"), "us")
    elif isinstance(value, str):
        value = np.datetime64(value, "us")
    if not isinstance(value, np.datetime64):
        raise InputError(f"cannot interpret {value!r} as a time")
    us = int(value.astype("datetime64[us]").astype(np.int64))
    return us * 10 + TICKS_UNIX_EPOCH


def _wrap_int64(t):
    """Two's-complement view of a 64-bit pattern (ticks with the top bit set)."""
    t = int(t) & 0xFFFF_FFFF_FFFF_FFFF
    return t - (1 << 64) if t >= 1 << 63 else t


def _valid_tick(t):
    t = int(t) & TICKS_MASK
    return TICKS_MIN <= t <= TICKS_MAX


def _format_ticks(t):
    return str(ticks_to_datetime64(t)) if t is not None and _valid_tick(t) else None


# ---------------------------------------------------------------------------
# Header
# ---------------------------------------------------------------------------

def _decode_string(raw):
    """Decode a fixed-size SER header string: cut at NUL, latin-1, strip spaces."""
    return raw.split(b"\0", 1)[0].decode("latin-1", errors="ignore").strip()


def _encode_string(text, size, name):
    raw = str(text).encode("latin-1", errors="replace")
    if len(raw) > size:
        raise InputError(f"SER header field {name} is limited to {size} characters: {text!r}")
    return raw.ljust(size, b"\0")


_FIRECAPTURE_RE = re.compile(r"([A-Za-z_][A-Za-z_ ]*?)\s*=\s*([-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)")


def parse_capture_metadata(text):
    """Parse ``key=value`` settings that FireCapture writes into the Telescope field.

    Parameters
    ----------
    text : str
        For example ``'fps=113.64gain=85exp=8.00'``.

    Returns
    -------
    dict
        Lower-case keys → numbers (int when integral in the text); empty when
        the field holds no settings.

    Examples
    --------
    >>> parse_capture_metadata("fps=113.64gain=85exp=8.00")
    {'fps': 113.64, 'gain': 85, 'exp': 8.0}
    >>> parse_capture_metadata("C14 Edge HD")
    {}
    """
    out = {}
    for key, value in _FIRECAPTURE_RE.findall(text or ""):
        number = float(value) if any(c in value for c in ".eE") else int(value)
        out[key.strip().lower()] = number
    return out


@dataclasses.dataclass
class SERHeader:
    """The 178-byte SER header, decoded into Python values.

    Integer fields are kept exactly as stored (no byte-order flag applied:
    header integers are always little-endian); ``date_time`` and
    ``date_time_utc`` are raw .NET ticks (see `start_time_utc`).

    Examples
    --------
    >>> h = SERHeader(width=320, height=256, pixel_depth=12, frame_count=10)
    >>> len(h.to_bytes()), h.frame_bytes
    (178, 163840)
    >>> SERHeader.from_bytes(h.to_bytes()) == h
    True
    """

    file_id: str = LUCAM_ID
    lu_id: int = 0
    color_id: int = 0
    little_endian_flag: int = 0
    width: int = 0
    height: int = 0
    pixel_depth: int = 8
    frame_count: int = 0
    observer: str = ""
    instrument: str = ""
    telescope: str = ""
    date_time: int = 0
    date_time_utc: int = 0

    @classmethod
    def from_bytes(cls, raw):
        """Decode the first 178 bytes of ``raw``."""
        if len(raw) < HEADER_SIZE:
            raise SERFormatError(f"SER header needs {HEADER_SIZE} bytes, got {len(raw)}")
        (file_id, lu_id, color_id, flag, width, height, depth, count,
         observer, instrument, telescope, dt, dt_utc) = HEADER_STRUCT.unpack(
             bytes(raw[:HEADER_SIZE]))
        return cls(file_id=_decode_string(file_id), lu_id=lu_id, color_id=color_id,
                   little_endian_flag=flag, width=width, height=height, pixel_depth=depth,
                   frame_count=count, observer=_decode_string(observer),
                   instrument=_decode_string(instrument), telescope=_decode_string(telescope),
                   date_time=dt, date_time_utc=dt_utc)

    def to_bytes(self):
        """Encode as the 178-byte header (strings NUL-padded, integers little-endian)."""
        file_id = str(self.file_id).encode("latin-1", errors="replace")[:14].ljust(14, b"\0")
        try:
            return HEADER_STRUCT.pack(
                file_id, self.lu_id, self.color_id, self.little_endian_flag, self.width,
                self.height, self.pixel_depth, self.frame_count,
                _encode_string(self.observer, 40, "Observer"),
                _encode_string(self.instrument, 40, "Instrument"),
                _encode_string(self.telescope, 40, "Telescope"),
                _wrap_int64(self.date_time), _wrap_int64(self.date_time_utc))
        except struct.error as exc:
            raise InputError(f"SER header value out of range: {exc}") from None

    # -- derived quantities --------------------------------------------------
    @property
    def planes(self):
        """Samples per pixel: 3 for RGB/BGR, 1 otherwise."""
        return 3 if self.color_id in _RGB_IDS else 1

    @property
    def bytes_per_sample(self):
        """1 for depths up to 8 bits, 2 above."""
        return 1 if self.pixel_depth <= 8 else 2

    @property
    def frame_bytes(self):
        """Bytes per frame (a Python int: no overflow whatever the size)."""
        return int(self.width) * int(self.height) * self.planes * self.bytes_per_sample

    @property
    def color_name(self):
        """Name of the ColorID (``'MONO'``, ``'RGGB'``, ``'RGB'`` ...)."""
        return COLOR_IDS.get(self.color_id, f"unknown ({self.color_id})")

    @property
    def bayer_pattern(self):
        """The CFA pattern (``'RGGB'``, ``'CYYM'`` ...) or `None`."""
        if 8 <= self.color_id <= 19 and self.color_id in COLOR_IDS:
            return COLOR_IDS[self.color_id]
        return None

    @property
    def start_time(self):
        """Stream start, local time (`numpy.datetime64`), or `None` if invalid."""
        return ticks_to_datetime64(self.date_time) if _valid_tick(self.date_time) else None

    @property
    def start_time_utc(self):
        """Stream start, UTC (`numpy.datetime64`), or `None` if invalid."""
        return ticks_to_datetime64(self.date_time_utc) if _valid_tick(self.date_time_utc) else None

    def validate(self):
        """Raise `SERFormatError` when the header cannot describe any SER file."""
        problems = []
        if not 1 <= self.pixel_depth <= 16:
            problems.append(f"PixelDepthPerPlane {self.pixel_depth} outside 1..16")
        if self.width <= 0 or self.height <= 0:
            problems.append(f"image size {self.width}x{self.height}")
        if problems:
            raise SERFormatError("invalid SER header: " + "; ".join(problems))


# ---------------------------------------------------------------------------
# Layout: frame count, truncation, trailer
# ---------------------------------------------------------------------------

@dataclasses.dataclass
class SERLayout:
    """Where frames and trailer lie in a file (all sizes are Python ints)."""

    n_frames: int
    frame_bytes: int
    data_end: int
    trailer_offset: int | None
    trailer_count: int
    extra_bytes: int
    notes: list


def ser_layout(file_size, frame_count, frame_bytes, *, trailer_ok=None):
    """Work out the usable frames and the trailer of a SER file from its size.

    Parameters
    ----------
    file_size : int
        Size of the file in bytes (may exceed 4 GiB).
    frame_count : int
        FrameCount from the header (may be 0, negative or too large).
    frame_bytes : int
        Bytes per frame.
    trailer_ok : callable, optional
        ``trailer_ok(offset, n)`` tells whether ``n`` int64 values at
        ``offset`` look like timestamps.  Used only when FrameCount is 0 (an
        interrupted capture): to tell a trailer from frames on files whose
        frames are smaller than the trailer, and a trailer from the start of an
        incomplete frame.

    Returns
    -------
    SERLayout
        ``n_frames`` usable frames; ``trailer_offset`` (or `None`) and
        ``trailer_count``; ``notes``, the deviations found (for warnings).

    Examples
    --------
    A 10 GiB file with a timestamp trailer whose FrameCount was never written:

    >>> lay = ser_layout(178 + 2047 * 5 * 2**20 + 8 * 2047, 0, 5 * 2**20)
    >>> lay.n_frames, lay.trailer_offset, lay.notes[0][:30]
    (2047, 10732175538, 'header FrameCount is 0 (captur')
    """
    file_size, frame_count, frame_bytes = int(file_size), int(frame_count), int(frame_bytes)
    notes = []
    payload = max(file_size - HEADER_SIZE, 0)
    avail = payload // frame_bytes
    if 0 < frame_count <= avail:
        n = frame_count
    elif frame_count <= 0:
        n = avail
        # With tiny frames the trailer (8 bytes a frame) can hold whole "frames":
        # prefer a split frames + trailer that fits exactly and looks like timestamps.
        if payload % (frame_bytes + 8) == 0 and trailer_ok is not None:
            n_t = payload // (frame_bytes + 8)
            if n_t > 0 and n_t != avail and trailer_ok(HEADER_SIZE + n_t * frame_bytes, n_t):
                n = n_t
        notes.append(f"header FrameCount is {frame_count} (capture interrupted?); "
                     f"using the {n} complete frames in the file")
    else:
        n = avail
        notes.append(f"file holds only {avail} complete frames but the header FrameCount is "
                     f"{frame_count} (truncated file?); using {avail}")
    data_end = HEADER_SIZE + n * frame_bytes
    rest = file_size - data_end
    trailer_offset, trailer_count, extra = None, 0, rest
    if frame_count > avail:  # truncated while writing frames: no trailer was written
        if rest:
            notes.append(f"incomplete last frame ({rest} bytes) ignored")
    elif n > 0 and rest >= 8 * n and (frame_count > 0 or trailer_ok is None
                                      or trailer_ok(data_end, n)):
        trailer_offset, trailer_count, extra = data_end, n, rest - 8 * n
        if extra:
            notes.append(f"{extra} unexpected bytes after the timestamp trailer ignored")
    elif rest > 0:
        notes.append(f"{rest} bytes after the last frame ignored (incomplete frame or short "
                     "timestamp trailer)")
    return SERLayout(n, frame_bytes, data_end, trailer_offset, trailer_count, extra, notes)


# ---------------------------------------------------------------------------
# Byte order
# ---------------------------------------------------------------------------

def _byte_tv(frame_bytes_2d, phase=(1, 1)):
    """Mean absolute difference of each byte of 16-bit samples between same-phase neighbours.

    ``frame_bytes_2d`` is a uint8 array of shape (H, W*planes, 2) holding the
    two bytes of each sample in file order.  ``phase = (sy, sx)`` is the
    period of the channel pattern: neighbours are ``sy`` rows and ``sx``
    samples apart, so that only samples of the same channel are compared
    ((1, 3) for RGB/BGR, (2, 2) for a Bayer or CMY mosaic, (1, 1) for mono):
    the level differences between colour channels would otherwise blur the
    evidence.  Returns (tv0, tv1).
    """
    sy, sx = phase
    tv = np.zeros(2)
    count = 0
    h, w = frame_bytes_2d.shape[:2]
    for k in (0, 1):  # each byte as a contiguous int16 plane: fast reductions
        b = frame_bytes_2d[..., k].astype(np.int16)
        if h > sy:
            tv[k] += np.abs(b[sy:] - b[:-sy]).sum(dtype=np.int64)
        if w > sx:
            tv[k] += np.abs(b[:, sx:] - b[:, :-sx]).sum(dtype=np.int64)
    if h > sy:
        count += (h - sy) * w
    if w > sx:
        count += h * (w - sx)
    return tv / max(count, 1)


def _depth_consistent(samples, order, depth):
    """Whether every sample, read in ``order``, fits a ``depth``-bit value (LSB- or MSB-aligned)."""
    if not 8 < depth < 16:
        return True
    low = (1 << (16 - depth)) - 1
    lsb = msb = True
    for s in samples:
        v = s.view(order + "u2")[..., 0] if s.shape[-1] == 2 else s
        lsb = lsb and int(v.max(initial=0)) < (1 << depth)
        msb = msb and not np.any(v & np.uint16(low))
    return lsb or msb


@dataclasses.dataclass
class _ByteOrderDecision:
    order: str
    reason: str
    disagree: bool = False
    #: the data could not tell and both orders give different values: the choice is a guess
    inconclusive: bool = False


def _flag_prior(little_endian_flag):
    """The byte order the header's LittleEndian flag means in practice, and why."""
    if little_endian_flag == 0:
        return "<", "LittleEndian flag 0 (de-facto convention: little-endian data)"
    if little_endian_flag == 1:
        return ">", "LittleEndian flag 1 (de-facto convention: big-endian data)"
    return "<", (f"LittleEndian flag {little_endian_flag} is neither 0 nor 1 "
                 "(assuming little-endian, the usual x86 order)")


def _order_from_smoothness(samples, phase):
    """``(order or None, evidence, why undecided)`` from how smooth each byte is across neighbours."""
    tv = np.zeros(2)
    for s in samples:
        tv += _byte_tv(s, phase)
    tv /= max(len(samples), 1)
    tv0, tv1 = float(tv[0]), float(tv[1])
    sy, sx = phase
    pairs = sum(max(s.shape[0] - sy, 0) * s.shape[1] + s.shape[0] * max(s.shape[1] - sx, 0)
                for s in samples)
    if pairs < BYTE_ORDER_MIN_PAIRS:
        return None, None, f"only {pairs} same-channel neighbour pairs: too few samples to tell"
    if max(tv0, tv1) < BYTE_ORDER_MIN_TV:
        return None, None, "nearly constant frames"
    if min(tv0, tv1) == 0:
        # One byte never changes.  A constant non-zero byte can only be the high
        # byte; a byte that is always 0 is either the high byte of small values
        # or the low byte of MSB-aligned data of 8 bits or less: undecidable.
        k = 0 if tv0 == 0 else 1
        values = {int(s[0, 0, k]) for s in samples if s.size}
        if values == {0}:
            return None, None, (f"byte {k} of every sample is 0: values below 256 or MSB-aligned data of at "
                                "most 8 bits")
        return ("<" if k == 1 else ">"), f"byte {k} constant and non-zero", None
    ratio = tv0 / tv1
    ratio_text = f"byte smoothness ratio {ratio:.3g}"
    if ratio > BYTE_ORDER_RATIO:
        return "<", ratio_text, None
    if ratio < 1 / BYTE_ORDER_RATIO:
        return ">", ratio_text, None
    return None, None, ratio_text


def _decide_byte_order(samples, little_endian_flag, *, byte_order="auto", phase=(1, 1), pixel_depth=16):
    if byte_order in ("<", ">"):
        name = "little" if byte_order == "<" else "big"
        return _ByteOrderDecision(byte_order, f"{name}-endian forced by byte_order={byte_order!r}")
    if byte_order != "auto":
        raise InputError(f"byte_order must be 'auto', '<' or '>', got {byte_order!r}")
    prior, prior_text = _flag_prior(little_endian_flag)
    data, ratio_text, why = _order_from_smoothness(samples, phase)
    if data is None:
        # second evidence: a header depth below 16 bits that only one order fits
        fits = [o for o in ("<", ">") if _depth_consistent(samples, o, pixel_depth)]
        if len(fits) == 1:
            data = fits[0]
            ratio_text = (f"{why}, but only {'little' if data == '<' else 'big'}-endian values fit "
                          f"the header depth of {pixel_depth} bits")
        else:
            same = all(np.array_equal(s[..., 0], s[..., 1]) for s in samples)
            return _ByteOrderDecision(prior, f"{prior_text}; data inconclusive ({why})",
                                      inconclusive=not same)
    data_name = "little" if data == "<" else "big"
    if data == prior:
        return _ByteOrderDecision(prior, f"{prior_text}; data agree ({ratio_text})")
    return _ByteOrderDecision(data, f"{prior_text}, but the data are clearly {data_name}-endian "
                                    f"({ratio_text}); using {data_name}-endian", disagree=True)


def decide_byte_order(samples, little_endian_flag, *, byte_order="auto", phase=(1, 1), pixel_depth=16):
    """Decide the byte order of 16-bit SER data from the header flag and the data.

    The flag is read in its de-facto meaning (0 = little-endian, 1 = big-endian:
    the inverse of the specification, as written by FireCapture, SharpCap,
    Siril, PIPP ...) and used as a prior.  The data decide when they clearly
    disagree: in natural images the high byte of a sample varies far more
    slowly between neighbouring samples of the same channel than the low
    byte, so the mean absolute neighbour difference (``tv``) of the byte
    stored second is smaller for little-endian data.  Neighbours are taken
    within one channel phase (``phase``: every third sample of RGB/BGR data,
    the same CFA position of a Bayer mosaic).  If ``tv_first / tv_second > 2``
    the data are little-endian, if it is below 1/2 big-endian.  A byte that
    never changes is the high byte when it is non-zero.  Otherwise (ratio
    between 1/2 and 2, nearly constant frames, a byte always 0), a header
    depth below 16 bits that the values fit in only one order decides; failing
    that the prior stands and the decision is *inconclusive* (the reader
    then warns, unless both orders give the same values).

    Parameters
    ----------
    samples : list of `numpy.ndarray`
        Raw bytes of sample blocks, each uint8 of shape ``(h, w*planes, 2)``
        (whole frames or bands of rows starting on an even row and column).
    little_endian_flag : int
        The header's LittleEndian field.
    byte_order : {'auto', '<', '>'}
        ``'<'`` or ``'>'`` force the order.
    phase : tuple of int, optional
        ``(rows, samples)`` period of the channel pattern: (1, 1) mono,
        (1, 3) RGB/BGR, (2, 2) Bayer/CMY mosaics.
    pixel_depth : int, optional
        The header's PixelDepthPerPlane (16: no depth evidence).

    Returns
    -------
    order : str
        ``'<'`` or ``'>'``.
    reason : str
        One line explaining the decision (contains ``inconclusive`` when the
        data could not tell).
    disagree : bool
        True when the data overruled the flag (the caller warns).

    Examples
    --------
    A smooth 12-bit ramp stored little-endian, flagged the spec-literal way
    (1, as INDI does):

    >>> import numpy as np
    >>> img = (np.add.outer(np.arange(64), np.arange(64)) * 30 + 200).astype('<u2')
    >>> raw = img.view(np.uint8).reshape(64, 64, 2)
    >>> order, reason, disagree = decide_byte_order([raw], 1)
    >>> order, disagree
    ('<', True)

    An RGGB mosaic whose green pixels are twice as bright as the red and blue
    ones: only the same-phase comparison sees the smooth high byte.

    >>> cfa = (np.add.outer(np.arange(48), np.arange(64)) * 3 + 3000).astype(float)
    >>> cfa[0::2, 1::2] *= 2; cfa[1::2, 0::2] *= 2
    >>> raw = cfa.astype('<u2').view(np.uint8).reshape(48, 64, 2)
    >>> decide_byte_order([raw], 1, phase=(2, 2))[0]
    '<'
    """
    d = _decide_byte_order(samples, little_endian_flag, byte_order=byte_order, phase=phase,
                           pixel_depth=pixel_depth)
    return d.order, d.reason, d.disagree


# ---------------------------------------------------------------------------
# Reader
# ---------------------------------------------------------------------------

def _mjd(t):
    """Modified Julian Date of a `numpy.datetime64` (UTC), to the microsecond."""
    us = (np.datetime64(t, "us") - np.datetime64("1858-11-17T00:00:00", "us")).astype(np.int64)
    return round(int(us) / 86_400e6, 11)


def _fits_text(text):
    """Make a header string safe for a FITS card (printable ASCII)."""
    return "".join(c if 32 <= ord(c) < 127 else "?" for c in text)


class SERReader(FrameSource):
    """Memory-mapped, lazy reader of a SER video.

    Opening reads the 178-byte header, the timestamp trailer and a bounded
    sample of up to three frames (first, middle, last: small frames whole,
    large ones in three bands of rows of at most 512 KB) used to decide the
    byte order and measure the bit depth; frames are read on demand with
    positional reads.
    Deviations from the specification are collected in `warnings_list` and
    emitted as `~aiflat_astro.utils.exceptions.SERFormatWarning`.

    Parameters
    ----------
    path : str or `os.PathLike`
        The SER file.  It is opened read-only and never modified.
    byte_order : {'auto', '<', '>'}, optional
        Byte order of 16-bit data.  ``'auto'`` (default) takes the
        LittleEndian flag in its de-facto meaning (0 = little-endian) and lets
        the data overrule it when they clearly disagree; see
        `decide_byte_order`.

    Attributes
    ----------
    header : `SERHeader`
        The decoded header.
    n_frames : int
        Usable (complete) frames; may differ from ``header.frame_count``.
    frame_shape : tuple
        ``(height, width)``, or ``(height, width, 3)`` for RGB/BGR files
        (returned in RGB order).
    dtype : `numpy.dtype`
        ``uint8`` or ``uint16``, native order, of the arrays returned.
    file_dtype : `numpy.dtype`
        The on-disk sample type (``'u1'``, ``'<u2'`` or ``'>u2'``).
    byte_order, byte_order_reason : str
        The decided order (``'<'`` or ``'>'``) and why.
    byte_order_inconclusive : bool
        True when the data could not tell the order and the flag decided
        (a warning is given unless the flag is 0).
    measured_depth : int
        Bits needed for the largest sample in the sampled rows.
    unused_low_bits : int
        Low bits that are zero in every sample (e.g. 4 for MSB-aligned 12-bit).
    timestamps : `numpy.ndarray` of ``datetime64[us]`` or None
        UTC time of each frame from the trailer, or `None`.
    timestamps_reference, timestamps_reason : str or None
        ``'UTC'`` or ``'local'`` (the trailer's original reference, converted
        to UTC) and why.
    bayer_pattern : str or None
        CFA pattern of Bayer/CMY files (the mosaic is returned raw).
    capture_metadata : dict
        FireCapture-style settings parsed from the Telescope field.
    warnings_list : list of str
        The deviations found.

    Examples
    --------
    >>> import os, tempfile, numpy as np
    >>> path = os.path.join(tempfile.mkdtemp(), "v.ser")
    >>> frames = np.arange(3 * 4 * 5, dtype=np.uint16).reshape(3, 4, 5) * 100
    >>> write_ser(path, frames, pixel_depth=12)
    >>> with SERReader(path) as ser:
    ...     print(ser.n_frames, ser.frame_shape, ser.dtype, ser.byte_order)
    ...     print(ser.read(1)[0, :3])
    3 (4, 5) uint16 <
    [2000 2100 2200]
    """

    def __init__(self, path, *, byte_order="auto"):
        self.path = Path(path)
        self.name = self.path.name
        self.paths = [self.path]
        if byte_order in ("little", "big"):
            byte_order = "<" if byte_order == "little" else ">"
        if byte_order not in ("auto", "<", ">"):
            raise InputError(f"byte_order must be 'auto', '<' or '>', got {byte_order!r}")
        self.warnings_list = []
        self._closed = True
        self._read_header()
        self._read_layout()
        # byte order and bit depth: from bounded bands of rows of three frames
        self.sample_frames = sorted({0, self.n_frames // 2, self.n_frames - 1})
        self.dtype = np.dtype(np.uint8 if self.header.bytes_per_sample == 1 else np.uint16)
        self._closed = False
        blocks = [b for i in self.sample_frames for b in self._sample_blocks(i)]
        self.sampled_fraction = min(1.0, sum(b.size for b in blocks) /
                                    max(len(self.sample_frames) * self.header.frame_bytes, 1))
        self._choose_byte_order(blocks, byte_order)
        # Frames are read with positional reads from a file opened for each call, not
        # through a memory map (the pages of a memory-mapped multi-GB video would stay
        # mapped and count in the resident memory) nor a file kept open (nothing to leak
        # or to reopen in a worker process).
        self._measure_depth(blocks)
        self._read_trailer()
        for message in self.warnings_list:
            warn_user(f"{self.name}: {message}", SERFormatWarning)
        log.debug("opened %s: %d frames %s %s, byte order %s (%s)", self.name, self.n_frames,
                  self.frame_shape, self.file_dtype, self.byte_order, self.byte_order_reason)

    # -- opening, step by step ---------------------------------------------------
    def _read_header(self):
        """Read and validate the 178-byte header; set the geometry and the capture metadata."""
        try:
            self.file_size = os.path.getsize(self.path)
            with open(self.path, "rb") as fh:
                raw = fh.read(HEADER_SIZE)
        except FileNotFoundError:
            raise InputError(f"no such file: {str(self.path)!r}") from None
        except IsADirectoryError:
            raise InputError(f"{str(self.path)!r} is a folder, not a SER file") from None
        if len(raw) < HEADER_SIZE:
            raise SERFormatError(f"{self.name!r} is not a SER video: only {len(raw)} bytes, "
                                 f"shorter than the {HEADER_SIZE}-byte header")
        self.header_bytes = raw
        header = SERHeader.from_bytes(raw)
        try:
            header.validate()
        except SERFormatError as exc:
            what = "is not a SER video" if header.file_id != LUCAM_ID else "has an invalid header"
            raise SERFormatError(f"{self.name!r} {what}: {str(exc).split(': ', 1)[-1]}") from None
        self.header = header
        if header.file_id != LUCAM_ID:
            self._note(f"FileID is {header.file_id!r}, not {LUCAM_ID!r}; reading it as SER anyway")
        if header.color_id not in COLOR_IDS:
            self._note(f"unknown ColorID {header.color_id}: read as mono (one sample per pixel)")
        self.width, self.height = header.width, header.height
        self.planes = header.planes
        self.frame_shape = (self.height, self.width) + ((3,) if self.planes == 3 else ())
        self.bayer_pattern = header.bayer_pattern
        self.capture_metadata = parse_capture_metadata(header.telescope)

    def _read_layout(self):
        """Frames, trailer and extra bytes from the file size (`ser_layout`)."""
        header = self.header
        layout = ser_layout(self.file_size, header.frame_count, header.frame_bytes,
                            trailer_ok=self._trailer_looks_valid)
        self.layout = layout
        for note in layout.notes:
            self._note(note)
        self.n_frames = layout.n_frames
        if self.n_frames == 0:
            raise SERFormatError(
                f"{self.name!r} contains no complete frame ({self.file_size} bytes; one "
                f"{self.width}x{self.height} frame needs {header.frame_bytes} bytes)")

    def _choose_byte_order(self, blocks, byte_order):
        """Set ``byte_order`` (and its reason) and ``file_dtype`` from the sampled rows and the flag."""
        header = self.header
        if header.bytes_per_sample == 1:
            self.byte_order = "<"
            self.byte_order_reason = "8-bit samples: byte order does not apply"
            self.byte_order_inconclusive = False
            self.file_dtype = np.dtype("u1")
            return
        phase = (1, 3) if self.planes == 3 else (2, 2) if 8 <= header.color_id <= 19 else (1, 1)
        decision = _decide_byte_order(blocks, header.little_endian_flag, byte_order=byte_order,
                                      phase=phase, pixel_depth=header.pixel_depth)
        order, reason = decision.order, decision.reason
        self.byte_order, self.byte_order_reason = order, reason
        self.byte_order_inconclusive = decision.inconclusive
        if decision.disagree:
            self._note(reason + " (file probably written by a spec-literal writer such as "
                       "INDI; pass byte_order (--byte-order) to override)")
        elif decision.inconclusive and header.little_endian_flag != 0:
            # flag 1 is ambiguous in practice (de-facto big-endian, or INDI/CSERIO's
            # spec-literal little-endian): a guess is said out loud.  Flag 0 means
            # little-endian for every known writer on x86 hosts: the reason says
            # "inconclusive", without a warning.
            other = ">" if order == "<" else "<"
            self._note(f"byte order inconclusive from the data; reading "
                       f"{'little' if order == '<' else 'big'}-endian as the LittleEndian flag "
                       f"{header.little_endian_flag} says (de-facto meaning). If the frames look "
                       f"like noise, pass --byte-order '{other}' (byte_order='{other}')")
        if header.little_endian_flag not in (0, 1) and byte_order == "auto":
            self._note(f"LittleEndian flag {header.little_endian_flag} is neither 0 nor 1")
        self.file_dtype = np.dtype(order + "u2")

    def _measure_depth(self, blocks):
        """Largest value, measured bit depth and unused low bits, on the sampled rows."""
        vmax, vor = 0, 0
        for b in blocks:
            v = np.ascontiguousarray(b).view(self.file_dtype)
            if v.size:
                vmax = max(vmax, int(v.max()))
                vor |= int(np.bitwise_or.reduce(v, axis=None))
        self.max_value = vmax
        self.measured_depth = max(vmax.bit_length(), 1)
        self.unused_low_bits = (vor & -vor).bit_length() - 1 if vor else 0

    def _read_trailer(self):
        """Read the timestamp trailer, when there is one."""
        self.timestamps = None
        self.timestamp_ticks = None
        self.timestamps_reference = None
        self.timestamps_reason = "no timestamp trailer"
        self.trailer_bytes = None
        if self.layout.trailer_offset is not None:
            with open(self.path, "rb") as fh:
                fh.seek(self.layout.trailer_offset)
                self.trailer_bytes = fh.read(8 * self.layout.trailer_count)
            self._read_timestamps()

    # -- helpers --------------------------------------------------------------
    def _sample_blocks(self, i):
        """Raw bytes of a bounded sample of frame ``i``: up to three bands of rows.

        Each band holds at most `SAMPLE_BAND_BYTES` (whole rows, or a central
        run of columns of very wide frames), starts on an even row and column
        (the CFA phase of Bayer files is kept) and is returned as uint8 of shape
        ``(rows, columns * planes, bytes_per_sample)``.  A small frame is read
        whole.  Whatever the frame size, the sample is at most ~1.5 MB a frame.
        """
        bps, planes = self.header.bytes_per_sample, self.planes
        px = planes * bps
        h, w = self.height, self.width
        ncols = w
        if 2 * w * px > SAMPLE_BAND_BYTES:  # very wide frames: a central run of columns
            ncols = max(2, (SAMPLE_BAND_BYTES // (2 * px)) & ~1)
        c0 = ((w - ncols) // 2) & ~1
        nrows = min(h, max(2, SAMPLE_BAND_BYTES // (ncols * px)))
        if nrows >= h or 3 * nrows >= h:
            starts = [0] if nrows >= h else [0, ((h - nrows) // 2) & ~1, (h - nrows) & ~1]
            nrows = min(nrows, h)
        else:
            starts = [(h // 4 - nrows // 2) & ~1, ((h - nrows) // 2) & ~1,
                      (3 * h // 4 - nrows // 2) & ~1]
        row_bytes = w * px
        base = HEADER_SIZE + i * self.header.frame_bytes
        out = []
        with open(self.path, "rb", buffering=0) as fh:
            for r0 in dict.fromkeys(max(0, r) for r in starts):
                r1 = min(h, r0 + nrows)
                buf = np.empty((r1 - r0, ncols * px), np.uint8)
                if ncols == w:
                    pread_frame_part(fh, memoryview(buf).cast("B"), base + r0 * row_bytes,
                                     name=self.name, frame=i)
                else:
                    for r in range(r0, r1):
                        pread_frame_part(fh, memoryview(buf[r - r0]), base + r * row_bytes + c0 * px,
                                         name=self.name, frame=i)
                out.append(buf.reshape(r1 - r0, ncols * planes, bps))
        return out

    def _note(self, message):
        self.warnings_list.append(message)

    def _trailer_looks_valid(self, offset, n):
        if n <= 0 or offset + 8 * n > self.file_size:
            return False
        with open(self.path, "rb") as fh:
            fh.seek(offset)
            ticks = np.frombuffer(fh.read(8 * n), dtype="<i8") & np.int64(TICKS_MASK)
        return bool(np.all((ticks >= TICKS_MIN) & (ticks <= TICKS_MAX)))

    def _read_timestamps(self):
        raw = np.frombuffer(self.trailer_bytes, dtype="<i8")
        ticks = raw & np.int64(TICKS_MASK)
        n = len(ticks)

        def drop(why):
            self.timestamps_reason = f"trailer dropped: {why}"
            self._note(f"timestamp trailer ignored: {why}")

        bad = (ticks < TICKS_MIN) | (ticks > TICKS_MAX)
        if bad.any():
            drop(f"{int(bad.sum())} of {n} timestamps are not dates between 1990 and 2100")
            return
        steps = np.diff(ticks)
        n_back = int((steps < 0).sum())
        if n > 1 and n_back > max(1, 0.1 * (n - 1)):
            drop(f"{n_back} of {n - 1} timestamps go backwards")
            return
        # UTC or local?  Compare the first time with the header's start times.
        t0 = int(ticks.min())
        h = self.header
        utc = int(h.date_time_utc) & TICKS_MASK if _valid_tick(h.date_time_utc) else None
        loc = int(h.date_time) & TICKS_MASK if _valid_tick(h.date_time) else None
        offset = 0
        if utc is not None:
            d_utc = abs(t0 - utc)
            d_loc = abs(t0 - loc) if loc is not None else None
            if d_loc is not None and loc != utc and d_loc < d_utc:
                if d_loc > TICKS_PER_DAY:
                    drop("first timestamp is more than a day away from the header start times")
                    return
                offset = loc - utc
                self.timestamps_reference = "local"
                hours = offset / (3600 * TICKS_PER_SECOND)
                self.timestamps_reason = (f"trailer in local time (matches header DateTime, not "
                                          f"DateTime_UTC); converted to UTC ({hours:+.2f} h)")
                self._note(f"timestamp trailer is in local time, not UTC as specified; "
                           f"converted with the header's offset of {hours:+.2f} h")
            else:
                if d_utc > TICKS_PER_DAY:
                    drop("first timestamp is more than a day away from the header start times")
                    return
                self.timestamps_reference = "UTC"
                self.timestamps_reason = "trailer in UTC (matches header DateTime_UTC)"
        else:
            self.timestamps_reference = "UTC"
            self.timestamps_reason = ("trailer taken as UTC (as specified; the header has no valid "
                                      "DateTime_UTC to compare with)")
        if n_back:
            self._note(f"{n_back} timestamps are not in increasing order")
        if n > 1 and not steps.any():
            self._note("all timestamps are identical")
        self.timestamp_ticks = ticks - np.int64(offset)
        self.timestamps = ticks_to_datetime64(self.timestamp_ticks)

    def _check_open(self):
        if self._closed:
            raise ValueError(f"SER file {self.name!r} is closed")

    def _open(self):
        try:
            return open(self.path, "rb", buffering=0)
        except FileNotFoundError:
            raise InputError(f"{self.name}: the file is gone (moved or deleted while in use?)") from None

    def _read_raw(self, fh, i, r0, r1):
        """Rows ``r0:r1`` of frame ``i`` as stored (file byte order and channel order)."""
        row_bytes = self.width * self.planes * self.file_dtype.itemsize
        buf = np.empty((r1 - r0) * row_bytes, np.uint8)
        pread_frame_part(fh, memoryview(buf), HEADER_SIZE + i * self.header.frame_bytes + r0 * row_bytes,
                         name=self.name, frame=i)
        return buf.view(self.file_dtype).reshape((r1 - r0, self.width) + ((3,) if self.planes == 3 else ()))

    # -- public API -----------------------------------------------------------
    @property
    def fps(self):
        """Mean frame rate from the timestamps (frames per second), or `None`."""
        if self.timestamp_ticks is None or self.n_frames < 2:
            return None
        span = int(self.timestamp_ticks.max() - self.timestamp_ticks.min())
        return (self.n_frames - 1) * TICKS_PER_SECOND / span if span > 0 else None

    @property
    def is_rgb(self):
        """True for RGB/BGR files (frames of shape (H, W, 3))."""
        return self.planes == 3

    def _to_native(self, block, out=None):
        if self.header.color_id == 101:  # BGR on disk → RGB
            block = block[..., ::-1]
        if out is None:
            if block.dtype == self.dtype and block.flags.c_contiguous and block.base is not None:
                return block  # a fresh read in native order: no second copy
            return np.array(block, dtype=self.dtype)
        out[...] = block
        return out

    def read(self, frame_index):
        """Return frame ``frame_index`` (negative counts from the end) as a new array.

        The array has shape `frame_shape`, native byte order, the file's
        values unscaled; RGB/BGR files give RGB order.
        """
        self._check_open()
        i = self._check_index(frame_index)
        with self._open() as fh:
            return self._to_native(self._read_raw(fh, i, 0, self.height))

    def read_rows(self, indices, r0, r1, *, out=None):
        """Return rows ``r0:r1`` of frames ``indices`` as one native-order array.

        One positional read per frame (no memory map: nothing stays resident
        after the call).  See `FrameSource.read_rows`.
        """
        self._check_open()
        idx = self._normalize_indices(indices)
        r0, r1 = self._check_rows(r0, r1)
        out = self._output_array(len(idx), r0, r1, out)
        if len(idx) == 0:
            return out
        with self._open() as fh:
            for j, i in enumerate(idx):
                self._to_native(self._read_raw(fh, i, r0, r1), out[j])
        return out

    def frame_header(self, frame_index):
        """FITS header describing frame ``frame_index`` (see `frame_ccd`)."""
        from astropy.io import fits  # imported here: ``aiflat apply`` reads SER files without it

        i = self._check_index(frame_index)
        h = self.header
        hdr = fits.Header()
        hdr["OBSERVER"] = (_fits_text(h.observer), "SER Observer")
        hdr["INSTRUME"] = (_fits_text(h.instrument), "SER Instrument (camera)")
        hdr["TELESCOP"] = (_fits_text(h.telescope), "SER Telescope")
        if self.timestamps is not None:
            hdr["DATE-OBS"] = (str(self.timestamps[i]), "frame time (UTC) from the SER trailer")
            hdr["TIMESYS"] = ("UTC", "time scale of DATE-OBS")
        if h.start_time_utc is not None:
            hdr["SERSTART"] = (str(h.start_time_utc), "SER stream start (UTC)")
        hdr["FRAMENUM"] = (i, "frame index in the SER file (0 = first)")
        hdr["ROWORDER"] = ("TOP-DOWN", "first row is the top of the image (SER order)")
        if self.bayer_pattern:
            hdr["BAYERPAT"] = (self.bayer_pattern, "CFA pattern of the raw mosaic")
        hdr["COLORTYP"] = (h.color_name, f"SER ColorID {h.color_id}")
        hdr["BITDEPTH"] = (h.pixel_depth, "SER PixelDepthPerPlane (header)")
        hdr["MEASBITS"] = (self.measured_depth, "bit depth measured on sample frames")
        hdr["BYTEORDR"] = ("LITTLE" if self.byte_order == "<" else "BIG",
                           "byte order of the SER data (decided)")
        hdr["SERFILE"] = (_fits_text(self.name)[:68], "source SER file")
        hdr["SERNFRM"] = (self.n_frames, "usable frames in the SER file")
        return hdr

    def frame_ccd(self, frame_index, *, unit="adu"):
        """Return frame ``frame_index`` as `~astropy.nddata.CCDData`.

        The header carries ``OBSERVER``, ``INSTRUME``, ``TELESCOP``,
        ``DATE-OBS`` (UTC, when the file has valid timestamps), ``FRAMENUM``,
        ``ROWORDER = 'TOP-DOWN'``, ``BAYERPAT`` (Bayer files), ``BITDEPTH``
        (header) and ``MEASBITS`` (measured).
        """
        self._check_open()
        i = self._check_index(frame_index)
        return ccddata_class()(self.read(i), unit=unit, meta=self.frame_header(i))

    @property
    def meta(self):
        """FITS header summarising the video (frame 0's cards without FRAMENUM/DATE-OBS)."""
        hdr = self.frame_header(0)
        for key in ("FRAMENUM", "DATE-OBS"):
            hdr.remove(key, ignore_missing=True)
        if self.timestamps is not None:
            hdr["DATE-BEG"] = (str(self.timestamps.min()), "first frame time (UTC)")
            hdr["DATE-END"] = (str(self.timestamps.max()), "last frame time (UTC)")
            # the MJD twins, so that astropy.wcs has nothing to fix (no FITSFixedWarning 'datfix'
            # each time CCDData.read opens a median)
            hdr["MJD-BEG"] = (_mjd(self.timestamps.min()), "[d] first frame time (UTC), MJD")
            hdr["MJD-END"] = (_mjd(self.timestamps.max()), "[d] last frame time (UTC), MJD")
        return hdr

    def info(self):
        """A JSON-serialisable summary of the file (used by ``aiflat info``)."""
        h = self.header
        ts = None
        if self.timestamps is not None:
            ts = {"first": str(self.timestamps[0]), "last": str(self.timestamps[-1]),
                  "fps": self.fps, "reference": self.timestamps_reference,
                  "reason": self.timestamps_reason}
        return {
            "path": str(self.path),
            "format": "SER",
            "file_size": self.file_size,
            "file_id": h.file_id,
            "color_id": h.color_id,
            "color": h.color_name,
            "bayer_pattern": self.bayer_pattern,
            "width": self.width,
            "height": self.height,
            "frame_shape": list(self.frame_shape),
            "n_frames": self.n_frames,
            "header_frame_count": h.frame_count,
            "dtype": self.dtype.name,
            "little_endian_flag": h.little_endian_flag,
            "byte_order": None if self.file_dtype.itemsize == 1 else
            ("little" if self.byte_order == "<" else "big"),
            "byte_order_reason": self.byte_order_reason,
            "byte_order_inconclusive": self.byte_order_inconclusive,
            "header_depth": h.pixel_depth,
            "measured_depth": self.measured_depth,
            "max_value": self.max_value,
            "unused_low_bits": self.unused_low_bits,
            "depth_sample_frames": list(self.sample_frames),
            "sampled_fraction": self.sampled_fraction,
            "observer": h.observer,
            "instrument": h.instrument,
            "telescope": h.telescope,
            "capture_metadata": self.capture_metadata,
            "start_time": _format_ticks(h.date_time),
            "start_time_utc": _format_ticks(h.date_time_utc),
            "trailer": self.trailer_bytes is not None,
            "timestamps": ts,
            "timestamps_reason": self.timestamps_reason,
            "warnings": list(self.warnings_list),
        }

    def close(self):
        """Close the reader (arrays already returned stay valid)."""
        self._closed = True


def read_ser(path, *, frame=0, byte_order="auto", unit="adu"):
    """Read one frame of a SER video as `~astropy.nddata.CCDData`.

    Also available as ``CCDData.read(path, format='ser', frame=i)`` (the
    format is recognised from the ``.ser`` extension).

    Parameters
    ----------
    path : str or `os.PathLike`
        The SER file.
    frame : int, optional
        Frame index (0 = first, negative from the end).
    byte_order : {'auto', '<', '>'}, optional
        See `SERReader`.
    unit : str or `astropy.units.Unit`, optional
        Unit of the data, ``adu`` by default.

    Returns
    -------
    `~astropy.nddata.CCDData`

    Examples
    --------
    >>> import os, tempfile, numpy as np
    >>> path = os.path.join(tempfile.mkdtemp(), "v.ser")
    >>> write_ser(path, np.full((2, 3, 4), 7, dtype=np.uint8), observer="Me")
    >>> ccd = read_ser(path, frame=1)
    >>> ccd.unit, ccd.header["OBSERVER"], ccd.header["ROWORDER"], ccd.data.shape
    (Unit("adu"), 'Me', 'TOP-DOWN', (3, 4))
    """
    with SERReader(path, byte_order=byte_order) as ser:
        return ser.frame_ccd(frame, unit=unit)


# ---------------------------------------------------------------------------
# Writer
# ---------------------------------------------------------------------------

class SERWriter:
    """Streaming SER writer: frames go to disk one by one, the trailer at close.

    The output appears atomically at ``path`` when the writer is closed
    without error (a temporary file is renamed); on an exception inside the
    ``with`` block nothing is left behind.  New files follow the de-facto
    convention: little-endian data, LittleEndian flag 0, the actual FrameCount,
    and a trailer of UTC timestamps when every frame was given one.  The odd
    variants found in the wild can be produced on purpose (``byte_order``,
    ``little_endian_flag``, ``frame_count``, raw integer timestamps ...).

    Parameters
    ----------
    path : str or `os.PathLike`
        Output file.
    width, height : int
        Frame size in pixels.
    dtype : dtype-like, optional
        ``uint8`` or ``uint16``; derived from ``pixel_depth`` when omitted.
    color_id : int, optional
        SER ColorID (0 mono, 8-11 and 16-19 mosaics, 100 RGB, 101 BGR).
        Frames of RGB/BGR files are given as ``(H, W, 3)`` in RGB order.
    pixel_depth : int, optional
        PixelDepthPerPlane, 1-16; 8 for uint8 and 16 for uint16 by default.
    observer, instrument, telescope : str, optional
        Header strings (at most 40 latin-1 characters).
    date_time, date_time_utc : time, optional
        Stream start, local and UTC (ticks, `datetime.datetime`,
        `numpy.datetime64`, `~astropy.time.Time` or ISO string).  When
        omitted and frames have timestamps, the first timestamp is used.
    little_endian_flag : int, optional
        Value of the LittleEndian field (default 0, the de-facto "little").
    byte_order : {'<', '>'}, optional
        Byte order of 16-bit data (default ``'<'``).
    file_id : str, optional
        FileID, ``'LUCAM-RECORDER'`` by default.
    frame_count : int, optional
        Write this FrameCount instead of the number of frames written (to
        produce broken files for tests).
    overwrite : bool, optional
        Replace an existing file.

    Examples
    --------
    >>> import os, tempfile, numpy as np
    >>> path = os.path.join(tempfile.mkdtemp(), "out.ser")
    >>> t0 = np.datetime64("2024-04-08T18:00:00")
    >>> with SERWriter(path, width=4, height=2, dtype="uint16", pixel_depth=12) as w:
    ...     for k in range(3):
    ...         w.write(np.full((2, 4), k, np.uint16), timestamp=t0 + k * np.timedelta64(40, "ms"))
    >>> ser = SERReader(path)
    >>> ser.n_frames, ser.fps, str(ser.timestamps[2])
    (3, 25.0, '2024-04-08T18:00:00.080000')
    """

    def __init__(self, path, *, width, height, dtype=None, color_id=0, pixel_depth=None,
                 observer="", instrument="", telescope="", date_time=None, date_time_utc=None,
                 little_endian_flag=0, byte_order="<", file_id=LUCAM_ID, lu_id=0,
                 frame_count=None, overwrite=False):
        if dtype is None:
            dtype = np.uint16 if (pixel_depth or 8) > 8 else np.uint8
        dtype = np.dtype(dtype)
        if dtype not in (np.dtype(np.uint8), np.dtype(np.uint16)):
            raise InputError(f"SER samples are uint8 or uint16, not {dtype}")
        if pixel_depth is None:
            pixel_depth = 8 * dtype.itemsize
        if not 1 <= int(pixel_depth) <= 16 or (int(pixel_depth) > 8) != (dtype.itemsize == 2):
            raise InputError(f"pixel_depth {pixel_depth} does not fit {dtype} samples "
                             "(1-8 bits: uint8, 9-16 bits: uint16)")
        if byte_order not in ("<", ">"):
            raise InputError(f"byte_order must be '<' or '>', got {byte_order!r}")
        if color_id not in COLOR_IDS:
            raise InputError(f"unknown SER ColorID {color_id}")
        if int(width) <= 0 or int(height) <= 0:
            raise InputError(f"invalid frame size {width}x{height}")
        self.header = SERHeader(
            file_id=file_id, lu_id=lu_id, color_id=color_id, little_endian_flag=little_endian_flag,
            width=int(width), height=int(height), pixel_depth=int(pixel_depth), frame_count=0,
            observer=observer, instrument=instrument, telescope=telescope,
            date_time=0 if date_time is None else datetime_to_ticks(date_time),
            date_time_utc=0 if date_time_utc is None else datetime_to_ticks(date_time_utc))
        self.header.to_bytes()  # validate strings and ranges now, not at close
        self._dates_given = (date_time is not None, date_time_utc is not None)
        self._header_raw = None
        self._trailer_raw = None
        self.frame_count = frame_count
        self.file_dtype = np.dtype(byte_order + "u2") if dtype.itemsize == 2 else np.dtype("u1")
        self.dtype = dtype
        self.frame_shape = (int(height), int(width)) + ((3,) if color_id in _RGB_IDS else ())
        self.path = Path(path)
        self.n_written = 0
        self._ticks = []
        # an anonymous temporary file where the OS allows (O_TMPFILE): a killed writer leaves nothing
        self._atomic = atomic_output(self.path, overwrite=overwrite, anonymous=True)
        self._tmp = self._atomic.__enter__()
        self._fh = open(self._tmp, "wb")
        self._fh.write(b"\0" * HEADER_SIZE)

    @classmethod
    def like(cls, reader, path, *, overwrite=False):
        """A writer producing a file that every tool reads as it reads ``reader``.

        The 178-byte header of the input is copied verbatim (junk after NULs,
        LittleEndian flag and all) except FrameCount, set to the number of
        frames written; frames are written in the input's sample type and
        decided byte order; at close, the input's trailer is copied verbatim
        for the frames written unless timestamps were given to `write`.
        Used by ``aiflat apply`` for SER → SER calibration.

        Parameters
        ----------
        reader : `SERReader`
            The input video.
        path : str or `os.PathLike`
            Output file.
        overwrite : bool, optional
            Replace an existing file.
        """
        h = reader.header
        self = cls(path, width=h.width, height=h.height, dtype=reader.dtype, color_id=h.color_id,
                   pixel_depth=h.pixel_depth, byte_order=reader.byte_order
                   if reader.file_dtype.itemsize == 2 else "<", overwrite=overwrite)
        self.header = dataclasses.replace(h)
        self._header_raw = bytes(reader.header_bytes)
        self._trailer_raw = reader.trailer_bytes
        return self

    def write(self, frame, timestamp=None):
        """Append one frame.

        Parameters
        ----------
        frame : array-like or `~astropy.nddata.CCDData`
            Shape ``(height, width)`` (or ``(height, width, 3)`` RGB).
            Integer values must fit the sample type; floating-point values are
            rounded and clipped to its range.
        timestamp : time, optional
            UTC time of the frame (see `datetime_to_ticks`; an int is
            written verbatim as raw ticks).  Give one for every frame or none.
        """
        if self._fh is None:
            raise ValueError("SERWriter is closed")
        data = np.asarray(getattr(frame, "data", frame))
        if data.shape != self.frame_shape:
            raise InputError(f"frame {self.n_written} has shape {data.shape}, "
                             f"expected {self.frame_shape}")
        if (timestamp is None) != (not self._ticks) and self.n_written:
            raise InputError("give a timestamp for every frame or for none")
        info = np.iinfo(self.dtype)
        if data.dtype.kind == "f":
            data = np.clip(np.rint(data), info.min, info.max)
        elif data.dtype.kind in "iub":
            if data.dtype != self.dtype and data.size and (data.min() < info.min
                                                           or data.max() > info.max):
                raise InputError(f"frame {self.n_written} has values outside the {self.dtype} "
                                 f"range {info.min}..{info.max}")
        else:
            raise InputError(f"cannot write {data.dtype} data to SER")
        if self.header.color_id == 101:
            data = data[..., ::-1]
        self._fh.write(np.ascontiguousarray(data, dtype=self.file_dtype).tobytes())
        if timestamp is not None:
            self._ticks.append(datetime_to_ticks(timestamp))
        self.n_written += 1

    def close(self):
        """Write header and trailer, then move the file into place."""
        if self._fh is None:
            return
        try:
            n = self.n_written
            if n == 0:
                raise InputError(f"no frames written to {str(self.path)!r}")
            header = dataclasses.replace(self.header)
            header.frame_count = n if self.frame_count is None else int(self.frame_count)
            if self._header_raw is not None:
                raw = bytearray(self._header_raw)
                raw[38:42] = struct.pack("<i", header.frame_count)
                raw = bytes(raw)
            else:
                if self._ticks:
                    first = self._ticks[0] & TICKS_MASK
                    if not self._dates_given[1]:
                        header.date_time_utc = first
                    if not self._dates_given[0]:
                        header.date_time = header.date_time_utc
                raw = header.to_bytes()
            self._fh.seek(0)
            self._fh.write(raw)
            self._fh.seek(0, os.SEEK_END)
            if self._ticks:
                raw_ticks = [int(t) & 0xFFFF_FFFF_FFFF_FFFF for t in self._ticks]
                self._fh.write(np.array(raw_ticks, dtype="<u8").tobytes())
            elif self._trailer_raw is not None:
                self._fh.write(self._trailer_raw[:8 * n])
            self._fh.close()
            self._fh = None
            self._atomic.__exit__(None, None, None)
        except BaseException as exc:
            self._abort(exc)
            raise

    def _abort(self, exc=None):
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        exc = exc or RuntimeError("SER writing aborted")
        try:
            self._atomic.__exit__(type(exc), exc, exc.__traceback__)
        except BaseException:  # the context manager re-raises exc; the caller already has it
            pass

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self._abort(exc)
        return False

    def __del__(self):  # an unclosed writer never leaves a half-written file behind
        if getattr(self, "_fh", None) is not None:
            self._abort()


def write_ser(path, frames, *, header=None, timestamps=None, overwrite=False, **kwargs):
    """Write frames to a SER video.

    Parameters
    ----------
    path : str or `os.PathLike`
        Output file, written atomically.
    frames : array-like or iterable
        A 3-D array ``(n, H, W)`` (4-D ``(n, H, W, 3)`` for RGB), or an
        iterable of 2-D/3-D arrays or `~astropy.nddata.CCDData` (streamed).
    header : `SERHeader`, `SERReader` or dict, optional
        Header fields to carry over (observer, instrument, telescope, dates,
        ColorID, depth, flag, FileID).  With a `SERReader`, its decided byte
        order and its timestamps (unless ``timestamps`` is given) are used too.
    timestamps : sequence, optional
        One UTC time per frame (see `datetime_to_ticks`); written as trailer.
    overwrite : bool, optional
        Replace an existing file.
    **kwargs
        Any `SERWriter` option (override ``header``).

    Examples
    --------
    >>> import os, tempfile, numpy as np
    >>> path = os.path.join(tempfile.mkdtemp(), "rgb.ser")
    >>> rgb = np.zeros((2, 3, 4, 3), dtype=np.uint8); rgb[..., 0] = 200
    >>> write_ser(path, rgb, color_id=101)            # stored as BGR
    >>> SERReader(path).read(0)[0, 0]                  # read back in RGB order
    array([200,   0,   0], dtype=uint8)
    """
    options = {}
    reader = None
    if isinstance(header, SERReader):
        reader, header = header, header.header
        if reader.file_dtype.itemsize == 2:
            options["byte_order"] = reader.byte_order
        if timestamps is None and reader.timestamp_ticks is not None:
            timestamps = [int(t) for t in reader.timestamp_ticks]
    if isinstance(header, SERHeader):
        header = dataclasses.asdict(header)
    if header:
        for key in ("file_id", "lu_id", "color_id", "little_endian_flag", "pixel_depth",
                    "observer", "instrument", "telescope", "date_time", "date_time_utc"):
            if key in header:
                options[key] = header[key]
        for key in ("date_time", "date_time_utc"):  # invalid dates (0, -1): filled in or left 0
            if isinstance(options.get(key), (int, np.integer)) and not _valid_tick(options[key]):
                del options[key]
        if "little_endian_flag" in header and "byte_order" not in options:
            options["byte_order"] = ">" if header["little_endian_flag"] == 1 else "<"
    options.update(kwargs)

    if is_ccddata(frames):
        frames = frames.data[np.newaxis]
    if isinstance(frames, np.ndarray) and frames.ndim not in (3, 4):
        raise InputError(f"frames must be an array (n_frames, height, width[, 3]), got shape "
                         f"{frames.shape}")
    iterator = iter(frames)
    try:
        first = next(iterator)
    except StopIteration:
        raise InputError("no frames to write") from None
    first_data = np.asarray(getattr(first, "data", first))
    if first_data.ndim not in (2, 3):
        raise InputError(f"frames must be 2-D (or 3-D RGB), got shape {first_data.shape}")
    options.setdefault("color_id", 100 if first_data.ndim == 3 else 0)
    if "dtype" not in options:
        depth = options.get("pixel_depth")
        if depth is not None:
            options["dtype"] = np.uint16 if depth > 8 else np.uint8
        else:
            options["dtype"] = np.uint8 if first_data.dtype == np.uint8 else np.uint16
    height, width = first_data.shape[:2]
    ts_iter = iter(timestamps) if timestamps is not None else None
    with SERWriter(path, width=width, height=height, overwrite=overwrite, **options) as writer:
        k = 0
        for frame in _chain(first, iterator):
            ts = None
            if ts_iter is not None:
                try:
                    ts = next(ts_iter)
                except StopIteration:
                    raise InputError(f"fewer timestamps than frames ({k})") from None
            writer.write(frame, timestamp=ts)
            k += 1
        if ts_iter is not None and next(ts_iter, None) is not None:
            raise InputError(f"more timestamps than frames ({k})")


def _chain(first, rest):
    yield first
    yield from rest


# ---------------------------------------------------------------------------
# astropy I/O registry
# ---------------------------------------------------------------------------

def _ccddata_ser_reader(filename, frame=0, byte_order="auto", unit="adu", **kwargs):
    if kwargs:
        raise TypeError(f"unexpected keyword arguments for format='ser': {sorted(kwargs)}")
    if hasattr(filename, "read"):  # astropy hands over the file object it opened to identify
        name = getattr(filename, "name", None)
        if not isinstance(name, (str, os.PathLike)) or not os.path.isfile(name):
            raise InputError("SER videos are read from a file path (memory-mapped), "
                             "not from a file object")
        filename = name
    return read_ser(filename, frame=frame, byte_order=byte_order, unit=unit or "adu")


def _identify_ser(origin, filepath, fileobj, *args, **kwargs):
    if fileobj is not None:
        pos = fileobj.tell()
        try:
            fileobj.seek(0)
            head = fileobj.read(14)
        finally:
            fileobj.seek(pos)
        return head == LUCAM_ID.encode() or (
            isinstance(filepath, str) and filepath.lower().endswith(".ser"))
    return isinstance(filepath, (str, os.PathLike)) and str(filepath).lower().endswith(".ser")


# registered with CCDData by aiflat_astro._registry_hook when astropy.nddata is imported
