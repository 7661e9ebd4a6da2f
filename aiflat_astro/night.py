"""A night of videos: one shared dust flat from several videos, a dust-change check, each video calibrated.

`run_night` is what ``aiflat run VIDEO VIDEO ... -o OUTDIR`` (and
`~aiflat_astro.pipeline.run_pipeline` with a list of videos) does.  The work
is cut into small tasks that read and write the shared output folder and
return small results (paths, checksums, counts; never frames), so that they
run in-process, one after another, or on a dask.distributed cluster
(``client=``):

1. **survey**, one task a video: frame count and shape, SHA-256 of the file,
   the video's *own median* and its *own detection* (its median, the motion
   test on its frames), saved under ``OUTDIR/.aiflat_parts/``;
2. **median bands**: the exact temporal median over *all* selected frames of
   *all* videos (the night's record, the background of the preview).  A
   median does not combine from per-video medians, so each task takes a band
   of rows ``r0:r1`` and reads those rows of every frame of every video
   (`~aiflat_astro.combine.median_combine` on a row window of the
   concatenated videos); the bands are assembled into ``median.fits``.
   In-process there is one band (median_combine bounds the memory itself);
3. **merge**, once: the shared mask, the union of the videos' own shadows
   that the other videos confirm (`merge_detections`),
   and its side products;
4. **video flat**, one task a video: its flat under the shared mask, from its
   own median and the clean estimate of its own frames (``flat_frames`` over
   the night, spread over the videos); then **combine**, once: per shadow,
   the videos' transmissions weighted by their measured noise and their
   agreement (`combine_flats`) into ``flat.fits``;
5. **check**, one task a video: the video's dust against the shared mask and
   flat, from its own median, detection and frames (`check_dust`: two
   statistical tests with the noise measured per shadow in the video, see
   `aiflat_astro._nightflat`); a video whose shadows are missing or that
   shows new ones is ``dust-mismatch``;
6. **calibrate**, one task a video that passed the check (or all with
   ``force``): `~aiflat_astro.apply.apply_to_file` with the shared flat,
   exactly as ``aiflat apply`` does.

Every step records a step key (``RUNSHA``) as `run_pipeline` does; a rerun
skips what is up to date.  Products are written atomically (temporary file
and rename), so a killed run leaves no partial file under a final name.
A video that fails (unreadable, other frame shape, an error while
calibrating) fails only its own entry of ``OUTDIR/manifest.json``.
"""

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._nightflat import CheckOptions, check_dust, check_message, combine_flats, merge_detections, new_shadows
from .io._base import FrameSource
from .io.frames import select_frames, spread_indices
from ._runstate import RunOptions, _file_identity, _region_files
from .provenance import params_hash, software_id
from .utils.exceptions import InputError, warn_user

__all__ = ["run_night", "NightOptions", "check_dust", "CheckOptions", "merge_detections", "combine_flats",
           "local_cluster",
           "ConcatFrames", "MANIFEST"]

log = logging.getLogger(__name__)

#: The night's manifest, in the output folder.
MANIFEST = "manifest.json"
#: Folder (inside the output folder) of the intermediate pieces: own medians and detections, median bands, flats.
PARTS = ".aiflat_parts"
#: Frames of each video for the motion test of the dust-change check.
CHECK_FRAMES = 25
#: Frames of all the clean estimates of a night together (what one video alone uses at most: 200).
FLAT_FRAMES = 200
#: Fewest frames of one video's clean estimate.
MIN_FLAT_FRAMES = 40


# --------------------------------------------------------------------------- frames of several videos

