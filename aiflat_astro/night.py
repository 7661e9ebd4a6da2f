"""A night of videos: one shared dust flat from several videos, a dust-change check, each video calibrated.

`run_night` is what ``aiflat run VIDEO VIDEO ... -o OUTDIR`` (and
`~aiflat_astro.pipeline.run_pipeline` with a list of videos) does.  The work
is cut into small tasks that read and write the shared output folder and
return small results (paths, checksums, counts; never frames), so that they
run in-process, one after another, or on a dask.distributed cluster
(``client=``):

1. **survey**, one task a video: frame count and shape, SHA-256 of the file,
   and a *cheap median* of a frame subset (``check_frames`` frames spread
   over the video) saved under ``OUTDIR/.aiflat_parts/``;
2. **median strips**: the exact temporal median over *all* selected frames of
   *all* videos.  A median does not combine from per-video medians, so each
   task takes a band of rows ``r0:r1`` and reads those rows of every frame of
   every video (`~aiflat_astro.combine.median_combine` on a row window of the
   concatenated videos); the bands are assembled into ``median.fits``.
   In-process there is one band (the whole frame: median_combine bounds the
   memory itself);
3. **flat**, once: dust detection on the shared median with the frames of
   every video for the motion test, the side products, and the flat (the
   measured and local clean estimates read the frames of every video);
4. **check**, one task a video: the video's dust against the shared flat's,
   from its cheap median (`check_dust`); a video whose shadows are missing or
   that shows new ones is ``dust-mismatch``;
5. **calibrate**, one task a video that passed the check (or all with
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
from pathlib import Path

import numpy as np

from .io._base import FrameSource
from .provenance import params_hash, software_id
from .utils.exceptions import InputError, warn_user

__all__ = ["run_night", "check_dust", "local_cluster", "ConcatFrames", "MANIFEST"]

log = logging.getLogger(__name__)

#: The night's manifest, in the output folder.
MANIFEST = "manifest.json"
#: Folder (inside the output folder) of the intermediate pieces: cheap medians, median bands.
PARTS = ".aiflat_parts"
#: Frames of each video in its cheap median (the dust-change check).
CHECK_FRAMES = 25


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
    sel = range(0, n_frames, max(1, int(step)))
    return sel if max_frames is None else sel[:int(max_frames)]


def _spread(sel, n):
    """``n`` entries of ``sel`` spread evenly over it (all of them if fewer)."""
    if len(sel) <= n:
        return list(sel)
    pos = np.linspace(0, len(sel) - 1, n).round().astype(int)
    return [sel[p] for p in pos]


def _save_npy(path, array):
    from .utils._atomic import atomic_output

    with atomic_output(path, overwrite=True) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, array)


# --------------------------------------------------------------------------- tasks (run on workers)
# Each task takes paths and small parameters, writes into the shared folder and returns a small dict.

def survey_task(video, parts, key, *, byte_order, max_frames, step, check_frames, mem_limit):
    """Frame count, shape, SHA-256 and cheap median of one video (written to ``parts``)."""
    from .combine import median_combine
    from .io.frames import open_frames
    from .provenance import sha256_file

    t0 = time.perf_counter()
    with open_frames(video, byte_order=byte_order) as src:
        n_frames = int(src.n_frames)
        shape = [int(s) for s in src.frame_shape]
        dtype = str(np.dtype(src.dtype))
        sel = _selection(n_frames, max_frames=max_frames, step=step)
        if not len(sel):
            raise InputError(f"{video}: no frames")
        subset = _spread(sel, check_frames)
    cheap = Path(parts) / f"cheap_{key[:16]}.npy"
    with ConcatFrames([video], selections=[subset], byte_order=byte_order) as src:
        median = median_combine(src, mem_limit=mem_limit)
    _save_npy(cheap, median.data.astype(np.float32))
    return {"n_frames": n_frames, "frame_shape": shape, "dtype": dtype, "n_selected": len(sel),
            "check_frames": subset, "input_sha256": sha256_file(video), "cheap_median": str(cheap),
            "seconds": time.perf_counter() - t0}


def median_band_task(videos, selections, rows, part, *, byte_order, mem_limit):
    """Exact median of rows ``rows`` over the selected frames of every video, saved to ``part``."""
    from .combine import median_combine

    t0 = time.perf_counter()
    with ConcatFrames(videos, selections=selections, rows=rows, byte_order=byte_order) as src:
        band = median_combine(src, mem_limit=mem_limit)
    _save_npy(part, band.data.astype(np.float32))
    return {"part": str(part), "rows": list(rows), "seconds": time.perf_counter() - t0}


def flat_task(outdir, videos, selections, *, key_median, detector, inpaint, f_ratio, pixel_size, floor,
              detector_options, inpaint_options, byte_order, mem_limit, overwrite, need_side):
    """Mask, side products and flat from the shared median (reusing those that are up to date)."""
    from .detection._high_level import detect_dust
    from .flat import make_flat
    from .io.fits import read_flat, read_mask, read_median, write_flat
    from .pipeline import _KEY, _KEY_COMMENT, PRODUCTS, _reuse, _side_products, _write_mask

    outdir = Path(outdir)
    paths = {name: outdir / fname for name, fname in PRODUCTS.items()}
    computed, reused = [], []
    t0 = time.perf_counter()
    median = read_median(paths["median"])
    key_mask = mask_key(key_median, detector=detector, detector_options=detector_options, f_ratio=f_ratio,
                        pixel_size=pixel_size)
    notes = []
    with ConcatFrames(videos, selections=selections, byte_order=byte_order) as frames:
        detection = _reuse(paths["mask"], key_mask, read_mask, overwrite)
        if detection is not None:
            reused.append("mask")
        else:
            detection, frames_used = _with_frames(
                lambda f: detect_dust(median, detector=detector, frames=f, f_ratio=f_ratio,
                                      pixel_size=pixel_size, **(detector_options or {})),
                frames, videos, selections, byte_order)
            if frames_used is not frames:
                notes.append(f"motion test of the detector on the frames of {Path(videos[0]).name} only: "
                             "the videos do not register together")
            _write_mask(paths["mask"], detection, median, key_mask)
            computed.append("mask")
        if need_side or "mask" in computed:
            _side_products(detection, median, paths)
            computed.append("side")
        key_flat = flat_key(key_mask, inpaint=inpaint, floor=floor, inpaint_options=inpaint_options)
        flat = _reuse(paths["flat"], key_flat, read_flat, overwrite)
        if flat is not None:
            reused.append("flat")
        else:
            options = dict(inpaint_options or {})
            if inpaint == "measured":
                options.setdefault("drift_plot", str(outdir / "drift.png"))
                options.setdefault("overwrite", True)
            flat, frames_used = _with_frames(
                lambda f: make_flat(median, detection, inpaint=inpaint, frames=f, floor=floor,
                                    inpaint_options=options or None, mem_limit=mem_limit),
                frames, videos, selections, byte_order)
            if frames_used is not frames:
                notes.append(f"clean estimate from the frames of {Path(videos[0]).name} only: "
                             "the videos do not register together")
            flat.meta[_KEY] = (key_flat, _KEY_COMMENT)
            write_flat(paths["flat"], flat, overwrite=True)
            computed.append("flat")
    n_dust = len(detection.catalog) if detection.catalog is not None else 0
    for note in notes:
        log.info("%s", note)
    return {"computed": computed, "reused": reused, "n_dust": n_dust, "key_mask": key_mask,
            "key_flat": key_flat, "notes": notes, "seconds": time.perf_counter() - t0}


def _mono_frame(source, index):
    frame = np.asarray(source.read(index), dtype=np.float64)
    return frame.mean(axis=-1) if frame.ndim == 3 else frame


def _same_pointing(videos, byte_order, *, fraction=0.8):
    """Whether every video shows the first one's scene (one pointing), from one frame of each.

    The normalised correlation peak of the first video's first frame with
    each other video's first frame must reach ``fraction`` of its peak with
    a later frame of its own video (the seeing and noise of one scene): the
    registration inside the motion test and the clean estimates is
    meaningless across other targets or pointings (issue: a night of several
    targets).
    """
    from .io.frames import open_frames
    from .registration import measure_shift

    with open_frames(videos[0], byte_order=byte_order) as src:
        ref = _mono_frame(src, 0)
        own = _mono_frame(src, src.n_frames - 1) if src.n_frames > 1 else ref
    within = measure_shift(ref, own)[1]
    for video in videos[1:]:
        with open_frames(video, byte_order=byte_order) as src:
            if measure_shift(ref, _mono_frame(src, 0))[1] < fraction * within:
                return False
    return True


def _with_frames(step, frames, videos, selections, byte_order):
    """``step(frames)`` with the frames of every video; with those of the first video when they do not register.

    The detector's motion test and the clean estimates register all the
    frames they are given to one reference; videos of other pointings (other
    targets of the night) do not register together, and the step then falls
    back to a weaker method with a `DetectorFallbackWarning`.  Then the step
    is redone with the frames of the first video, which do register (the
    median stays the exact median of every video's frames).
    """
    import warnings

    from .utils.exceptions import DetectorFallbackWarning

    if len(videos) == 1:
        return step(frames), frames
    if not _same_pointing(videos, byte_order):
        log.info("the videos do not show one scene; the frames of %s feed this step", Path(videos[0]).name)
        with ConcatFrames(videos[:1], selections=selections[:1], byte_order=byte_order) as first:
            return step(first), first
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DetectorFallbackWarning)
        result = step(frames)
    failed = [w for w in caught if issubclass(w.category, DetectorFallbackWarning)
              and "registration" in str(w.message)]
    for w in caught:
        if w not in failed:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if not failed:
        return result, frames
    log.info("the frames of the %d videos do not register together (%s); using those of %s",
             len(videos), failed[0].message, Path(videos[0]).name)
    with ConcatFrames(videos[:1], selections=selections[:1], byte_order=byte_order) as first:
        return step(first), first


def check_task(outdir, video, cheap_median, check_frames, *, byte_order, check_options):
    """The dust-change check of one video (its cheap median against the shared mask and flat)."""
    from .io.fits import read_flat, read_mask, read_median

    outdir = Path(outdir)
    median = read_median(outdir / "median.fits")
    detection = read_mask(outdir / "mask.fits")
    flat = read_flat(outdir / "flat.fits")
    own = np.load(cheap_median)
    with ConcatFrames([video], selections=[check_frames], byte_order=byte_order) as frames:
        return check_dust(own, median.data, detection.dq, flat.data, frames=frames, **(check_options or {}))


def calibrate_task(flat_path, video, output, *, byte_order, mem_limit):
    """Calibrate one video with the shared flat (as ``aiflat apply``); SHA-256 of the output."""
    from .apply import apply_to_file
    from .provenance import sha256_file

    t0 = time.perf_counter()
    stats = apply_to_file(flat_path, video, output, overwrite=True, mem_limit=mem_limit, byte_order=byte_order)
    small = {k: v for k, v in (stats or {}).items() if isinstance(v, (int, float, str, bool, type(None)))}
    return {"output_sha256": sha256_file(output), "stats": small, "seconds": time.perf_counter() - t0}


# --------------------------------------------------------------------------- the dust-change check

def _ring_ratio(image, core, ring):
    a, b = image[core], image[ring]
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if a.size == 0 or b.size < 4:
        return np.nan
    ref = np.median(b)
    return float(np.median(a) / ref) if ref > 0 else np.nan


def _lit(own, ref, ring, fraction=0.5):
    """Whether the video's scene lights ``ring`` at least ``fraction`` as brightly as the shared median.

    A shadow over the sky (or off the disc) in this video cannot show its
    dust, so it is no evidence that the dust is missing.
    """
    a, b = own[ring], ref[ring]
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    return a.size >= 4 and b.size >= 4 and np.median(a) >= fraction * np.median(b)


def check_dust(own_median, shared_median, dq, flat, *, frames=None, min_depth=0.02, keep_fraction=0.5,
               new_depth=None, new_fraction=0.25, max_missing=0, max_new=0):
    """Whether a video's dust matches the shared flat's.

    Each shadow of the shared mask (a connected region of DUST pixels) is
    measured in both medians the same way: the median of its deeper half
    (where the flat is below its median over the shadow) over the median of
    a ring around it, outside the halo.  A shadow at least ``min_depth`` deep
    in the shared median is *missing* from the video when it is less than
    ``keep_fraction`` of that depth there; a shadow whose surroundings the
    video does not light (the sky beyond the limb) is not tested.  A *new* shadow is a dark region
    of the video's median corrected by the flat (``own / flat``) outside the
    shared mask, found by the local detector, at least ``new_depth`` deep
    (default: ``2 * min_depth``) and less than ``new_fraction`` of that in
    the shared median over the flat (new dust in one video of several
    hardly shows in the median of all their frames; a shadow that the shared
    mask missed shows in both, and is not new); with ``frames`` (those of the cheap
    median) the detector's motion test tells the static dust from the scene.

    Parameters
    ----------
    own_median : `~numpy.ndarray`
        The video's cheap median (a frame subset).
    shared_median, dq, flat : `~numpy.ndarray`
        The shared median, its DQ mask and the flat.
    frames : frame source, optional
        The frames of the cheap median, for the detector's motion test.
    min_depth, keep_fraction, new_depth, new_fraction : float, optional
        Thresholds above.
    max_missing, max_new : int, optional
        Shadows missing and new shadows tolerated before the video is a
        mismatch (default 0 and 0).

    Returns
    -------
    dict
        ``match`` (bool), ``n_tested``, ``n_missing``, ``n_new``,
        ``missing`` and ``new`` (lists of ``[x, y]`` centres), ``tested``
        (``[label, x, y, present]`` of each tested shadow), ``depth_ratio``
        (median over the tested shadows of the video's depth over the shared
        depth) and ``message``.

    Examples
    --------
    >>> import numpy as np
    >>> y, x = np.mgrid[:64, :64]
    >>> shadow = (x - 32) ** 2 + (y - 32) ** 2 < 36
    >>> flat = np.where(shadow, 0.8, 1.0).astype(np.float32)
    >>> dq = shadow.astype(np.uint8)
    >>> sky = np.full((64, 64), 1000.0, np.float32)
    >>> check_dust(sky * flat, sky * flat, dq, flat)["match"]
    True
    >>> r = check_dust(sky, sky * flat, dq, flat)   # the speck was cleaned off
    >>> r["match"], r["n_missing"]
    (False, 1)
    """
    from scipy import ndimage

    from .dq import DustDQ

    own = np.asarray(own_median, dtype=np.float64)
    if own.ndim == 3:
        own = own.mean(axis=-1)
    ref = np.asarray(shared_median, dtype=np.float64)
    if ref.ndim == 3:
        ref = ref.mean(axis=-1)
    flat = np.asarray(flat, dtype=np.float64)
    dq = np.asarray(dq)
    if own.shape != ref.shape or flat.shape != ref.shape or dq.shape != ref.shape:
        raise InputError(f"check_dust: shapes differ: {own.shape}, {ref.shape}, {flat.shape}, {dq.shape}")
    dust = (dq & int(DustDQ.DUST)) > 0
    anydust = (dq & int(DustDQ.DUST | DustDQ.DUST_HALO)) > 0
    labels, n = ndimage.label(dust)
    missing, ratios, tested = [], [], []
    n_tested = 0
    for k, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None:
            continue
        size = max(sl[0].stop - sl[0].start, sl[1].stop - sl[1].start)
        gap, width = 2, max(3, size // 2)
        pad = gap + width + 1
        win = tuple(slice(max(0, s.start - pad), s.stop + pad) for s in sl)
        region = labels[win] == k
        fvals = flat[win][region]
        core = region & (flat[win] <= np.median(fvals))
        inner = ndimage.binary_dilation(region, iterations=gap)
        outer = ndimage.binary_dilation(region, iterations=gap + width)
        ring = outer & ~inner & ~anydust[win]
        d_ref = 1 - _ring_ratio(ref[win], core, ring)
        if not np.isfinite(d_ref) or d_ref < min_depth or not _lit(own[win], ref[win], ring):
            continue
        n_tested += 1
        d_own = 1 - _ring_ratio(own[win], core, ring)
        ratios.append(d_own / d_ref if np.isfinite(d_own) else 0.0)
        present = bool(np.isfinite(d_own) and d_own >= keep_fraction * d_ref)
        cy, cx = ndimage.center_of_mass(region)
        centre = [round(float(cx) + win[1].start, 1), round(float(cy) + win[0].start, 1)]
        tested.append([k, *centre, present])
        if not present:
            missing.append(centre)

    safe = np.where(flat > 0, flat, 1.0)
    new = _new_shadows(own / safe, ref / safe, anydust, 2 * min_depth if new_depth is None else new_depth,
                       new_fraction, frames)
    match = len(missing) <= max_missing and len(new) <= max_new
    parts = [f"{n_tested} shadows tested"]
    if missing:
        parts.append(f"{len(missing)} missing (at x, y {', '.join(f'{x:.0f} {y:.0f}' for x, y in missing[:5])})")
    if new:
        parts.append(f"{len(new)} new (at x, y {', '.join(f'{x:.0f} {y:.0f}' for x, y in new[:5])})")
    return {"match": bool(match), "n_tested": n_tested, "n_missing": len(missing), "n_new": len(new),
            "missing": missing, "new": new, "tested": tested,
            "depth_ratio": float(np.median(ratios)) if ratios else None, "message": "; ".join(parts)}


def _disk_depth(image, x, y, radius, exclude):
    """1 - (median in a disk of ``radius`` / median of a ring around it outside ``exclude``)."""
    ny, nx = image.shape
    r_in, r_out = radius + 2, radius + 2 + max(3.0, radius)
    y0, y1 = max(0, int(y - r_out - 1)), min(ny, int(y + r_out + 2))
    x0, x1 = max(0, int(x - r_out - 1)), min(nx, int(x + r_out + 2))
    yy, xx = np.mgrid[y0:y1, x0:x1]
    d = np.hypot(xx - x, yy - y)
    core = d <= max(1.0, 0.6 * radius)
    ring = (d >= r_in) & (d <= r_out) & ~exclude[y0:y1, x0:x1]
    return 1 - _ring_ratio(image[y0:y1, x0:x1], core, ring)


def _new_shadows(corrected, shared, known, depth, fraction, frames=None):
    """Centres ``[x, y]`` of shadows in ``corrected`` but not in ``shared``, outside ``known``.

    Candidates are the local detector's shadows in ``corrected`` (the video's
    cheap median over the flat) outside the shared mask; a candidate is new
    when it is at least ``depth`` deep there and less than ``fraction``
    of that in ``shared`` (the shared median over the flat): a shadow the
    shared detection missed is in both and is not new dust.
    """
    import warnings

    from scipy import ndimage

    from .detection._high_level import detect_dust
    from .utils.exceptions import AiflatUserWarning

    grown = ndimage.binary_dilation(known, iterations=3) if known.any() else known

    def candidates(with_frames):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AiflatUserWarning)  # no dust found, fallbacks: a verdict follows
            det = detect_dust(corrected.astype(np.float32), detector="local", frames=with_frames)
        cat = det.catalog
        out = []
        for row in (cat if cat is not None else ()):
            x, y = float(row["x_centroid"]), float(row["y_centroid"])
            iy = min(max(int(round(y)), 0), known.shape[0] - 1)
            ix = min(max(int(round(x)), 0), known.shape[1] - 1)
            if grown[iy, ix]:
                continue
            radius = float(np.sqrt(max(float(row["area"]), 1.0) / np.pi))
            d_own = _disk_depth(corrected, x, y, radius, known)
            d_shared = _disk_depth(shared, x, y, radius, known)
            if not np.isfinite(d_own) or d_own < depth:
                continue
            if np.isfinite(d_shared) and d_shared >= fraction * d_own:
                continue  # in the shared median too: dust the shared mask missed, not new dust
            out.append([round(x, 1), round(y, 1)])
        return out

    # the detector on the image alone is cheap; only when it finds something new is its motion test
    # (the frames: static dust, moving scene) run to confirm it
    found = candidates(None)
    if found and frames is not None:
        found = candidates(frames)
    return found


# --------------------------------------------------------------------------- step keys

def mask_key(key_median, *, detector, detector_options, f_ratio, pixel_size):
    """Step key of the mask (the same chain as `~aiflat_astro.pipeline.run_pipeline`)."""
    return params_hash({"step": "mask", "median": key_median, "detector": detector,
                        "options": detector_options or {}, "f_ratio": f_ratio, "pixel_size": pixel_size,
                        "software": software_id()})


def flat_key(key_mask, *, inpaint, floor, inpaint_options):
    """Step key of the flat."""
    return params_hash({"step": "flat", "mask": key_mask, "inpaint": inpaint, "floor": floor,
                        "options": inpaint_options or {}})


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

def run_night(videos, outdir, *, client=None, detector="local", inpaint="local", apply=True, f_ratio=None,
              pixel_size=None, max_frames=None, step=1, mem_limit="256MB", floor=0.05, detector_options=None,
              inpaint_options=None, byte_order="auto", overwrite=False, force=False,
              check_frames=CHECK_FRAMES, check_options=None, progress_bar=False):
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
    detector, inpaint, apply, f_ratio, pixel_size, floor, detector_options, inpaint_options, byte_order, overwrite
        As in `~aiflat_astro.pipeline.run_pipeline`.
    max_frames, step : optional
        Frames of *each* video used for the median (at most ``max_frames`` of
        every ``step``-th frame).
    mem_limit : int, float or str, optional
        Working-memory bound of each task (``'256MB'``).
    force : bool, optional
        Calibrate the videos whose dust does not match too.
    check_frames : int, optional
        Frames of each video in its cheap median for the check (25).
    check_options : dict, optional
        Thresholds of `check_dust`.
    progress_bar : bool, optional
        A progress bar over the tasks (videos and steps).

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

    from .apply import output_name
    from .pipeline import PRODUCTS, _file_identity, _recorded_key, _State

    t_start = time.perf_counter()
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
            raise InputError(f"{v} and {names[out]} would both be calibrated to {outdir / out}; "
                             "rename one of them")
        names[out] = v
    outdir.mkdir(parents=True, exist_ok=True)
    for v in videos:
        if v.exists() and (outdir / output_name(v)).resolve() == v.resolve():
            raise InputError(f"the calibrated output would replace the input video {v}; "
                             "choose another output folder")
    parts = outdir / PARTS
    parts.mkdir(exist_ok=True)
    paths = {name: outdir / fname for name, fname in PRODUCTS.items()}
    state = _State(outdir)
    night = state.data.setdefault("night", {})
    computed, reused, seconds = [], [], {}
    entries = [{"input": str(v), "input_sha256": None, "n_frames": None, "output": None, "output_sha256": None,
                "status": "failed", "message": None} for v in videos]
    alive = [True] * len(videos)

    def fail(i, message):
        alive[i] = False
        entries[i]["status"] = "failed"
        entries[i]["message"] = message
        log.warning("%s: %s", videos[i], message)

    n_steps = 4 * len(videos) + 2
    with tqdm(total=n_steps, desc="night", unit="task", disable=not progress_bar) as bar:
        runner = _Runner(client, bar)

        # -- 1. survey -----------------------------------------------------------------
        t0 = time.perf_counter()
        surveys = [None] * len(videos)
        calls, todo = [], []
        for i, v in enumerate(videos):
            if not v.is_file():
                fail(i, f"no such video: {str(v)!r}")
                continue
            ident = _file_identity(v)
            key = params_hash({"step": "survey", "video": ident, "max_frames": max_frames, "step_": step,
                               "byte_order": byte_order, "check_frames": check_frames})
            rec = night.get("survey", {}).get(str(ident["path"]))
            if rec and rec.get("key") == key and Path(rec["result"]["cheap_median"]).exists():
                surveys[i] = dict(rec["result"], key=key, ident=ident)
                continue
            todo.append((i, key, ident))
            calls.append((survey_task, (str(v), str(parts), key),
                          {"byte_order": byte_order, "max_frames": max_frames, "step": step,
                           "check_frames": check_frames, "mem_limit": mem_limit}))
        bar.update(len(videos) - len(calls))
        for (i, key, ident), (res, exc) in zip(todo, runner.map("survey", calls)):
            if exc is not None:
                fail(i, f"cannot read the video: {_error_text(exc)}")
                continue
            surveys[i] = dict(res, key=key, ident=ident)
            night.setdefault("survey", {})[str(ident["path"])] = {"key": key, "result": res}
        state.save()
        for i, s in enumerate(surveys):
            if s is not None:
                entries[i]["input_sha256"] = s["input_sha256"]
                entries[i]["n_frames"] = s["n_frames"]
        # one frame shape and type for the night: the most common one
        kinds = [(tuple(s["frame_shape"]), s["dtype"]) for s in surveys if s is not None]
        if not kinds:
            _write_manifest(outdir, entries, None)
            raise InputError("no readable video to make the flat from: "
                             + "; ".join(e["message"] for e in entries if e["message"]))
        kind = max(set(kinds), key=kinds.count)
        for i, s in enumerate(surveys):
            if s is not None and (tuple(s["frame_shape"]), s["dtype"]) != kind:
                fail(i, f"frames {'x'.join(map(str, s['frame_shape']))} {s['dtype']} differ from the night's "
                        f"{'x'.join(map(str, kind[0]))} {kind[1]}")
        used = [i for i in range(len(videos)) if alive[i]]
        seconds["survey"] = time.perf_counter() - t0

        # -- 2. the exact median of all frames of all videos, in bands of rows --------------
        t0 = time.perf_counter()
        use_videos = [str(videos[i]) for i in used]
        selections = [list(_selection(surveys[i]["n_frames"], max_frames=max_frames, step=step)) for i in used]
        key_median = params_hash({"step": "median", "night": [surveys[i]["ident"] for i in used],
                                  "max_frames": max_frames, "step_": step, "byte_order": byte_order})
        if _recorded_key(paths["median"], overwrite) == key_median and _median_ok(paths["median"]):
            reused.append("median")
            bar.update(1)
        else:
            height = kind[0][0]
            bands = _bands(height, 1 if client is None else 2 * _n_threads(client))
            calls, band_parts = [], []
            for rows in bands:
                part = parts / f"median_{key_median[:16]}_{rows[0]}_{rows[1]}.npy"
                band_parts.append(part)
                if not part.exists():
                    calls.append((median_band_task, (use_videos, selections, rows, str(part)),
                                  {"byte_order": byte_order, "mem_limit": mem_limit}))
            for res, exc in runner.map("median", calls):
                if exc is not None:
                    raise exc
            data = np.concatenate([np.load(p) for p in band_parts], axis=0)
            _write_night_median(paths["median"], data, key_median, videos=[videos[i] for i in used],
                                surveys=[surveys[i] for i in used], selections=selections, step=step)
            for p in band_parts:
                p.unlink(missing_ok=True)
            computed.append("median")
            bar.update(1)
        seconds["median"] = time.perf_counter() - t0

        # -- 3. mask and flat, once ---------------------------------------------------------
        t0 = time.perf_counter()
        key_mask = mask_key(key_median, detector=detector, detector_options=detector_options, f_ratio=f_ratio,
                            pixel_size=pixel_size)
        side_key = params_hash({"step": "side", "mask": key_mask})
        side = ("catalog", "regions", "preview")
        need_side = not all(state.up_to_date(n, side_key, paths[n]) for n in side)
        if need_side:
            for n in side:
                if paths[n].exists() and not state.known(n) and not overwrite:
                    raise InputError(f"{paths[n]} exists and was not made by aiflat run; use --overwrite "
                                     "or another output folder")
        [(res, exc)] = runner.map("flat", [(flat_task, (str(outdir), use_videos, selections),
                                            {"key_median": key_median, "detector": detector, "inpaint": inpaint,
                                             "f_ratio": f_ratio, "pixel_size": pixel_size, "floor": floor,
                                             "detector_options": detector_options,
                                             "inpaint_options": inpaint_options, "byte_order": byte_order,
                                             "mem_limit": mem_limit, "overwrite": overwrite,
                                             "need_side": need_side})])
        if exc is not None:
            raise exc
        if "side" in res["computed"]:
            for n in side:
                state.record(n, side_key, paths[n])
        computed += [c for c in res["computed"] if c != "side"]
        reused += res["reused"]
        key_flat = res["key_flat"]
        n_dust = res["n_dust"]
        seconds["flat"] = time.perf_counter() - t0

        # -- 4. the dust-change check ----------------------------------------------------------
        t0 = time.perf_counter()
        checks = night.setdefault("check", {})
        calls, todo = [], []
        for i in used:
            ckey = params_hash({"step": "check", "survey": surveys[i]["key"], "flat": key_flat,
                                "options": check_options or {}})
            rec = checks.get(str(surveys[i]["ident"]["path"]))
            if rec and rec.get("key") == ckey:
                entries[i]["dust_check"] = rec["result"]
                continue
            todo.append((i, ckey))
            calls.append((check_task, (str(outdir), str(videos[i]), surveys[i]["cheap_median"],
                                       surveys[i]["check_frames"]),
                          {"byte_order": byte_order, "check_options": check_options}))
        bar.update(len(videos) - len(calls))
        for (i, ckey), (res, exc) in zip(todo, runner.map("check", calls)):
            if exc is not None:
                fail(i, f"dust-change check failed: {_error_text(exc)}")
                continue
            entries[i]["dust_check"] = res
            checks[str(surveys[i]["ident"]["path"])] = {"key": ckey, "result": res}
        state.save()
        _night_verdict([entries[i] for i in used if alive[i]], check_options)
        mismatched = [i for i in used if alive[i] and not entries[i]["dust_check"]["match"]]
        for i in mismatched:
            entries[i]["status"] = "dust-mismatch"
            entries[i]["message"] = "dust does not match the shared flat: " + entries[i]["dust_check"]["message"]
        if mismatched:
            what = "calibrated anyway (force)" if force else "not calibrated (use --force to calibrate them)"
            warn_user(f"dust does not match the shared flat in {len(mismatched)} of {len(videos)} videos, "
                      f"{what}: " + "; ".join(f"{videos[i].name} ({entries[i]['dust_check']['message']})"
                                             for i in mismatched))
        seconds["check"] = time.perf_counter() - t0

        # -- 5. calibration -----------------------------------------------------------------
        t0 = time.perf_counter()
        calls, todo = [], []
        to_apply = [i for i in used if alive[i] and (force or i not in mismatched)] if apply else []
        for i in to_apply:
            out = outdir / output_name(videos[i])
            name = f"calibrated:{out.name}"
            akey = params_hash({"step": "apply", "flat": key_flat, "video": surveys[i]["ident"]})
            rec = state.data["products"].get(name, {})
            if state.up_to_date(name, akey, out) and rec.get("sha256"):
                entries[i].update(output=str(out), output_sha256=rec["sha256"])
                _mark_calibrated(entries[i], i in mismatched)
                reused.append(f"apply {videos[i].name}")
                continue
            if out.exists() and not state.known(name) and not overwrite:
                fail(i, f"{out} exists and was not made by aiflat run; use --overwrite or another output folder")
                continue
            todo.append((i, name, akey, out))
            calls.append((calibrate_task, (str(paths["flat"]), str(videos[i]), str(out)),
                          {"byte_order": byte_order, "mem_limit": mem_limit}))
        bar.update(len(videos) - len(calls))
        for (i, name, akey, out), (res, exc) in zip(todo, runner.map("calibrate", calls)):
            if exc is not None:
                fail(i, f"calibration failed: {_error_text(exc)}")
                continue
            state.record(name, akey, out)
            state.data["products"][name]["sha256"] = res["output_sha256"]
            entries[i].update(output=str(out), output_sha256=res["output_sha256"])
            _mark_calibrated(entries[i], i in mismatched)
            computed.append(f"apply {videos[i].name}")
        if not apply:
            for i in used:
                if alive[i] and i not in mismatched:
                    entries[i].update(status="checked", message="dust matches; not calibrated (apply=False)")
        seconds["apply"] = time.perf_counter() - t0

    from .provenance import sha256_file

    flat_info = {"path": str(paths["flat"]), "sha256": sha256_file(paths["flat"]), "runsha": key_flat,
                 "n_dust": n_dust, "videos": use_videos, "detector": detector, "inpaint": inpaint}
    manifest = _write_manifest(outdir, entries, flat_info)
    seconds["total"] = time.perf_counter() - t_start
    state.save({"night": [str(v) for v in videos], "detector": detector, "inpaint": inpaint,
                "computed": computed, "reused": reused, "n_dust": n_dust, "seconds": seconds})
    log.info("aiflat run (night of %d videos): computed %s; reused %s", len(videos),
             ", ".join(computed) or "nothing", ", ".join(reused) or "nothing")
    paths["manifest"] = outdir / MANIFEST
    return {"paths": paths, "computed": computed, "reused": reused, "n_dust": n_dust, "seconds": seconds,
            "manifest": manifest, "videos": manifest["videos"]}


def _night_verdict(entries, check_options):
    """Count as missing only the shared shadows that most videos of the night show.

    A shadow of the shared mask that most videos do not show is not the
    night's dust (a scene feature of one video taken for dust, or dust of a
    few videos only): that a video lacks it says nothing about its dust.
    Updates each entry's ``dust_check`` (``match``, ``n_missing``,
    ``missing``, ``unconfirmed``, ``message``).
    """
    checks = [e["dust_check"] for e in entries if e.get("dust_check") and "tested" in e["dust_check"]]
    if len(checks) < 3:  # no majority to speak of
        return
    counts = {}
    for c in checks:
        for label, _x, _y, present in c["tested"]:
            counts[label] = counts.get(label, 0) + bool(present)
    confirmed = {label for label, n in counts.items() if n * 2 > len(checks)}
    opts = check_options or {}
    for c in checks:
        missing = [[x, y] for label, x, y, present in c["tested"] if label in confirmed and not present]
        c["unconfirmed"] = sum(1 for t in c["tested"] if t[0] not in confirmed)
        c["missing"], c["n_missing"] = missing, len(missing)
        c["match"] = bool(len(missing) <= opts.get("max_missing", 0) and c["n_new"] <= opts.get("max_new", 0))
        parts = [f"{c['n_tested']} shadows tested"]
        if c["unconfirmed"]:
            parts[0] += f" ({c['unconfirmed']} not shown by most videos, not counted)"
        if missing:
            parts.append(f"{len(missing)} missing (at x, y "
                         + ", ".join(f"{x:.0f} {y:.0f}" for x, y in missing[:5]) + ")")
        if c["n_new"]:
            parts.append(f"{c['n_new']} new (at x, y "
                         + ", ".join(f"{x:.0f} {y:.0f}" for x, y in c["new"][:5]) + ")")
        c["message"] = "; ".join(parts)


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
    from .pipeline import _write_median

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

