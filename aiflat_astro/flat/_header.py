"""The flat's FITS header: the median's cards carried over and the provenance record."""


import json

import numpy as np
from astropy.io import fits

from ..provenance import add_provenance_cards

#: Header keyword under which the full provenance record (JSON, ASCII-escaped)
#: travels with an in-memory flat; `~aiflat_astro.io.fits.write_flat` moves it
#: into the ``PROVJSON`` extension.
PROV_KEY = "PROVJSON"


# --------------------------------------------------------------------------------------
# provenance
# --------------------------------------------------------------------------------------
_MEDIAN_CARDS = ("OBSERVER", "INSTRUME", "TELESCOP", "DATE-OBS", "NCOMBINE", "FRAME0", "FRAME1", "FRAMESTP",
                 "BAYERPAT")


_AI_KEYS = ("ai_model", "ai_prompt", "prompt_sha256", "response_sha256")


def _median_inputs(median_header):
    """The median's inputs (``PROVn``/``PROVSHAn`` cards) as provenance records."""
    inputs = []
    i = 1
    while f"PROV{i}" in median_header:
        inputs.append({"path": str(median_header[f"PROV{i}"]), "sha256": median_header.get(f"PROVSHA{i}")})
        i += 1
    return inputs


def _flat_header(median_header, prov):
    header = fits.Header()
    for key in _MEDIAN_CARDS:
        if key in median_header:
            header[key] = median_header[key]
    header["BUNIT"] = ("", "dimensionless: divide science frames by the flat")
    header["ROWORDER"] = ("TOP-DOWN", "row 0 = top row of the sensor (SER order)")
    add_provenance_cards(header, prov)
    header[PROV_KEY] = json.dumps(prov, sort_keys=True, default=str, ensure_ascii=True,
                                  separators=(",", ":"))
    return header


def _json_safe(value):
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return f"<array {value.shape} {value.dtype}>"
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value