class ConcatFrames(FrameSource):
    """The selected frames of several videos of one frame shape, one after another, as one frame source.

    Parameters
    ----------
    videos : list of str or `~pathlib.Path`
        Videos (anything `~aiflat_astro.io.frames.open_frames` accepts as one file).
    selections : list of sequences of int, optional
        The frames of each video to expose (default: all of them).
    rows : tuple of int, optional
        ``(r0, r1)``: expose only these rows of each frame (a band for one
        median task).
    byte_order : {'auto', '<', '>'}, optional
        Byte order of 16-bit SER data.

    Notes
    -----
    Rows of many frames are read with the strip reader of
    `~aiflat_astro.combine.median_combine` for each video (one positional
    read per frame of a SER video or plain FITS cube).  ``paths`` is empty:
    the videos are hashed once each by the survey task, not by every median
    band.

    Examples
    --------
    >>> import os, tempfile, numpy as np
    >>> from aiflat_astro.io import write_ser
    >>> d = tempfile.mkdtemp()
    >>> for k in range(2):
    ...     write_ser(os.path.join(d, f"v{k}.ser"), np.full((3, 4, 5), k + 1, np.uint16))
    >>> with ConcatFrames([os.path.join(d, "v0.ser"), os.path.join(d, "v1.ser")], rows=(1, 3)) as src:
    ...     print(src.n_frames, src.frame_shape, src.read_rows(range(6), 0, 2)[:, 0, 0])
    6 (2, 5) [1 1 1 2 2 2]
    """

    def __init__(self, videos, *, selections=None, rows=None, byte_order="auto"):
        from .io.frames import open_frames

        self.paths = []
        self._sources = []
        try:
            for v in videos:
                self._sources.append(open_frames(v, byte_order=byte_order))
        except BaseException:
            self.close()
            raise
        first = self._sources[0]
        full_shape = tuple(int(s) for s in first.frame_shape)
        for src in self._sources[1:]:
            if tuple(src.frame_shape) != full_shape or np.dtype(src.dtype) != np.dtype(first.dtype):
                self.close()
                raise InputError(f"{src.name}: frames {src.frame_shape} {src.dtype} differ from "
                                 f"{first.name}: {full_shape} {first.dtype}")
        if selections is None:
            selections = [range(s.n_frames) for s in self._sources]
        self._sel = [np.asarray(list(sel), dtype=np.int64) for sel in selections]
        self._starts = np.cumsum([0] + [len(s) for s in self._sel])
        self.r0, self.r1 = (0, full_shape[0]) if rows is None else (int(rows[0]), int(rows[1]))
        self.frame_shape = (self.r1 - self.r0,) + full_shape[1:]
        self.dtype = np.dtype(first.dtype)
        self.n_frames = int(self._starts[-1])
        self.name = f"{len(self._sources)} videos ({first.name} ...)"
        self._meta = first.meta

    @property
    def meta(self):
        return self._meta

    def _locate(self, i):
        v = int(np.searchsorted(self._starts, i, side="right") - 1)
        return v, int(self._sel[v][i - self._starts[v]])

    def read(self, frame_index):
        v, j = self._locate(self._check_index(frame_index))
        return np.ascontiguousarray(self._sources[v].read(j)[self.r0:self.r1])

    def frame_ccd(self, frame_index):
        from .io._base import ccddata_class

        v, j = self._locate(self._check_index(frame_index))
        ccd = self._sources[v].frame_ccd(j)
        return ccddata_class()(ccd.data[self.r0:self.r1], unit=ccd.unit, meta=ccd.meta)

    def read_rows(self, indices, r0, r1, *, out=None):
        from .combine import _strip_reader

        idx = [int(i) for i in self._normalize_indices(indices)]
        r0, r1 = self._check_rows(r0, r1)
        out = self._output_array(len(idx), r0, r1, out)
        # runs of consecutive positions that fall in one video: one strip read each
        j = 0
        while j < len(idx):
            v, _ = self._locate(idx[j])
            k = j
            while k < len(idx) and self._starts[v] <= idx[k] < self._starts[v + 1]:
                k += 1
            local = [int(self._sel[v][i - self._starts[v]]) for i in idx[j:k]]
            read = _strip_reader(self._sources[v], local)
            block = read(self.r0 + r0, self.r0 + r1, out[j:k])
            if block is not out[j:k] and not np.shares_memory(block, out[j:k]):
                out[j:k] = block
            j = k
        return out

    def close(self):
        for src in getattr(self, "_sources", []):
            src.close()


def _selection(n_frames, *, max_frames, step):
    """The frames of a video the night uses: every ``step``-th, the first ``max_frames`` (as `aiflat median`)."""
    if int(n_frames) < 1:
        return []
    return select_frames(n_frames, step=step, max_frames=max_frames, spread=False).tolist()


def _spread(sel, n):
    """``n`` entries of ``sel`` spread evenly over it (all of them if fewer)."""
    return [sel[int(p)] for p in spread_indices(len(sel), n)]


def _save_npy(path, array):
    from .utils._atomic import atomic_output

    with atomic_output(path, overwrite=True) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, array)


# --------------------------------------------------------------------------- options

