"""Read an aiflat ``flat.fits`` with NumPy alone, for ``aiflat apply``.

Importing `astropy.io.fits` takes about 0.25 s (it loads `astropy.units`):
as long as the kernel takes to copy a 1 GB video from the page cache.  The
``aiflat apply`` command therefore reads the flat with this module when the
file has exactly the simple layout that `~aiflat_astro.io.write_flat` writes
— a 2-D 32-bit float primary image without scaling, a ``DQ`` extension of
the same shape with 8-bit samples, no ``MASK`` extension, ``CHECKSUM`` and
``DATASUM`` on every HDU — and every checksum verifies.  It never decides
against a file: anything else (another layout, a checksum that does not
verify, a header it cannot parse) returns None and the caller reads the file
with astropy (`~aiflat_astro.io.fits.read_flat`), which gives the full checks
and their error messages.  ``tests/test_apply_startup.py`` compares the two
readers.

The FITS checksum (Seaman, Pence & Rots 2012; FITS standard 4.0, appendix J):
the 32-bit ones'-complement sum of the HDU's header and data, taken as
big-endian words, is −0 (all bits set) when ``CHECKSUM`` is right, and the
same sum over the data alone is the integer in ``DATASUM``.
"""

import numpy as np

__all__ = []

_BLOCK = 2880
_CARD = 80


def _ones_sum(buffer):
    """32-bit ones'-complement sum of a buffer whose length is a multiple of 4."""
    words = np.frombuffer(buffer, dtype=">u4")
    total = int(words.sum(dtype=np.uint64))  # < 2**53 for any file below 2**21 blocks of words
    while total >> 32:
        total = (total & 0xFFFFFFFF) + (total >> 32)
    return total


def _value(card):
    """The value of a header card as int, float, bool or str (None if it has none)."""
    if card[8:10] != b"= ":
        return None
    text = card[10:].decode("ascii")
    stripped = text.strip()
    if stripped.startswith("'"):
        out, i = [], stripped.index("'") + 1
        while i < len(stripped):
            if stripped[i] == "'":
                if stripped[i + 1:i + 2] == "'":
                    out.append("'")
                    i += 2
                    continue
                return "".join(out).rstrip()
            out.append(stripped[i])
            i += 1
        raise ValueError("unterminated string")
    stripped = stripped.split("/", 1)[0].strip()
    if stripped in ("T", "F"):
        return stripped == "T"
    try:
        return int(stripped)
    except ValueError:
        return float(stripped)


def _hdus(raw):
    """Yield ``(header dict, header bytes, data bytes)`` for each HDU of the file."""
    offset = 0
    while offset < len(raw):
        header, end = {}, None
        pos = offset
        while end is None:
            block = raw[pos:pos + _BLOCK]
            if len(block) < _BLOCK:
                raise ValueError("truncated header")
            for k in range(0, _BLOCK, _CARD):
                card = block[k:k + _CARD]
                key = card[:8].decode("ascii").rstrip()
                if key == "END":
                    end = pos + _BLOCK
                    break
                if key and key not in ("COMMENT", "HISTORY", "CONTINUE") and key not in header:
                    header[key] = _value(card)
            pos += _BLOCK
        naxis = header.get("NAXIS", 0)
        n = 0
        if naxis:
            n = 1
            for i in range(1, naxis + 1):
                n *= header[f"NAXIS{i}"]
        n = abs(header["BITPIX"]) // 8 * header.get("GCOUNT", 1) * (header.get("PCOUNT", 0) + n)
        size = -(-n // _BLOCK) * _BLOCK
        if end + size > len(raw):
            raise ValueError("truncated data")
        yield header, raw[offset:end], raw[end:end + size]
        offset = end + size


def read_flat_fast(path):
    """``(flat float32, dq uint8, header dict)``, or None to read the file with astropy instead.

    Examples
    --------
    >>> import os, tempfile, numpy as np
    >>> from astropy.nddata import CCDData
    >>> from aiflat_astro.io import write_flat
    >>> path = os.path.join(tempfile.mkdtemp(), "flat.fits")
    >>> f = np.ones((4, 5), np.float32); f[1, 2] = 0.5
    >>> write_flat(path, CCDData(f, unit=""))
    >>> flat, dq, header = read_flat_fast(path)
    >>> float(flat[1, 2]), flat.shape, header["BUNIT"]
    (0.5, (4, 5), '')
    >>> from pathlib import Path
    >>> raw = bytearray(Path(path).read_bytes()); raw[-1000] ^= 1          # one flipped bit
    >>> _ = Path(path).write_bytes(raw)
    >>> read_flat_fast(path) is None                                        # astropy will say why
    True
    """
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
        hdus = list(_hdus(raw))
    except (OSError, ValueError, KeyError, UnicodeDecodeError):
        return None
    if not hdus:
        return None
    for header, head, data in hdus:
        if "CHECKSUM" not in header or not isinstance(header.get("DATASUM"), str):
            return None
        if _ones_sum(head + data) != 0xFFFFFFFF or str(_ones_sum(data)) != header["DATASUM"].strip():
            return None
    primary = hdus[0][0]
    if primary.get("SIMPLE") is not True or primary.get("BITPIX") != -32 or primary.get("NAXIS") != 2:
        return None
    if primary.get("BSCALE", 1) != 1 or primary.get("BZERO", 0) != 0:
        return None
    shape = (primary["NAXIS2"], primary["NAXIS1"])
    names = [str(h.get("EXTNAME", "")).strip().upper() for h, _, _ in hdus[1:]]
    if "MASK" in names or names.count("DQ") != 1:
        return None
    dq_header, _, dq_data = hdus[1 + names.index("DQ")]
    if (dq_header.get("XTENSION") != "IMAGE" or dq_header.get("BITPIX") != 8 or dq_header.get("NAXIS") != 2
            or (dq_header["NAXIS2"], dq_header["NAXIS1"]) != shape
            or dq_header.get("BSCALE", 1) != 1 or dq_header.get("BZERO", 0) != 0):
        return None
    npix = shape[0] * shape[1]
    flat = np.frombuffer(hdus[0][2], dtype=">f4", count=npix).reshape(shape).astype(np.float32)
    dq = np.frombuffer(dq_data, dtype=np.uint8, count=npix).reshape(shape).copy()
    header = {k: v for k, v in primary.items() if k not in ("CHECKSUM", "DATASUM")}
    return flat, dq, header
