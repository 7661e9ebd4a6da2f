"""The products of a run in its output folder and their step keys (shared by `run_pipeline` and the night).

Each product records a *step key* (``RUNSHA``) in its header, or in
``aiflat_run.json`` for products without a header; `_reuse` reads a product
back only when its recorded key matches.  `RunOptions` groups the options
of one run.
"""

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from astropy.io import fits

from .utils.exceptions import InputError, ProvenanceError, warn_user

__all__ = ["RunOptions", "PRODUCTS", "STATE_FILE"]

log = logging.getLogger(__name__)

#: File names of the products in the output folder.
PRODUCTS = {"median": "median.fits", "mask": "mask.fits", "catalog": "dust.ecsv", "regions": "dust.reg",
            "preview": "preview.png", "flat": "flat.fits"}

#: Step keys of products without a FITS header (and a summary of the last run).
STATE_FILE = "aiflat_run.json"

_KEY = "RUNSHA"
_KEY_COMMENT = "aiflat run step key (inputs + parameters)"


def _file_identity(path):
    st = os.stat(path)
    return {"path": str(Path(path).resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _recorded_key(path, overwrite):
    """The RUNSHA of an existing FITS product, or None to (re)compute it.

    A file that aiflat run did not make (no RUNSHA) is not replaced unless
    ``overwrite`` is set; an unreadable one is recomputed.
    """
    path = Path(path)
    if not path.exists():
        return None
    try:
        key = fits.getheader(path).get(_KEY)
    except (OSError, ValueError):
        key = None
        if not overwrite:
            raise InputError(f"{path} exists and is not a readable FITS product of aiflat run; "
                             "use --overwrite or another output folder") from None
    if key is None and not overwrite:
        raise InputError(f"{path} exists and was not made by aiflat run; use --overwrite or another output folder")
    return key


class _State:
    """``aiflat_run.json``: step keys of header-less products, with their file identity."""

    def __init__(self, outdir):
        self.path = Path(outdir) / STATE_FILE
        try:
            self.data = json.loads(self.path.read_text()) if self.path.exists() else {}
        except (OSError, ValueError):
            self.data = {}
        self.data.setdefault("products", {})

    def up_to_date(self, name, key, path):
        rec = self.data["products"].get(name)
        if not rec or rec.get("key") != key or not Path(path).exists():
            return False
        st = os.stat(path)
        return rec.get("size") == st.st_size and rec.get("mtime_ns") == st.st_mtime_ns

    def known(self, name):
        return name in self.data["products"]

    def record(self, name, key, path):
        """Note a product's key, saved at once (an interrupted run still knows its products)."""
        st = os.stat(path)
        self.data["products"][name] = {"key": key, "file": Path(path).name, "size": st.st_size,
                                       "mtime_ns": st.st_mtime_ns}
        self.save()

    def save(self, summary=None):
        from .utils._atomic import atomic_output

        if summary is not None:
            self.data["last_run"] = summary
        with atomic_output(self.path, overwrite=True) as tmp:
            Path(tmp).write_text(json.dumps(self.data, indent=1, sort_keys=True, default=str))


def _write_median(path, median, key):
    from .utils._atomic import atomic_output

    median = median.copy()
    median.meta[_KEY] = (key, _KEY_COMMENT)
    hdul = median.to_hdu(hdu_mask=None, hdu_uncertainty=None, hdu_flags=None)
    with atomic_output(path, overwrite=True) as tmp:
        hdul.writeto(tmp, checksum=True)


def _write_mask(path, detection, median, key):
    """mask.fits with the median's observation cards and the step key."""
    from astropy.io import fits

    from .io.fits import write_mask

    header = fits.Header()
    for card in ("OBSERVER", "INSTRUME", "TELESCOP", "DATE-OBS", "NCOMBINE"):
        if card in median.meta:
            header[card] = median.meta[card]
    header[_KEY] = (key, _KEY_COMMENT)
    write_mask(path, detection, overwrite=True, header=header)


def _reuse(path, key, reader, overwrite):
    """Read the product at ``path`` if its recorded step key is ``key``; else None.

    A product whose key matches but that cannot be read (corrupted, checksum
    mismatch) is recomputed, with a warning.
    """
    if _recorded_key(path, overwrite) != key:
        return None
    try:
        return reader(path)
    except (ProvenanceError, OSError, ValueError) as exc:
        warn_user(f"cannot reuse {path} ({exc}); recomputing it", stacklevel=2)
        return None


def _region_files(options):
    """SHA-256 of the review region files among the detector options (an edited file redoes the mask)."""
    from .provenance import sha256_file

    files = {k: sha256_file(v) for k, v in (options or {}).items()
             if k in ("exclude_regions", "include_regions") and isinstance(v, (str, os.PathLike))
             and Path(v).is_file()}
    return {"regions": files} if files else {}  # no region file: the key of earlier versions


def _side_products(detection, median, paths):
    """dust.ecsv, dust.reg (DS9) and preview.png from the detection."""
    from .detection.outputs import write_catalog, write_preview, write_regions

    write_catalog(paths["catalog"], detection, overwrite=True)
    write_regions(paths["regions"], detection, overwrite=True)
    write_preview(paths["preview"], median, detection, overwrite=True)


@dataclass(frozen=True)
class RunOptions:
    """The options of one run, grouped for the steps (the keyword options of `run_pipeline`).

    ``run_pipeline(video, outdir, options=RunOptions(...))`` and the same
    names as keywords are one run (a keyword wins over the object).

    Parameters
    ----------
    detector, inpaint, apply, f_ratio, pixel_size
        The detector, the clean-estimate method, whether to write the
        calibrated video, the optics (see `~aiflat_astro.pipeline.run_pipeline`).
    max_frames, step, mem_limit, floor
        The median's frames and memory, the flat's floor.
    detector_options, inpaint_options : dict
        Extra options of the detector and of the estimator.
    byte_order, overwrite
        SER byte order; replace files that ``aiflat run`` did not make.

    Examples
    --------
    >>> RunOptions(detector="local", step=2).step
    2
    """

    detector: str = "local"
    inpaint: str = "local"
    apply: bool = True
    f_ratio: float = None
    pixel_size: float = None
    max_frames: int = None
    step: int = 1
    mem_limit: object = "256MB"
    floor: float = 0.05
    detector_options: dict = None
    inpaint_options: dict = None
    byte_order: str = "auto"
    overwrite: bool = False