@dataclass(frozen=True)
class NightOptions(RunOptions):
    """The options of a night, one small picklable object that every task receives.

    The fields of `~aiflat_astro.pipeline.RunOptions` (the keyword options
    of `~aiflat_astro.pipeline.run_pipeline`) and ``force``,
    ``check_frames`` and ``check_options`` (see `run_night`).

    Examples
    --------
    >>> NightOptions(step=2).selection(9)
    [0, 2, 4, 6, 8]
    """

    force: bool = False
    check_frames: int = CHECK_FRAMES
    check_options: dict = None
    flat_frames: int = FLAT_FRAMES

    def flat_selection(self, selection, n_videos):
        """The frames of one video's clean estimate: ``flat_frames`` over the night, spread over the videos.

        At least `MIN_FLAT_FRAMES` a video (the jitter estimate needs a dozen
        frames and its noise falls as one over the square root of their
        number); the night's estimate combines all the videos, so each needs
        only its share of the frames one video alone would use.

        Examples
        --------
        >>> len(NightOptions().flat_selection(range(500), 8)), len(NightOptions().flat_selection(range(30), 8))
        (40, 30)
        """
        share = max(MIN_FLAT_FRAMES, -(-int(self.flat_frames) // max(1, int(n_videos))))
        return _spread(selection, share)

    def selection(self, n_frames):
        """The frames of a video of ``n_frames`` used for its median and flat."""
        return _selection(n_frames, max_frames=self.max_frames, step=self.step)

    def frames(self, videos, selections):
        """The selected frames of ``videos`` as one `ConcatFrames`."""
        return ConcatFrames(videos, selections=selections, byte_order=self.byte_order)


# --------------------------------------------------------------------------- tasks (run on workers)
# Each task takes paths and small parameters, writes into the shared folder and returns a small dict.

def survey_task(video, parts, key, opts):
    """Frame count, shape, SHA-256, the video's own median and its own dust detection (written to ``parts``).

    The detection is what ``aiflat run`` on this video alone finds: its
    median, the motion test on its frames.  Returns small values only.
    """
    from .io.frames import open_frames
    from .io.fits import write_mask
    from .provenance import sha256_file

    t0 = time.perf_counter()
    with open_frames(video, byte_order=opts.byte_order) as src:
        n_frames, dtype = int(src.n_frames), str(np.dtype(src.dtype))
        shape = [int(s) for s in src.frame_shape]
    sel = opts.selection(n_frames)
    if not len(sel):
        raise InputError(f"{video}: no frames")
    own = Path(parts) / f"own_{key[:16]}.npy"
    mask = Path(parts) / f"mask_{key[:16]}.fits"
    median = _own_median(video, sel, opts)
    _save_npy(own, median)
    write_mask(mask, _own_detection(video, median, sel, opts), overwrite=True)
    return {"n_frames": n_frames, "frame_shape": shape, "dtype": dtype, "n_selected": len(sel),
            "check_frames": _spread(sel, opts.check_frames), "input_sha256": sha256_file(video),
            "own_median": str(own), "own_mask": str(mask), "seconds": time.perf_counter() - t0}


def _own_median(video, sel, opts):
    from .combine import median_combine

    with opts.frames([video], [sel]) as src:
        return median_combine(src, mem_limit=opts.mem_limit).data.astype(np.float32)


def _own_detection(video, median, sel, opts):
    from .detection._high_level import detect_dust

    with opts.frames([video], [sel]) as frames:
        return detect_dust(median, detector=opts.detector, frames=frames, f_ratio=opts.f_ratio,
                           pixel_size=opts.pixel_size, **(opts.detector_options or {}))


def median_band_task(videos, selections, rows, part, opts):
    """Exact median of rows ``rows`` over the selected frames of every video, saved to ``part``."""
    from .combine import median_combine

    t0 = time.perf_counter()
    with ConcatFrames(videos, selections=selections, rows=rows, byte_order=opts.byte_order) as src:
        band = median_combine(src, mem_limit=opts.mem_limit)
    _save_npy(part, band.data.astype(np.float32))
    return {"part": str(part), "rows": list(rows), "seconds": time.perf_counter() - t0}


def merge_task(outdir, own_masks, own_medians, key_mask):
    """The shared mask (`merge_detections` of the videos' own).

    The own medians are opened memory-mapped (each shadow reads a window of
    each), so the task's memory does not grow with the number of videos.
    """
    from .io.fits import read_mask, read_median
    from ._runstate import PRODUCTS, _write_mask

    t0 = time.perf_counter()
    paths = {name: Path(outdir) / fname for name, fname in PRODUCTS.items()}
    median = read_median(paths["median"])
    merged, summary = merge_detections([read_mask(p) for p in own_masks],
                                       [np.load(p, mmap_mode="r") for p in own_medians])
    _write_mask(paths["mask"], merged, median, key_mask)
    return {"n_dust": merged.n_dust, "merge": summary, "seconds": time.perf_counter() - t0}


def side_task(outdir):
    """dust.ecsv, dust.reg and preview.png from the shared mask and median.

    Run in the driver, not on a worker: the preview's matplotlib (some 25 MB
    of imports) stays out of the workers' memory.
    """
    from .io.fits import read_mask, read_median
    from ._runstate import PRODUCTS, _side_products

    paths = {name: Path(outdir) / fname for name, fname in PRODUCTS.items()}
    _side_products(read_mask(paths["mask"]), read_median(paths["median"]), paths)
    return {}


def video_flat_task(outdir, video, own_median, selection, part, opts, *, drift_plot=None):
    """One video's flat under the shared mask: its own median, the clean estimate from its own frames."""
    from .flat import make_flat
    from .io.fits import read_mask, write_flat

    t0 = time.perf_counter()
    detection = read_mask(Path(outdir) / "mask.fits")
    options = dict(opts.inpaint_options or {})
    if opts.inpaint == "measured" and drift_plot:
        options.setdefault("drift_plot", drift_plot)
        options.setdefault("overwrite", True)
    with opts.frames([video], [selection]) as frames:
        flat = make_flat(np.load(own_median), detection, inpaint=opts.inpaint, frames=frames, floor=opts.floor,
                         inpaint_options=options or None, mem_limit=opts.mem_limit)
    write_flat(part, flat, overwrite=True)
    return {"part": str(part), "seconds": time.perf_counter() - t0}


def combine_task(outdir, parts, key_flat, opts):
    """flat.fits from the per-video flats (`combine_flats`)."""
    from .io.fits import read_flat, write_flat
    from ._runstate import _KEY, _KEY_COMMENT

    t0 = time.perf_counter()
    flat, weights = combine_flats([read_flat(p) for p in parts], floor=opts.floor)
    flat.meta[_KEY] = (key_flat, _KEY_COMMENT)
    write_flat(Path(outdir) / "flat.fits", flat, overwrite=True)
    return {"weights": weights, "seconds": time.perf_counter() - t0}


def check_task(outdir, video, own_median, own_mask, check_frames, opts, *, other_medians=()):
    """The dust-change check of one video (its own median and detection against the shared mask and flat).

    ``other_medians``: the other videos' own medians (``.npy`` paths), opened
    memory-mapped: the new-dust test reads a neighbourhood of each candidate.
    """
    from .io.fits import read_flat, read_mask, read_median

    outdir = Path(outdir)
    median = read_median(outdir / "median.fits")
    detection = read_mask(outdir / "mask.fits")
    flat = read_flat(outdir / "flat.fits")
    own = read_mask(own_mask)
    others = [np.load(p, mmap_mode="r") for p in other_medians]
    with opts.frames([video], [check_frames]) as frames:
        return check_dust(np.load(own_median), median.data, detection.dq, flat.data, frames=frames,
                          candidates=own.catalog, others=others, mem_limit=opts.mem_limit,
                          options=CheckOptions.from_dict(opts.check_options))


def calibrate_task(flat_path, video, output, opts):
    """Calibrate one video with the shared flat (as ``aiflat apply``); SHA-256 of the output."""
    from .apply import apply_to_file
    from .provenance import sha256_file

    t0 = time.perf_counter()
    stats = apply_to_file(flat_path, video, output, overwrite=True, mem_limit=opts.mem_limit,
                          byte_order=opts.byte_order)
    small = {k: v for k, v in (stats or {}).items() if isinstance(v, (int, float, str, bool, type(None)))}
    return {"output_sha256": sha256_file(output), "stats": small, "seconds": time.perf_counter() - t0}


# --------------------------------------------------------------------------- step keys

def mask_key(key_median, *, detector, detector_options, f_ratio, pixel_size):
    """Step key of the mask (the same chain as `~aiflat_astro.pipeline.run_pipeline`)."""
    return params_hash({"step": "mask", "median": key_median, "detector": detector, "merge": "own-confirmed-2",
                        "options": detector_options or {}, "f_ratio": f_ratio, "pixel_size": pixel_size,
                        "software": software_id(), **_region_files(detector_options)})


def flat_key(key_mask, *, inpaint, floor, inpaint_options, flat_frames=FLAT_FRAMES):
    """Step key of the flat."""
    return params_hash({"step": "flat", "mask": key_mask, "inpaint": inpaint, "floor": floor,
                        "combine": "per-video", "flat_frames": flat_frames, "options": inpaint_options or {}})


# --------------------------------------------------------------------------- running tasks

class _Runner:
    """Run tasks in-process or on a dask.distributed client; results in input order, errors per task."""

    def __init__(self, client, bar):
        self.client = client
        self.bar = bar

    def map(self, label, calls):
        """``calls``: list of ``(fn, args, kwargs)``; return a list of ``(result, exception)``."""
        out = [None] * len(calls)
        if not calls:
            return out
        self.bar.set_description(label)
        if self.client is None:
            for i, (fn, args, kwargs) in enumerate(calls):
                try:
                    out[i] = (fn(*args, **kwargs), None)
                except Exception as exc:  # one failed task fails its own entry
                    out[i] = (None, exc)
                self.bar.update(1)
            return out
        from distributed import as_completed

        futures = [self.client.submit(fn, *args, pure=False, **kwargs) for fn, args, kwargs in calls]
        where = {f.key: i for i, f in enumerate(futures)}
        try:
            for fut in as_completed(futures):
                i = where[fut.key]
                try:
                    out[i] = (fut.result(), None)
                except Exception as exc:
                    out[i] = (None, exc)
                self.bar.update(1)
        finally:
            for fut in futures:
                fut.release()
        return out


def _n_threads(client):
    if client is None:
        return 1
    return max(1, sum(client.nthreads().values()))


def _bands(height, n):
    edges = np.linspace(0, height, max(1, min(n, height)) + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:]) if b > a]


