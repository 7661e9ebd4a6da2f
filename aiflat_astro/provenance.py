"""Provenance of aiflat_astro products: hashes, header cards and PROVJSON.

Every product records how it was made: software version, inputs and their
SHA-256, the detector and inpainting method, AI model and prompt when used,
and the key parameters.  The record is kept twice: as 8-character FITS
keywords (readable by any FITS tool) and losslessly as UTF-8 JSON in a
``PROVJSON`` extension.
"""

import datetime
import hashlib
import json
from pathlib import Path

import numpy as np
from astropy.io import fits

from .utils.exceptions import ProvenanceError

__all__ = [
    "sha256_file",
    "sha256_bytes",
    "sha256_array",
    "params_hash",
    "software_id",
    "utc_now",
    "add_provenance_cards",
    "provjson_hdu",
    "read_provjson",
    "verify_checksums",
]

_CHUNK = 1 << 22


def sha256_file(path):
    """Return the SHA-256 hex digest of a file's bytes, read in chunks.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> p = Path(tempfile.mkdtemp()) / "a.bin"
    >>> _ = p.write_bytes(b"abc")
    >>> sha256_file(p)[:16]
    'ba7816bf8f01cfea'
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def sha256_bytes(data):
    """Return the SHA-256 hex digest of ``data`` (bytes or str, UTF-8)."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    return hashlib.sha256(data).hexdigest()


def sha256_array(array):
    """Return the SHA-256 of an array's C-ordered bytes, dtype and shape included.

    Two arrays hash equal only if they have the same dtype, shape and values.

    Examples
    --------
    >>> import numpy as np
    >>> sha256_array(np.zeros(3)) == sha256_array(np.zeros(3))
    True
    >>> sha256_array(np.zeros(3)) == sha256_array(np.zeros(3, dtype=np.float32))
    False
    """
    array = np.ascontiguousarray(array)
    h = hashlib.sha256()
    h.update(f"{array.dtype.str}{array.shape}".encode())
    h.update(array.view(np.uint8).reshape(-1) if array.size else b"")
    return h.hexdigest()


def params_hash(params):
    """Return a short stable hash (16 hex digits) of a JSON-serialisable dict."""
    text = json.dumps(params, sort_keys=True, default=str, separators=(",", ":"))
    return sha256_bytes(text)[:16]


def software_id():
    """Return ``'aiflat_astro <version>'`` for the ``PROCSOFT`` keyword."""
    from . import __version__

    return f"aiflat_astro {__version__}"


def utc_now():
    """Return the current UTC time as ``YYYY-MM-DDThh:mm:ss`` (FITS ``DATE``)."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S")


def _ascii(value):
    text = str(value)
    return text.encode("ascii", "replace").decode("ascii").replace("\n", " ").rstrip()


def add_provenance_cards(header, prov):
    """Write a provenance dict into a FITS header as 8-character keywords.

    Known keys of ``prov`` (all optional): ``detector``, ``inpaint``,
    ``ai_model``, ``ai_prompt``, ``prompt_sha256``, ``input_sha256``,
    ``mask_sha256``, ``response_sha256``, ``inputs`` (list of
    ``{"path":..., "sha256":...}``), ``ncombine``, ``params`` (dict of short
    keyword → value, keywords of at most 8 characters), ``history`` (list of
    str).  ``PROCSOFT`` and ``DATE`` are always set.

    Parameters
    ----------
    header : `~astropy.io.fits.Header`
        Modified in place.
    prov : dict
        The provenance record.

    Examples
    --------
    >>> from astropy.io import fits
    >>> h = fits.Header()
    >>> add_provenance_cards(h, {"detector": "local", "inputs": [{"path": "a.ser", "sha256": "0" * 64}]})
    >>> h["DETECTOR"], h["PROV1"]
    ('local', 'a.ser')
    """
    header["PROCSOFT"] = (software_id(), "reduction software and version")
    header["DATE"] = (prov.get("date") or utc_now(), "UTC date of file creation")
    simple = [
        ("detector", "DETECTOR", "dust detector (eye)"),
        ("inpaint", "INPAINT", "clean-estimate method (hand)"),
        ("ai_model", "AIMODEL", "AI model id"),
        ("prompt_sha256", "PRMTSHA", None),
        ("input_sha256", "INPSHA", None),
        ("mask_sha256", "MASKSHA", None),
        ("response_sha256", "RESPSHA", None),
        ("ncombine", "NCOMBINE", "number of frames combined"),
    ]
    for key, card, comment in simple:
        if prov.get(key) is not None:
            value = prov[key] if isinstance(prov[key], (int, float, bool)) else _ascii(prov[key])
            header[card] = (value, comment) if comment else value
    if prov.get("ai_prompt"):
        header["AIPROMPT"] = _ascii(prov["ai_prompt"])
    for i, item in enumerate(prov.get("inputs", []), start=1):
        header[f"PROV{i}"] = _ascii(Path(item["path"]).name)
        if item.get("sha256"):
            header[f"PROVSHA{i}"] = item["sha256"]
    for card, value in (prov.get("params") or {}).items():
        if len(card) > 8:
            raise ValueError(f"provenance parameter keyword {card!r} is longer than 8 characters")
        header[card.upper()] = value if isinstance(value, (int, float, bool)) else _ascii(value)
    for line in prov.get("history", []):
        header.add_history(_ascii(line))


def provjson_hdu(prov, *, name="PROVJSON"):
    """Return a ``PROVJSON`` ImageHDU holding ``prov`` as UTF-8 JSON bytes.

    The bytes round-trip losslessly (unlike FITS header strings, which lose
    non-ASCII characters and trailing spaces); the header carries ``CONTENT``
    and the ``SHA256`` of the bytes.
    """
    data = json.dumps(prov, indent=1, sort_keys=True, default=str, ensure_ascii=False).encode("utf-8")
    hdu = fits.ImageHDU(np.frombuffer(data, dtype=np.uint8).copy(), name=name)
    hdu.header["CONTENT"] = "application/json; charset=utf-8"
    hdu.header["SHA256"] = sha256_bytes(data)
    return hdu


def read_provjson(hdul, *, name="PROVJSON"):
    """Decode the ``PROVJSON`` extension of an open HDUList into a dict.

    Raises `ProvenanceError` if the bytes do not match their recorded SHA256.
    """
    hdu = hdul[name]
    data = np.asarray(hdu.data, dtype=np.uint8).tobytes()
    recorded = hdu.header.get("SHA256")
    if recorded and recorded != sha256_bytes(data):
        raise ProvenanceError(f"{name} extension is corrupted (SHA-256 mismatch)")
    return json.loads(data.decode("utf-8"))


def verify_checksums(hdul, *, filename="file"):
    """Raise `ProvenanceError` unless every HDU's CHECKSUM and DATASUM verify.

    HDUs without checksum cards are refused too: aiflat products always carry them.
    """
    for i, hdu in enumerate(hdul):
        name = hdu.name or str(i)
        if "CHECKSUM" not in hdu.header or "DATASUM" not in hdu.header:
            raise ProvenanceError(f"{filename}: HDU {name} has no CHECKSUM/DATASUM; refusing an unverifiable product")
        if hdu.verify_datasum() != 1 or hdu.verify_checksum() != 1:
            raise ProvenanceError(f"{filename}: checksum of HDU {name} does not verify: "
                                  "the file is corrupted or was edited")
