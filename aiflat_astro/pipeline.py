"""The whole job in one call: video → median → dust mask → flat → calibrated video.

`run_pipeline` is what ``aiflat run`` and ``aiflat demo`` do.  Every step
writes its product into one output folder and records a *step key*
(``RUNSHA``: a hash of the step's inputs and parameters, chained through the
steps, and from the mask on of the aiflat_astro version) in the product's header, or in ``aiflat_run.json`` for products
without a header.  On a rerun a product whose recorded key matches is reused
(checksums verified on reading), and recomputed otherwise: change the
detector and the mask, flat and calibrated video are redone, the median is
not.

Products (DESIGN.md contract)::

    OUTDIR/median.fits   temporal median (float32, adu)
    OUTDIR/mask.fits     dust mask (DQ, WEIGHT, catalog in PROVJSON)
    OUTDIR/dust.ecsv     one row a shadow
    OUTDIR/dust.reg      DS9 regions of the shadows
    OUTDIR/preview.png   the median with the shadows outlined
    OUTDIR/flat.fits     the synthetic flat
    OUTDIR/<stem>_aiflat.ser   (or .fits) the calibrated input
"""

import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from astropy.io import fits

from .provenance import params_hash, software_id
from .utils.exceptions import InputError, ProvenanceError, warn_user

__all__ = ["run_pipeline", "RunOptions"]

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


def run_pipeline(video, outdir, *, detector="local", inpaint="local", apply=True, f_ratio=None,
                 pixel_size=None, max_frames=None, step=1, mem_limit="256MB", floor=0.05,
                 detector_options=None, inpaint_options=None, byte_order="auto", overwrite=False,
                 progress_bar=False, client=None, force=False, check_options=None):
    """Run every step on a video (or a night of videos) and write the products into ``outdir``.

    Parameters
    ----------
    video : str, `pathlib.Path` or list of them
        A SER video or a FITS cube (anything `~aiflat_astro.io.open_frames`
        accepts as one file).  A list of several videos (or any list with
        ``client``) is a night: one shared flat from all of them, a
        dust-change check and each video calibrated, as
        `aiflat_astro.night.run_night` describes; a list of one video without
        ``client`` is the one-video run.
    outdir : str or `pathlib.Path`
        Output folder, created if needed.
    detector : str, optional
        ``'local'`` (default), ``'gemini'`` or ``'consensus'``.
    inpaint : str, optional
        ``'local'`` (default), ``'measured'`` or ``'gemini'``.
    apply : bool, optional
        Also write the calibrated video ``<stem>_aiflat<ext>`` (default).
    f_ratio, pixel_size : float, optional
        Optics (focal ratio, pixel size in µm): expected shadow sizes for the
        detector and the dust distance column of the catalog.
    max_frames, step, mem_limit : optional
        Frames used for the median and the working-memory bound
        (`~aiflat_astro.combine.median_combine`).
    floor : float, optional
        Lowest corrected transmission (`~aiflat_astro.flat.make_flat`).
    detector_options, inpaint_options : dict, optional
        Extra options of the detector and of the clean-estimate method.
    byte_order : {'auto', '<', '>'}, optional
        Byte order of 16-bit SER data.
    overwrite : bool, optional
        Replace files in ``outdir`` that aiflat run did not make.
    progress_bar : bool, optional
        Show progress bars.
    client : `distributed.Client`, optional
        A night only: run its tasks on this dask.distributed cluster.
    force : bool, optional
        A night only: calibrate the videos whose dust does not match too.
    check_options : dict, optional
        A night only: thresholds of `aiflat_astro.night.check_dust`.

    Returns
    -------
    dict
        ``paths`` (product name → path), ``computed`` and ``reused`` (step
        names), ``n_dust``, ``seconds`` (per step) and ``apply`` (the
        statistics of `~aiflat_astro.apply.apply_to_file`, or None).  A night
        returns the dict of `~aiflat_astro.night.run_night` (with
        ``manifest`` and ``videos``).

    Examples
    --------
    >>> import os, tempfile
    >>> from aiflat_astro.datasets import make_dusty_video
    >>> d = tempfile.mkdtemp()
    >>> _ = make_dusty_video(os.path.join(d, "sun.ser"), shape=(64, 80), n_frames=10, n_dust=2)
    >>> result = run_pipeline(os.path.join(d, "sun.ser"), os.path.join(d, "out"))  # doctest: +SKIP
    >>> sorted(result["computed"])                                                  # doctest: +SKIP
    ['apply', 'flat', 'mask', 'median']
    """
    opts = RunOptions(detector=detector, inpaint=inpaint, apply=apply, f_ratio=f_ratio, pixel_size=pixel_size,
                      max_frames=max_frames, step=step, mem_limit=mem_limit, floor=floor,
                      detector_options=detector_options, inpaint_options=inpaint_options,
                      byte_order=byte_order, overwrite=overwrite)
    videos = list(video) if isinstance(video, (list, tuple)) else [video]
    if len(videos) > 1 or client is not None:
        from .night import run_night

        return run_night(videos, outdir, client=client, progress_bar=progress_bar, force=force,
                         check_options=check_options, **asdict(opts))
    if not videos:
        raise InputError("no video given")
    run = _Run(videos[0], outdir, opts, progress_bar)
    run.median()
    run.mask()
    run.flat()
    if opts.apply:
        run.calibrate()
    return run.finish()