def _error_text(exc):
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


# --------------------------------------------------------------------------- the night

def run_night(videos, outdir, *, client=None, progress_bar=False, **options):
    """One shared dust flat from several videos, a dust-change check, and each video calibrated.

    Parameters
    ----------
    videos : list of str or `~pathlib.Path`
        SER videos or FITS cubes of one frame shape and data type (the same
        camera and binning).
    outdir : str or `~pathlib.Path`
        Output folder (created if needed), on storage that every worker sees
        at the same path when ``client`` is given.
    client : `distributed.Client`, optional
        Run the tasks on this dask.distributed cluster.  Default: in-process.
    progress_bar : bool, optional
        A progress bar over the tasks (videos and steps).
    **options
        The fields of `NightOptions`: ``detector``, ``inpaint``, ``apply``,
        ``f_ratio``, ``pixel_size``, ``floor``, ``detector_options``,
        ``inpaint_options``, ``byte_order``, ``overwrite`` as in
        `~aiflat_astro.pipeline.run_pipeline`; ``max_frames`` and ``step``
        (frames of *each* video); ``mem_limit`` (working-memory bound of each
        task); ``force`` (calibrate the videos whose dust does not match
        too); ``check_frames`` (frames of each video for the check's motion
        test, 25); ``check_options`` (a dict of the fields of `CheckOptions`);
        ``flat_frames`` (frames of all the clean estimates together, 200,
        at least 40 a video: `NightOptions.flat_selection`).

    Returns
    -------
    dict
        ``paths``, ``computed``, ``reused``, ``n_dust``, ``seconds``,
        ``manifest`` (the content of ``manifest.json``) and ``videos`` (its
        entries).

    Raises
    ------
    aiflat_astro.InputError
        No video, two videos with one output name, a video that is the
        output, or no video left to make the flat from.

    Examples
    --------
    >>> import tempfile, os
    >>> from aiflat_astro.datasets import make_dusty_video
    >>> d = tempfile.mkdtemp()
    >>> vids = [os.path.join(d, f"v{k}.ser") for k in range(2)]
    >>> for k, v in enumerate(vids):
    ...     _ = make_dusty_video(v, shape=(64, 80), n_frames=12, n_dust=3, seed=k)
    >>> result = run_night(vids, os.path.join(d, "out"))   # doctest: +SKIP
    >>> [v["status"] for v in result["videos"]]            # doctest: +SKIP
    ['calibrated', 'calibrated']
    """
    from tqdm import tqdm

    night = _Night(videos, outdir, NightOptions(**options))
    with tqdm(total=5 * len(night.videos) + 3, desc="night", unit="task", disable=not progress_bar) as bar:
        night.runner = _Runner(client, bar)
        night.survey()
        night.median(client)
        night.mask()
        night.flat()
        night.check()
        night.calibrate()
    return night.finish()


