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

import logging
import time
from dataclasses import asdict
from pathlib import Path

from ._runstate import (_KEY, _KEY_COMMENT, PRODUCTS, RunOptions, _file_identity, _region_files, _reuse,
                        _side_products, _State, _write_mask, _write_median)
from .provenance import params_hash, software_id
from .utils._options import merged_options
from .utils.exceptions import InputError

__all__ = ["run_pipeline", "RunOptions"]

log = logging.getLogger(__name__)


def run_pipeline(video, outdir, *, options=None, progress_bar=False, client=None, force=False, check_options=None,
                 **keywords):
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
        A night only: the fields of `aiflat_astro.night.CheckOptions` (the
        dust-change check's false-alarm rate and thresholds).
    options : `RunOptions`, optional
        The run's options (``detector`` to ``overwrite`` above) as one
        object; a keyword given as well wins.

    Returns
    -------
    dict
        ``paths`` (product name → path), ``computed`` and ``reused`` (step
        names), ``n_dust``, ``seconds`` (per step) and ``apply`` (the
        statistics of `~aiflat_astro.apply.apply_to_file`, or None).  A night
        returns the dict of `~aiflat_astro.night.run_night` (with
        ``manifest`` and ``videos``).

    Raises
    ------
    InputError
        A missing video, an output folder that is a file, an unknown option.

    Examples
    --------
    >>> import os, tempfile
    >>> from aiflat_astro.datasets import make_dusty_video
    >>> d = tempfile.mkdtemp()
    >>> _ = make_dusty_video(os.path.join(d, "sun.ser"), shape=(64, 80), n_frames=10, n_dust=2)
    >>> result = run_pipeline(os.path.join(d, "sun.ser"), os.path.join(d, "out"))  # doctest: +SKIP
    >>> sorted(result["computed"])                                                  # doctest: +SKIP
    ['apply', 'flat', 'mask', 'median']
    >>> opts = RunOptions(inpaint="measured", apply=False)
    >>> result = run_pipeline(os.path.join(d, "sun.ser"), os.path.join(d, "out2"), options=opts)  # doctest: +SKIP
    """
    opts = merged_options(RunOptions, options, keywords, "run_pipeline")
    videos = list(video) if isinstance(video, (list, tuple)) else [video]
    if len(videos) > 1 or client is not None:
        from .night import run_night

        return run_night(videos, outdir, client=client, progress_bar=progress_bar, force=force,
                         check_options=check_options, **asdict(opts))
    if not videos:
        raise InputError("no video given")
    from .utils._threads import serial_blas

    run = _Run(videos[0], outdir, opts, progress_bar)
    # the run's matrix products are small (3 x 3 solves, 30-column DFTs): in the calling thread,
    # not a BLAS thread pool, whose threads wait for a core on a loaded machine (docs/performance.rst)
    with serial_blas():
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