class _Run:
    """One video's run while its steps go: products, step keys, what was computed or reused."""

    def __init__(self, video, outdir, opts, progress_bar):
        from .apply import output_name

        self.video, self.outdir = Path(video), Path(outdir)
        if not self.video.is_file():
            raise InputError(f"no such video: {str(video)!r}")
        if self.outdir.exists() and not self.outdir.is_dir():
            raise InputError(f"{str(outdir)!r} exists and is not a folder")
        self.calibrated = self.outdir / output_name(self.video)
        if self.calibrated.resolve() == self.video.resolve():
            raise InputError("the calibrated output would replace the input video; choose another output folder")
        self.outdir.mkdir(parents=True, exist_ok=True)
        self.opts, self.progress_bar = opts, progress_bar
        self.paths = {name: self.outdir / fname for name, fname in PRODUCTS.items()}
        self.state = _State(self.outdir)
        self.computed, self.reused, self.seconds = [], [], {}
        self.ident = _file_identity(self.video)
        self.apply_stats = None

    def _done(self, name, reused, t0):
        (self.reused if reused else self.computed).append(name)
        self.seconds[name] = time.perf_counter() - t0

    # -- 1. median --------------------------------------------------------------------
    def median(self):
        from .combine import median_combine
        from .io.fits import read_median
        from .io.frames import open_frames

        t0, o = time.perf_counter(), self.opts
        self.key_median = params_hash({"step": "median", "video": self.ident, "max_frames": o.max_frames,
                                       "step_": o.step, "byte_order": o.byte_order})
        self.median_ = _reuse(self.paths["median"], self.key_median, read_median, o.overwrite)
        reused = self.median_ is not None
        if not reused:
            with open_frames(self.video, byte_order=o.byte_order) as source:
                self.median_ = median_combine(source, max_frames=o.max_frames, step=o.step,
                                              mem_limit=o.mem_limit, progress_bar=self.progress_bar)
            _write_median(self.paths["median"], self.median_, self.key_median)
        self._done("median", reused, t0)

    # -- 2. dust detection and its side products ------------------------------------------
    def mask(self):
        from .detection._high_level import detect_dust
        from .io.fits import read_mask

        t0, o = time.perf_counter(), self.opts
        # the software version enters here (and so every later step): the median is exact whatever the
        # version, the detector and the flat improve between versions
        self.key_mask = params_hash({"step": "mask", "median": self.key_median, "detector": o.detector,
                                     "options": o.detector_options or {}, "f_ratio": o.f_ratio,
                                     "pixel_size": o.pixel_size, "software": software_id(),
                                     **_region_files(o.detector_options)})
        self.detection = _reuse(self.paths["mask"], self.key_mask, read_mask, o.overwrite)
        reused = self.detection is not None
        if not reused:
            self.detection = detect_dust(self.median_, detector=o.detector, frames=self.video, f_ratio=o.f_ratio,
                                         pixel_size=o.pixel_size, **(o.detector_options or {}))
            _write_mask(self.paths["mask"], self.detection, self.median_, self.key_mask)
        self._side_products()
        self._done("mask", reused, t0)

    def _side_products(self):
        side_key = params_hash({"step": "side", "mask": self.key_mask})
        side = ("catalog", "regions", "preview")
        if all(self.state.up_to_date(n, side_key, self.paths[n]) for n in side):
            return
        for n in side:
            if self.paths[n].exists() and not self.state.known(n) and not self.opts.overwrite:
                raise InputError(f"{self.paths[n]} exists and was not made by aiflat run; use --overwrite "
                                 "or another output folder")
        _side_products(self.detection, self.median_, self.paths)
        for n in side:
            self.state.record(n, side_key, self.paths[n])

    # -- 3. flat ----------------------------------------------------------------------
    def flat(self):
        from .flat import make_flat
        from .io.fits import read_flat, write_flat

        t0, o = time.perf_counter(), self.opts
        self.key_flat = params_hash({"step": "flat", "mask": self.key_mask, "inpaint": o.inpaint,
                                     "floor": o.floor, "options": o.inpaint_options or {}})
        self.flat_ = _reuse(self.paths["flat"], self.key_flat, read_flat, o.overwrite)
        reused = self.flat_ is not None
        if not reused:
            options = dict(o.inpaint_options or {})
            if o.inpaint == "measured":  # the drift path as a side product: OUTDIR/drift.png
                options.setdefault("drift_plot", str(self.outdir / "drift.png"))
                options.setdefault("overwrite", True)
                options.setdefault("progress_bar", self.progress_bar)
            self.flat_ = make_flat(self.median_, self.detection, inpaint=o.inpaint, frames=self.video,
                                   floor=o.floor, inpaint_options=options or None, mem_limit=o.mem_limit,
                                   progress_bar=self.progress_bar)
            self.flat_.meta[_KEY] = (self.key_flat, _KEY_COMMENT)
            write_flat(self.paths["flat"], self.flat_, overwrite=True)
        self._done("flat", reused, t0)

    # -- 4. calibrated video ----------------------------------------------------------
    def calibrate(self):
        from .apply import apply_to_file

        t0, o = time.perf_counter(), self.opts
        key_apply = params_hash({"step": "apply", "flat": self.key_flat, "video": self.ident})
        reused = self.state.up_to_date("calibrated", key_apply, self.calibrated)
        if not reused:
            if self.calibrated.exists() and not self.state.known("calibrated") and not o.overwrite:
                raise InputError(f"{self.calibrated} exists and was not made by aiflat run; use --overwrite "
                                 "or another output folder")
            self.apply_stats = apply_to_file(self.flat_, self.video, self.calibrated, overwrite=True,
                                             progress_bar=self.progress_bar, mem_limit=o.mem_limit,
                                             byte_order=o.byte_order)
            self.state.record("calibrated", key_apply, self.calibrated)
        self.paths["calibrated"] = self.calibrated
        self._done("apply", reused, t0)

    def finish(self):
        """Save the run's summary; the result dict of `run_pipeline`."""
        o = self.opts
        n_dust = len(self.detection.catalog) if self.detection.catalog is not None else 0
        self.state.save({"video": self.ident, "detector": o.detector, "inpaint": o.inpaint,
                         "computed": self.computed, "reused": self.reused, "n_dust": n_dust,
                         "seconds": self.seconds})
        log.info("aiflat run: computed %s; reused %s", ", ".join(self.computed) or "nothing",
                 ", ".join(self.reused) or "nothing")
        return {"paths": self.paths, "computed": self.computed, "reused": self.reused, "n_dust": n_dust,
                "seconds": self.seconds, "apply": self.apply_stats, "flat": self.flat_,
                "detection": self.detection}