class _Night:
    """The state of one night while its steps run: entries of the manifest, step keys, timings."""

    def __init__(self, videos, outdir, opts):
        from ._runstate import PRODUCTS, _State

        self.t_start = time.perf_counter()
        self.videos, self.outdir, self.opts = _checked_inputs(videos, outdir)[0], Path(outdir), opts
        self.parts = self.outdir / PARTS
        self.parts.mkdir(exist_ok=True)
        self.paths = {name: self.outdir / fname for name, fname in PRODUCTS.items()}
        self.state = _State(self.outdir)
        self.memo = self.state.data.setdefault("night", {})
        self.computed, self.reused, self.seconds = [], [], {}
        self.entries = [{"input": str(v), "input_sha256": None, "n_frames": None, "output": None,
                         "output_sha256": None, "status": "failed", "message": None} for v in self.videos]
        self.alive = [True] * len(self.videos)
        self.surveys = [None] * len(self.videos)
        self.mismatched = []
        self.runner = None

    def fail(self, i, message):
        """Video ``i`` fails: its entry says why, the others go on."""
        self.alive[i] = False
        self.entries[i].update(status="failed", message=message)
        log.warning("%s: %s", self.videos[i], message)

    def timed(self, name, t0):
        self.seconds[name] = time.perf_counter() - t0

    @property
    def used(self):
        """Indices of the videos that take part (readable, of the night's frame shape)."""
        return [i for i in range(len(self.videos)) if self.alive[i] and self.surveys[i] is not None]

    # -- 1. survey: counts, checksums, each video's own median and detection ------------------
    def survey(self):
        t0 = time.perf_counter()
        calls, todo = [], []
        for i, v in enumerate(self.videos):
            if not v.is_file():
                self.fail(i, f"no such video: {str(v)!r}")
                continue
            ident = _file_identity(v)
            key = params_hash({"step": "survey", "version": 2, "video": ident, "opts": self._survey_opts()})
            rec = self.memo.get("survey", {}).get(str(ident["path"]))
            if rec and rec.get("key") == key and all(Path(rec["result"][k]).exists()
                                                     for k in ("own_median", "own_mask")):
                self.surveys[i] = dict(rec["result"], key=key, ident=ident)
                continue
            todo.append((i, key, ident))
            calls.append((survey_task, (str(v), str(self.parts), key, self.opts), {}))
        self.runner.bar.update(len(self.videos) - len(calls))
        for (i, key, ident), (res, exc) in zip(todo, self.runner.map("survey", calls)):
            if exc is not None:
                self.fail(i, f"cannot read the video: {_error_text(exc)}")
                continue
            self.surveys[i] = dict(res, key=key, ident=ident)
            self.memo.setdefault("survey", {})[str(ident["path"])] = {"key": key, "result": res}
        self.state.save()
        self._one_frame_kind()
        self.timed("survey", t0)

    def _survey_opts(self):
        o = self.opts
        return {"max_frames": o.max_frames, "step_": o.step, "byte_order": o.byte_order,
                "check_frames": o.check_frames, "detector": o.detector, "detector_options": o.detector_options,
                "f_ratio": o.f_ratio, "pixel_size": o.pixel_size, "software": software_id(),
                **_region_files(o.detector_options)}

    def _one_frame_kind(self):
        """Fail the videos whose frame shape or type is not the night's (the most common one)."""
        for i, s in enumerate(self.surveys):
            if s is not None:
                self.entries[i].update(input_sha256=s["input_sha256"], n_frames=s["n_frames"])
        kinds = [(tuple(s["frame_shape"]), s["dtype"]) for s in self.surveys if s is not None]
        if not kinds:
            _write_manifest(self.outdir, self.entries, None)
            raise InputError("no readable video to make the flat from: "
                             + "; ".join(e["message"] for e in self.entries if e["message"]))
        self.kind = max(set(kinds), key=kinds.count)
        for i, s in enumerate(self.surveys):
            if s is not None and (tuple(s["frame_shape"]), s["dtype"]) != self.kind:
                self.fail(i, f"frames {'x'.join(map(str, s['frame_shape']))} {s['dtype']} differ from the "
                             f"night's {'x'.join(map(str, self.kind[0]))} {self.kind[1]}")

    # -- 2. the exact median of all frames of all videos, in bands of rows -----------------
    def median(self, client):
        from ._runstate import _recorded_key

        t0 = time.perf_counter()
        used = self.used
        self.selections = [list(self.opts.selection(self.surveys[i]["n_frames"])) for i in used]
        self.key_median = params_hash({"step": "median", "night": [self.surveys[i]["ident"] for i in used],
                                       "max_frames": self.opts.max_frames, "step_": self.opts.step,
                                       "byte_order": self.opts.byte_order})
        if _recorded_key(self.paths["median"], self.opts.overwrite) == self.key_median \
                and _median_ok(self.paths["median"]):
            self.reused.append("median")
        else:
            self._compute_median(_bands(self.kind[0][0], 1 if client is None else 2 * _n_threads(client)))
            self.computed.append("median")
        self.runner.bar.update(1)
        self.timed("median", t0)

    def _compute_median(self, bands):
        used = self.used
        calls, band_parts = [], []
        for rows in bands:
            part = self.parts / f"median_{self.key_median[:16]}_{rows[0]}_{rows[1]}.npy"
            band_parts.append(part)
            if not part.exists():
                calls.append((median_band_task, ([str(self.videos[i]) for i in used], self.selections, rows,
                                                 str(part), self.opts), {}))
        for _res, exc in self.runner.map("median", calls):
            if exc is not None:
                raise exc
        data = np.concatenate([np.load(p) for p in band_parts], axis=0)
        _write_night_median(self.paths["median"], data, self.key_median, videos=[self.videos[i] for i in used],
                            surveys=[self.surveys[i] for i in used], selections=self.selections,
                            step=self.opts.step)
        for p in band_parts:
            p.unlink(missing_ok=True)

    # -- 3. the shared mask: the videos' own detections merged ------------------------------
    def mask(self):
        from ._runstate import _recorded_key

        t0 = time.perf_counter()
        self.key_mask = mask_key(self.key_median, detector=self.opts.detector,
                                 detector_options=self.opts.detector_options, f_ratio=self.opts.f_ratio,
                                 pixel_size=self.opts.pixel_size)
        side_key = params_hash({"step": "side", "mask": self.key_mask})
        side = ("catalog", "regions", "preview")
        need_side = not all(self.state.up_to_date(n, side_key, self.paths[n]) for n in side)
        if need_side:
            self._refuse_foreign(side)
        if _recorded_key(self.paths["mask"], self.opts.overwrite) == self.key_mask:
            self.reused.append("mask")
            calls = []
        else:
            self.computed.append("mask")
            calls = [(merge_task, (str(self.outdir), [self.surveys[i]["own_mask"] for i in self.used],
                                   [self.surveys[i]["own_median"] for i in self.used], self.key_mask), {})]
        for res, exc in self.runner.map("mask", calls):
            if exc is not None:
                raise exc
            self.merge = res.get("merge")
        if need_side:
            side_task(str(self.outdir))  # in the driver (matplotlib stays out of the workers)
            for n in side:
                self.state.record(n, side_key, self.paths[n])
        self.runner.bar.update(1 - len(calls))
        self.timed("mask", t0)

    def _refuse_foreign(self, names):
        for n in names:
            if self.paths[n].exists() and not self.state.known(n) and not self.opts.overwrite:
                raise InputError(f"{self.paths[n]} exists and was not made by aiflat run; use --overwrite "
                                 "or another output folder")

    # -- 4. the flat: one per video under the shared mask, combined ------------------------
    def flat(self):
        from .io.fits import read_flat
        from ._runstate import _reuse

        t0 = time.perf_counter()
        o = self.opts
        self.key_flat = flat_key(self.key_mask, inpaint=o.inpaint, floor=o.floor, inpaint_options=o.inpaint_options,
                                 flat_frames=o.flat_frames)
        if _reuse(self.paths["flat"], self.key_flat, read_flat, o.overwrite) is not None:
            self.reused.append("flat")
            self.runner.bar.update(len(self.used) + 1)
        else:
            self._compute_flat()
            self.computed.append("flat")
        self.timed("flat", t0)

    def _compute_flat(self):
        calls, parts = [], []
        for n, i in enumerate(self.used):
            part = self.parts / f"flat_{self.key_flat[:16]}_{n}.fits"
            parts.append(str(part))
            drift = str(self.outdir / "drift.png") if n == 0 else None
            frames = self.opts.flat_selection(self.selections[n], len(self.used))
            calls.append((video_flat_task, (str(self.outdir), str(self.videos[i]), self.surveys[i]["own_median"],
                                            frames, str(part), self.opts), {"drift_plot": drift}))
        for _res, exc in self.runner.map("flat", calls):
            if exc is not None:
                raise exc
        [(res, exc)] = self.runner.map("combine", [(combine_task, (str(self.outdir), parts, self.key_flat,
                                                                   self.opts), {})])
        if exc is not None:
            raise exc
        self.flat_weights = res["weights"]
        for p in parts:
            Path(p).unlink(missing_ok=True)

    # -- 5. the dust-change check ----------------------------------------------------------
    def check(self):
        t0 = time.perf_counter()
        checks = self.memo.setdefault("check", {})
        calls, todo = [], []
        for i in self.used:
            s = self.surveys[i]
            others = [j for j in self.used if j != i]
            ckey = params_hash({"step": "check", "version": 3, "survey": s["key"], "flat": self.key_flat,
                                "others": [self.surveys[j]["key"] for j in others],
                                "options": self.opts.check_options or {}})
            rec = checks.get(str(s["ident"]["path"]))
            if rec and rec.get("key") == ckey:
                self.entries[i]["dust_check"] = rec["result"]
                continue
            todo.append((i, ckey, others))
            calls.append((check_task, (str(self.outdir), str(self.videos[i]), s["own_median"], s["own_mask"],
                                       s["check_frames"], self.opts),
                          {"other_medians": [self.surveys[j]["own_median"] for j in others]}))
        self.runner.bar.update(len(self.videos) - len(calls))
        for (i, ckey, others), (res, exc) in zip(todo, self.runner.map("check", calls)):
            if exc is not None:
                self.fail(i, f"dust-change check failed: {_error_text(exc)}")
                continue
            res["other_videos"] = others
            self.entries[i]["dust_check"] = res
            checks[str(self.surveys[i]["ident"]["path"])] = {"key": ckey, "result": res}
        self.state.save()
        self._verdict()
        self.timed("check", t0)

    def _verdict(self):
        used = self.used
        _night_verdict(self.entries, used, self.opts.check_options)
        self.mismatched = [i for i in used if not self.entries[i]["dust_check"]["match"]]
        for i in self.mismatched:
            self.entries[i]["status"] = "dust-mismatch"
            self.entries[i]["message"] = ("dust does not match the shared flat: "
                                          + self.entries[i]["dust_check"]["message"])
        if self.mismatched:
            what = ("calibrated anyway (force)" if self.opts.force
                    else "not calibrated (use --force to calibrate them)")
            warn_user(f"dust does not match the shared flat in {len(self.mismatched)} of {len(self.videos)} "
                      f"videos, {what}: " + "; ".join(f"{self.videos[i].name} "
                                                      f"({self.entries[i]['dust_check']['message']})"
                                                      for i in self.mismatched), stacklevel=4)

    # -- 6. calibration -----------------------------------------------------------------
    def calibrate(self):
        t0 = time.perf_counter()
        calls, todo = [], []
        chosen = [i for i in self.used if self.opts.force or i not in self.mismatched] if self.opts.apply else []
        for i in chosen:
            job = self._calibration(i)
            if job is not None:
                todo.append(job)
                calls.append((calibrate_task, (str(self.paths["flat"]), str(self.videos[i]), str(job[3]),
                                               self.opts), {}))
        self.runner.bar.update(len(self.videos) - len(calls))
        for (i, name, akey, out), (res, exc) in zip(todo, self.runner.map("calibrate", calls)):
            if exc is not None:
                self.fail(i, f"calibration failed: {_error_text(exc)}")
                continue
            self.state.record(name, akey, out)
            self.state.data["products"][name]["sha256"] = res["output_sha256"]
            self.entries[i].update(output=str(out), output_sha256=res["output_sha256"])
            _mark_calibrated(self.entries[i], i in self.mismatched)
            self.computed.append(f"apply {self.videos[i].name}")
        if not self.opts.apply:
            for i in self.used:
                if i not in self.mismatched:
                    self.entries[i].update(status="checked", message="dust matches; not calibrated (apply=False)")
        self.timed("apply", t0)

    def _calibration(self, i):
        """``(i, name, key, output)`` of video ``i``'s calibration, or None when it is up to date (or refused)."""
        from .apply import output_name

        out = self.outdir / output_name(self.videos[i])
        name = f"calibrated:{out.name}"
        akey = params_hash({"step": "apply", "flat": self.key_flat, "video": self.surveys[i]["ident"]})
        rec = self.state.data["products"].get(name, {})
        if self.state.up_to_date(name, akey, out) and rec.get("sha256"):
            self.entries[i].update(output=str(out), output_sha256=rec["sha256"])
            _mark_calibrated(self.entries[i], i in self.mismatched)
            self.reused.append(f"apply {self.videos[i].name}")
            return None
        if out.exists() and not self.state.known(name) and not self.opts.overwrite:
            self.fail(i, f"{out} exists and was not made by aiflat run; use --overwrite or another output folder")
            return None
        return i, name, akey, out

    # -- the manifest ------------------------------------------------------------------------
    def finish(self):
        from .provenance import sha256_file

        o = self.opts
        n_dust = _n_dust(self.paths["mask"])
        flat_info = {"path": str(self.paths["flat"]), "sha256": sha256_file(self.paths["flat"]),
                     "runsha": self.key_flat, "n_dust": n_dust, "videos": [str(self.videos[i]) for i in self.used],
                     "detector": o.detector, "inpaint": o.inpaint}
        manifest = _write_manifest(self.outdir, self.entries, flat_info)
        self.seconds["total"] = time.perf_counter() - self.t_start
        self.state.save({"night": [str(v) for v in self.videos], "detector": o.detector, "inpaint": o.inpaint,
                         "computed": self.computed, "reused": self.reused, "n_dust": n_dust,
                         "seconds": self.seconds})
        log.info("aiflat run (night of %d videos): computed %s; reused %s", len(self.videos),
                 ", ".join(self.computed) or "nothing", ", ".join(self.reused) or "nothing")
        paths = dict(self.paths, manifest=self.outdir / MANIFEST)
        return {"paths": paths, "computed": self.computed, "reused": self.reused, "n_dust": n_dust,
                "seconds": self.seconds, "manifest": manifest, "videos": manifest["videos"]}


def _checked_inputs(videos, outdir):
    """The videos as paths, after the checks that need no reading; creates ``outdir``."""
    from .apply import output_name

    videos = [Path(v) for v in videos]
    if not videos:
        raise InputError("no video given")
    outdir = Path(outdir)
    if outdir.exists() and not outdir.is_dir():
        raise InputError(f"{str(outdir)!r} exists and is not a folder")
    names = {}
    for v in videos:
        out = output_name(v)
        if out in names:
            raise InputError(f"{v} and {names[out]} would both be calibrated to {outdir / out}; rename one of them")
        names[out] = v
    outdir.mkdir(parents=True, exist_ok=True)
    for v in videos:
        if v.exists() and (outdir / output_name(v)).resolve() == v.resolve():
            raise InputError(f"the calibrated output would replace the input video {v}; choose another output folder")
    return videos, outdir


def _n_dust(mask_path):
    from .io.fits import read_mask

    catalog = read_mask(mask_path).catalog
    return len(catalog) if catalog is not None else 0


def _night_verdict(entries, used, check_options):
    """The night's verdict on each video: the missing shadows most videos show, the new ones by the vote.

    Updates each entry's ``dust_check`` (``match``, ``n_missing``,
    ``missing``, ``unconfirmed``, ``n_new``, ``new``, ``n_unverified``,
    ``message``) of the videos ``used`` (indices into ``entries``).
    """
    checks = {i: entries[i]["dust_check"] for i in used
              if entries[i].get("dust_check") and "tested" in entries[i]["dust_check"]}
    opts = CheckOptions.from_dict(check_options)
    if len(checks) >= 3:  # a majority to speak of
        _confirmed_missing(list(checks.values()))
    same = {i for i, c in checks.items() if c["n_missing"] == 0}
    for c in checks.values():
        if "candidates" in c and "other_videos" in c:
            c["new"], c["n_unverified"] = new_shadows(c["candidates"], [j in same for j in c["other_videos"]], opts)
            c["n_new"] = len(c["new"])
        c["match"] = bool(c["n_missing"] <= opts.max_missing and c["n_new"] <= opts.max_new)
        c["message"] = check_message(c["n_tested"], c["missing"], c["new"], c.get("unconfirmed", 0))


def _confirmed_missing(checks):
    """Count as missing only the shared shadows that most of the other videos show (updates ``checks``).

    A shadow of the shared mask that most videos do not show is not the
    night's dust (a scene feature of one video taken for dust, or dust of a
    few videos only): that a video lacks it says nothing about its dust.
    """
    shown, tested = {}, {}
    for c in checks:
        for label, _x, _y, present in c["tested"]:
            shown[label] = shown.get(label, 0) + bool(present)
            tested[label] = tested.get(label, 0) + 1
    for c in checks:
        # a shadow is the night's dust when most of the *other* videos that could test it show it
        confirmed = {label for label, _x, _y, present in c["tested"]
                     if tested[label] > 1 and (shown[label] - present) * 2 > tested[label] - 1}
        missing = [[x, y] for label, x, y, present in c["tested"] if label in confirmed and not present]
        c["unconfirmed"] = sum(1 for t in c["tested"] if t[0] not in confirmed)
        c["missing"], c["n_missing"] = missing, len(missing)


def _mark_calibrated(entry, mismatched):
    entry["status"] = "calibrated"
    entry["message"] = ("dust does not match the shared flat, calibrated anyway (force): "
                        + entry["dust_check"]["message"]) if mismatched else None


def _median_ok(path):
    from .io.fits import read_median

    try:
        read_median(path)
    except Exception as exc:  # corrupted: recompute
        warn_user(f"cannot reuse {path} ({exc}); recomputing it")
        return False
    return True


def _write_night_median(path, data, key, *, videos, surveys, selections, step):
    from astropy.nddata import CCDData

    from .combine import _build_header
    from ._runstate import _write_median

    class _Named:
        meta = None

    indices = range(sum(len(s) for s in selections))
    header = _build_header(_Named(), name=f"{len(videos)} videos", paths=videos,
                           hashes=[s["input_sha256"] for s in surveys], indices=indices, step=step,
                           n_total=sum(s["n_frames"] for s in surveys), masters=[])
    header.add_history("The frames of every video, one after another: "
                       + ", ".join(f"{v.name} ({len(sel)})" for v, sel in zip(videos, selections)))
    _write_median(path, CCDData(data, unit="adu", meta=header), key)


def _write_manifest(outdir, entries, flat_info):
    from .utils._atomic import atomic_output

    manifest = {"videos": entries, "flat": flat_info, "software": software_id()}
    with atomic_output(Path(outdir) / MANIFEST, overwrite=True) as tmp:
        Path(tmp).write_text(json.dumps(manifest, indent=1, default=str) + "\n")
    return manifest


def local_cluster(n_workers, *, mem_limit="256MB", overhead="1GB"):
    """A `distributed.LocalCluster` of ``n_workers`` worker processes (one thread each) on 127.0.0.1.

    Each worker's dask memory limit is ``mem_limit`` (the bound of each task's
    working memory) plus ``overhead`` (the Python process, numpy, astropy and
    distributed themselves).  Close it (it is a context manager) when done.

    Examples
    --------
    >>> with local_cluster(1) as cluster:        # doctest: +SKIP
    ...     len(cluster.workers)
    1
    """
    from distributed import LocalCluster

    from .utils._atomic import parse_size

    if int(n_workers) < 1:
        raise InputError(f"--workers must be at least 1, got {n_workers}")
    return LocalCluster(n_workers=int(n_workers), processes=True, threads_per_worker=1,
                        memory_limit=parse_size(mem_limit) + parse_size(overhead), host="127.0.0.1",
                        dashboard_address="127.0.0.1:0")
