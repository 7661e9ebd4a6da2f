"""The shared dust of a night from each video's own evidence (issue 14).

One median over the frames of every video mixes scenes and pointings: the
shadows sit on a blurred average of several targets and both the detector
and the clean estimate lose them (measured: flat residual 0.26 from three
videos against 0.05 from the best single one).  Here each video is looked
at on its own, as ``aiflat run`` on it alone would, and the evidence is
combined:

* `merge_detections`: the union of the videos' own detections, each shadow
  *confirmed* in the other videos' medians (a dip at least ``keep_fraction``
  as deep wherever that video lights the spot); a dark spot that only one
  video shows while the others light it is its scene, not the sensor's dust;
* `combine_flats`: one flat from the per-video flats made with that shared
  mask: per shadow, the videos' transmissions averaged with weights
  ``1 / (σ² + δ² + ε²)`` (σ: the video's measured uncertainty of the
  transmission, δ: its rms distance from the precision-weighted mean of
  the largest group of videos that agree within their errors, of every
  video that measured the shadow, those flagged REVIEW there included;
  ε = 0.003), so that a video whose scene spoils the clean estimate of one
  shadow hardly counts there; a video that does not
  light a shadow (its flat is flagged REVIEW there) gets no weight.

The night's dust-change check (`check_dust`) lives here too: it asks of
each video the question `merge_detections` asks of each shadow.
"""

from dataclasses import asdict, dataclass, fields

import numpy as np
from scipy import ndimage

from .utils._colour import mono_frame
from .utils.exceptions import InputError

__all__ = ["merge_detections", "combine_flats", "check_dust", "CheckOptions", "new_by_vote", "new_shadows"]

#: Floor of the per-video weights' noise term (transmission units).
WEIGHT_FLOOR = 0.003


def _ring_depth(image, core, ring):
    """1 - median(core) / median(ring), NaN when either is empty or the ring is dark."""
    a, b = image[core], image[ring]
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if a.size == 0 or b.size < 4:
        return np.nan
    ref = np.median(b)
    return float(1 - np.median(a) / ref) if ref > 0 else np.nan


def _shadow_window(region_slice, shape, size):
    """The window, core and ring geometry around one shadow (as the dust-change check measures it)."""
    gap, width = 2, max(3, size // 2)
    pad = gap + width + 1
    return tuple(slice(max(0, s.start - pad), min(n, s.stop + pad)) for s, n in zip(region_slice, shape)), gap, width


def shadow_depths(medians, region, anydust):
    """Depth of one shadow (boolean ``region``) in each median; NaN where that median does not light it.

    The depth is measured as in `aiflat_astro.night.check_dust`: the median
    inside over the median of a ring around it, off every shadow
    (``anydust``, the videos' dust grown by the ring's gap).  A median whose ring is less than half as bright as
    the brightest median's ring does not light the spot (sky beyond the limb).
    """
    from scipy import ndimage

    sl = ndimage.find_objects(region.astype(np.int32))[0]
    size = max(sl[0].stop - sl[0].start, sl[1].stop - sl[1].start)
    win, gap, width = _shadow_window(sl, region.shape, size)
    reg = region[win]
    inner = ndimage.binary_dilation(reg, iterations=gap)
    ring = ndimage.binary_dilation(reg, iterations=gap + width) & ~inner & ~anydust[win]
    patches = [mono_frame(m[win]) for m in medians]  # a window of each: memory-mapped medians stay on disk
    levels = np.array([np.nanmedian(m[ring]) if ring.any() else np.nan for m in patches])
    depths = np.array([_ring_depth(m, reg, ring) for m in patches])
    lit = np.isfinite(levels) & (levels >= 0.5 * np.nanmax(levels, initial=0.0))
    return np.where(lit, depths, np.nan)


def _components(detection):
    """Each catalog shadow of a detection: (row, its DUST pixels, its pixels of weight > 0)."""
    from scipy import ndimage

    support, _ = ndimage.label(detection.weight > 0)
    labels = detection.labels
    for row in (detection.catalog if detection.catalog is not None else ()):
        dust = labels == int(row["id"])
        if not dust.any():
            continue
        ids = np.unique(support[dust])
        # a weight component can join two shadows: the other's pixels are its own (kept or rejected on its own)
        yield row, dust, (np.isin(support, ids[ids > 0]) & ((labels == 0) | dust)) | dust


def merge_detections(detections, medians, *, keep_fraction=0.5):
    """One detection from the videos' own detections: the union of their shadows that the others confirm.

    Parameters
    ----------
    detections : list of `~aiflat_astro.detection.DustDetection`
        Each video's own detection (its median, its frames), one frame shape.
    medians : list of `~numpy.ndarray`
        Each video's own median (2-D), in the same order.
    keep_fraction : float, optional
        A shadow found in one video is confirmed by another that lights it
        when it is at least this fraction as deep there (default 0.5).  It is
        kept when at least half of the other videos that light it confirm it
        (or none lights it).

    Returns
    -------
    detection : `~aiflat_astro.detection.DustDetection`
        DQ and weight of the kept shadows (overlapping shadows of several
        videos merged into one, the first video's catalog row kept), the
        other DQ bits (hot, cold, saturated pixels) of every video.
    summary : dict
        ``found`` (shadows found per video), ``kept``, ``rejected`` (list of
        ``[video, x, y]``: shadows the other videos do not show).

    Examples
    --------
    >>> import numpy as np
    >>> from aiflat_astro.detection import DustDetection
    >>> from aiflat_astro.products import _catalog_from_rows
    >>> y, x = np.mgrid[:48, :48]
    >>> spot = np.hypot(x - 20, y - 20) < 4
    >>> row = {"id": 1, "x_centroid": 20.0, "y_centroid": 20.0, "area": float(spot.sum()),
    ...        "equivalent_diameter": 8.0, "depth": 0.3, "confidence": 0.9, "review": False,
    ...        "method": "local"}
    >>> det = DustDetection(dq=spot.astype(np.uint8), weight=spot.astype(np.float32),
    ...                     catalog=_catalog_from_rows([row]))
    >>> dusty = np.where(spot, 700.0, 1000.0)
    >>> merged, summary = merge_detections([det, det], [dusty, dusty])
    >>> summary["kept"], int(merged.dust_mask.sum()) == int(spot.sum())
    (1, True)
    >>> none = DustDetection(dq=np.zeros((48, 48), np.uint8), weight=np.zeros((48, 48), np.float32),
    ...                      catalog=_catalog_from_rows([]))
    >>> merged, summary = merge_detections([det, none], [dusty, np.full((48, 48), 1000.0)])
    >>> summary["kept"], summary["rejected"]   # the other video lights the spot and shows no dip
    (0, [[0, 20.0, 20.0]])
    """
    from .dq import DustDQ

    if len(detections) != len(medians) or not detections:
        raise ValueError("merge_detections: one median a detection, at least one")
    from scipy import ndimage

    meds = list(medians)  # windows of them are read (memory-mapped ones stay on disk), see shadow_depths
    shape = tuple(meds[0].shape[:2])
    # the rings that measure a shadow keep off every video's dust (not its halo: a detector's halo can
    # cover a ring entirely, and a shadow never measured is never rejected)
    anydust = np.zeros(shape, bool)
    for det in detections:
        anydust |= (det.dq & int(DustDQ.DUST)) > 0
    anydust = ndimage.binary_dilation(anydust, iterations=2) if anydust.any() else anydust
    dq = np.zeros(shape, np.uint8)
    weight = np.zeros(shape, np.float32)
    defects = int(DustDQ.HOT | DustDQ.COLD | DustDQ.SATURATED)
    rows, rejected, found = [], [], []
    for v, det in enumerate(detections):
        dq |= det.dq & np.uint8(defects)
        found.append(0)
        for row, dust, support in _components(det):
            found[v] += 1
            if not _confirmed(v, dust, meds, anydust, keep_fraction):
                rejected.append([v, round(float(row["x_centroid"]), 1), round(float(row["y_centroid"]), 1)])
                continue
            new = not ((dq & int(DustDQ.DUST)) > 0)[dust].any()
            halo = support & ~dust
            dq[halo] |= det.dq[halo] & np.uint8(~(defects | int(DustDQ.DUST)) & 0xFF)
            dq[dust] |= det.dq[dust] & np.uint8(~defects & 0xFF)
            weight[support] = np.maximum(weight[support], det.weight[support])
            if new:
                rows.append(row)
    return _merged(dq, weight, rows, detections[0]), {"found": found, "kept": len(rows), "rejected": rejected}


def _confirmed(v, dust, meds, anydust, keep_fraction):
    """Whether the shadow ``dust`` that video ``v`` found shows in at least half of the others lighting it."""
    if len(meds) == 1:
        return True
    depths = shadow_depths(meds, dust, anydust)
    own = depths[v]
    others = np.delete(depths, v)
    others = others[np.isfinite(others)]
    if not np.isfinite(own) or own <= 0 or others.size == 0:
        return True  # nothing to compare with: the video's own detector decides
    return bool(np.sum(others >= keep_fraction * own) * 2 >= others.size)


def _merged(dq, weight, rows, first):
    from astropy.table import vstack

    from .detection import DustDetection
    from .detection._base import empty_catalog

    if rows:
        catalog = vstack([r.table[r.index:r.index + 1] for r in rows], metadata_conflicts="silent")
        catalog["id"] = np.arange(1, len(catalog) + 1, dtype=np.int32)
    else:
        catalog = empty_catalog()
    provenance = dict(first.provenance or {})
    provenance["merged"] = "union of the videos' own detections, each confirmed by the others"
    return DustDetection(dq=dq, weight=weight, catalog=catalog, detector=first.detector, provenance=provenance)


def combine_flats(flats, *, floor=0.05):
    """One flat from per-video flats made with one mask: per shadow, a weighted mean of their transmissions.

    Parameters
    ----------
    flats : list of `~astropy.nddata.CCDData`
        Flats of `~aiflat_astro.flat.make_flat`, one a video, all with the
        same dust mask (the same weight, so the same pixels differ from 1.0).
    floor : float, optional
        Lowest transmission, as in `~aiflat_astro.flat.make_flat`.

    Returns
    -------
    flat : `~astropy.nddata.CCDData`
        The first flat's metadata, the combined data, uncertainty and flags
        (per shadow those of the video that weighs most there),
        ``NFLATS`` = number of flats combined.
    weights : list of list of float
        Per shadow (connected region where some flat differs from 1.0), the
        normalised weight of each video.

    Examples
    --------
    >>> import numpy as np
    >>> from astropy.nddata import CCDData, StdDevUncertainty
    >>> good = np.ones((16, 16), np.float32); good[4:8, 4:8] = 0.7
    >>> bad = good.copy(); bad[4:8, 4:8] = 0.9
    >>> make = lambda d: CCDData(d, unit="", flags=np.zeros(d.shape, np.uint8),
    ...                          uncertainty=StdDevUncertainty(np.full(d.shape, 0.01, np.float32)))
    >>> flat, w = combine_flats([make(good), make(good), make(bad)])
    >>> round(float(flat.data[5, 5]), 3), [round(x, 2) for x in w[0]]
    (0.7, [0.5, 0.5, 0.0])
    """
    from scipy import ndimage

    from .dq import DustDQ

    data = np.stack([np.asarray(f.data, np.float64) for f in flats])
    unc = np.stack([np.asarray(f.uncertainty.array, np.float64) if f.uncertainty is not None
                    else np.zeros(data.shape[1:]) for f in flats])
    flags = np.stack([np.asarray(f.flags if f.flags is not None else np.zeros(data.shape[1:]), np.uint8)
                      for f in flats])
    out, out_unc, out_flags = np.ones(data.shape[1:]), unc[0].copy(), flags[0].copy()
    labels, _ = ndimage.label(np.any(data != 1.0, axis=0))
    weights = []
    for k, sl in enumerate(ndimage.find_objects(labels), start=1):
        px = labels[sl] == k
        t, u = data[(slice(None),) + sl][:, px], unc[(slice(None),) + sl][:, px]
        unlit = (flags[(slice(None),) + sl][:, px] & int(DustDQ.REVIEW)) > 0
        w = _shadow_weights(t, u, unlit)
        weights.append([round(float(x), 4) for x in w])
        best = int(np.argmax(w))
        out[sl][px] = np.maximum((w[:, None] * t).sum(axis=0), floor)
        out_unc[sl][px] = np.sqrt(((w[:, None] * u) ** 2).sum(axis=0))
        out_flags[sl][px] = flags[best][sl][px]
    return _combined_flat(flats[0], out, out_unc, out_flags, floor, len(flats)), weights


def _shadow_weights(t, u, unlit):
    """Normalised weight of each video in one shadow: ``1 / (σ² + δ² + ε²)``, 0 for a video that does not light it.

    δ is the rms distance from the shadow's consensus (`_consensus`) of
    every video that measured the shadow (its flat differs from 1.0 there),
    those flagged REVIEW included: they vote on what the transmission is,
    they just get no weight in it.
    """
    use = ~(unlit.mean(axis=1) > 0.5)
    if not use.any():
        use[:] = True
    measured = ~np.all(t == 1.0, axis=1)
    voters = measured if measured.sum() > use.sum() else use
    sigma2 = np.mean(u ** 2, axis=1)
    consensus = _consensus(t[voters], sigma2[voters])
    delta2 = np.mean((t - consensus) ** 2, axis=1)
    w = np.where(use, 1.0 / (sigma2 + delta2 + WEIGHT_FLOOR ** 2), 0.0)
    return w / w.sum()


def _consensus(t, sigma2, z=3.0):
    """The precision-weighted mean of the largest group of videos that agree within their errors.

    Two estimates ``t`` (videos x pixels, ``sigma2`` their mean σ²) agree
    when their rms distance is at most ``z`` times their joint error
    ``sqrt(σ² + σ'² + ε²)``.  Each video starts a group and takes in, the
    most precise first, every video that agrees with all of the group; the
    largest group wins, ties broken by its summed precision.  A plain median
    of three is the middle value: a video whose scene biased its estimate (a
    shadow at its limb) while its σ stays small was the consensus whenever
    it lay between a precise video and a poor one; a precision-weighted
    median instead let one precise video outvote five that agree (a speck
    cleaned off in it).

    Examples
    --------
    >>> t = np.array([[0.80], [0.90], [0.97]])
    >>> np.round(_consensus(t, np.array([0.006, 0.012, 0.145]) ** 2), 3)   # the poor one agrees with both
    array([0.8])
    """
    dist = np.sqrt(np.mean((t[:, None, :] - t[None, :, :]) ** 2, axis=2))
    agree = dist <= z * np.sqrt(sigma2[:, None] + sigma2[None, :] + WEIGHT_FLOOR ** 2)
    precision = 1.0 / (sigma2 + WEIGHT_FLOOR ** 2)
    best = None
    for c in range(len(t)):
        group = [c]
        for v in np.argsort(-precision):
            if v != c and agree[v, group].all():
                group.append(int(v))
        score = (len(group), precision[group].sum())
        if best is None or score > best[0]:
            best = (score, group)
    group = best[1]
    return (precision[group, None] * t[group]).sum(axis=0) / precision[group].sum()


def _combined_flat(first, data, unc, flags, floor, n_flats):
    from astropy.nddata import CCDData, StdDevUncertainty

    from .dq import DustDQ

    low = data <= floor * (1 + 1e-6)
    flags = np.where(low & (data != 1.0), flags | np.uint8(DustDQ.LOW_TRANS),
                     flags & np.uint8(~int(DustDQ.LOW_TRANS) & 0xFF)).astype(np.uint8)
    meta = first.meta.copy()
    meta["NFLATS"] = (int(n_flats), "per-video flats combined (aiflat run, a night)")
    uncertainty = StdDevUncertainty(unc.astype(np.float32)) if first.uncertainty is not None else None
    return CCDData(data.astype(np.float32), unit=first.unit, meta=meta, flags=flags, uncertainty=uncertainty)


# =========================================================================== the dust-change check
# The dust-change check of a night: does one video's dust match the shared flat's? (issue 14)
#
# Two questions, each a statistical test whose noise is measured per shadow in
# the video itself, with a false-alarm rate ``false_alarm`` per video split over
# the shadows tested (Bonferroni: each test at ``z = Φ⁻¹(1 − α / n)``):
#
# * **a shadow missing** (the speck was cleaned off): for each shadow of the
#   shared mask, its depth in the video's median (median of its deeper half
#   over the median of a ring around it) against the depth the *flat* predicts
#   there (the same core and ring measured on the flat).  Its noise σ is the
#   spread of the same measurement, the same core and ring, moved to dust-free
#   places around the shadow in the video's median: the scene's texture
#   (granulation, pores, a penumbra), the photon noise and their correlation
#   at the shadow's own scale.  A shadow is *tested* where the two hypotheses
#   (present: the flat's depth; absent: none) lie at least ``2 z σ`` apart, and
#   is *missing* when the video's depth is nearer to none than to the flat's
#   (below ``keep_fraction`` of it).  A shadow the video does not light (the
#   sky beyond its limb) is not tested.
# * **a new shadow** (a speck arrived): a shadow of the video's own detection
#   outside the shared mask, deep in the video's median over the flat (``z₁ σ``
#   above the noise measured as above, ``z₁`` the threshold of one test), not the night's dust by the vote of
#   the other same-dust videos that can measure it (`new_by_vote`; none can: less than half as deep in the
#   shared median over the flat), and *static*: the motion test on the video's frames (the scene moves
#   under seeing, the dust stays) puts it on the sensor at ``z`` standard errors
#   (``(β_split − β) / σβ ≥ z``).  A dip of one video that its frames cannot
#   place on the sensor is its scene (a pore, a lane) as much as new dust, and
#   is not counted (``n_unverified`` says how many).
#
# `check_dust` is what the night's check task calls; `CheckOptions` groups its
# options.


#: Where the motion test's β turns from "stays on the sensor" (0) to "moves with the scene" (1).
BETA_SPLIT = 0.5
#: Fewest dust-free placements of a shadow's core and ring for its noise to be measured.
MIN_NULLS = 8


@dataclass(frozen=True)
class CheckOptions:
    """The options of the dust-change check (`check_dust`).

    Parameters
    ----------
    false_alarm : float
        Probability that a video whose dust matches is called a mismatch by
        chance, split over its tests (default 0.01).
    min_depth : float
        Shadows shallower than this in the flat are not tested (default 0.02).
    keep_fraction : float
        A shadow is present when the video shows at least this fraction of the
        flat's depth (default 0.5: the midpoint of present and absent).
    new_depth : float or None
        Least depth of a new shadow in the video's median over the flat
        (default ``2 * min_depth``).
    new_fraction : float
        A new shadow is less than this fraction as deep in the shared median
        over the flat as in the video's (default 0.5: the midpoint of dust
        every video shows, as deep there, and dust of this video alone, which
        moves the median of every video's frames a little only).
    max_missing, max_new : int
        Shadows missing and new shadows tolerated (default 0 and 0).

    Examples
    --------
    >>> CheckOptions(max_new=1).max_new, CheckOptions.from_dict({"min_depth": 0.03}).min_depth
    (1, 0.03)
    """

    false_alarm: float = 0.01
    min_depth: float = 0.02
    keep_fraction: float = 0.5
    new_depth: float = None
    new_fraction: float = 0.5
    max_missing: int = 0
    max_new: int = 0

    def __post_init__(self):
        if not 0 < float(self.false_alarm) < 1:
            raise InputError(f"false_alarm must be between 0 and 1, got {self.false_alarm!r}")

    @classmethod
    def from_dict(cls, options):
        """Options from a dict (``check_options`` of a night); an unknown key is an InputError."""
        options = dict(options or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise InputError(f"unknown check options: {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        return cls(**options)

    def z(self, n_tests):
        """The one-sided threshold, in standard errors, of each of ``n_tests`` tests."""
        from scipy.special import ndtri  # not scipy.stats: its import alone is ~40 MB of a worker's memory

        return float(-ndtri(float(self.false_alarm) / max(1, int(n_tests))))

    def as_dict(self):
        return asdict(self)


def check_dust(own_median, shared_median, dq, flat, *, frames=None, candidates=None, others=(), mem_limit=None,
               options=None, **thresholds):
    """Whether a video's dust matches the shared flat's (the module's two tests).

    Parameters
    ----------
    own_median : `~numpy.ndarray`
        The video's median (its own, or a cheap one of a frame subset).
    shared_median, dq, flat : `~numpy.ndarray`
        The shared median, its DQ mask and the flat.
    frames : frame source, optional
        Frames of the video, for the motion test of new shadows (without
        them no new shadow can be confirmed).
    candidates : `~astropy.table.Table`, optional
        The video's own detection catalog (``x_centroid``, ``y_centroid``,
        ``area``): the candidates of new shadows.  Default: the local
        detector on the video's median over the flat.
    others : sequence of `~numpy.ndarray`, optional
        The *other* videos' own medians (memory-mapped ``.npy`` files do:
        a neighbourhood of each candidate is read).  A candidate of a new
        shadow is voted on by those that can measure its depth
        (`new_by_vote`, all of them may vote here; the night lets only the
        videos of the same dust vote, from ``candidates`` of the result);
        none given, or none can: the shared median decides.
    mem_limit : int or str, optional
        Working-memory bound of the motion test's frame registration: it
        registers a central region of at most `registration_size` px a side.
        Default: the registration's own (1024 px).
    options : `CheckOptions` or dict, optional
        The tests' options; or give them as keywords (``min_depth=0.03``).

    Returns
    -------
    dict
        ``match`` (bool), ``n_tested``, ``n_missing``, ``n_new``,
        ``n_unverified``, ``missing`` and ``new`` (lists of ``[x, y]``),
        ``tested`` (``[label, x, y, present]`` of each tested shadow),
        ``shadows`` (each tested shadow's depths and noise),
        ``candidates`` (each candidate of a new shadow: place, depth, noise,
        depth in the shared median and in each of ``others``, ``static``),
        ``depth_ratio``
        (median of the video's depth over the flat's) and ``message``.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> y, x = np.mgrid[:96, :96]
    >>> shadow = (x - 48) ** 2 + (y - 48) ** 2 < 36
    >>> flat = np.where(shadow, 0.8, 1.0).astype(np.float32)
    >>> dq = shadow.astype(np.uint8)
    >>> sky = rng.normal(1000.0, 5.0, (96, 96))
    >>> check_dust(sky * flat, sky * flat, dq, flat)["match"]
    True
    >>> r = check_dust(sky, sky * flat, dq, flat)   # the speck was cleaned off
    >>> r["match"], r["n_missing"]
    (False, 1)
    """
    opts = _options(options, thresholds)
    own, ref = mono_frame(own_median), mono_frame(shared_median)
    flat, dq = np.asarray(flat, dtype=np.float64), np.asarray(dq)
    if own.shape != ref.shape or flat.shape != ref.shape or dq.shape != ref.shape:
        raise InputError(f"check_dust: shapes differ: {own.shape}, {ref.shape}, {flat.shape}, {dq.shape}")
    from .dq import DustDQ

    dust = (dq & int(DustDQ.DUST)) > 0
    shadows = _missing_test(own, ref, flat, dust, opts)
    tested = [[s["label"], s["x"], s["y"], s["present"]] for s in shadows]
    safe = np.where(flat > 0, flat, 1.0)
    found = _new_test(own / safe, ref / safe, list(others), safe, own, dust, opts, frames=frames,
                      candidates=candidates, mem_limit=mem_limit)
    new, unverified = new_shadows(found, [True] * len(others), opts)
    missing = [[s["x"], s["y"]] for s in shadows if not s["present"]]
    ratios = [s["depth"] / s["expected"] for s in shadows]
    return {"match": bool(len(missing) <= opts.max_missing and len(new) <= opts.max_new),
            "n_tested": len(tested), "n_missing": len(missing), "n_new": len(new), "n_unverified": unverified,
            "missing": missing, "new": new, "tested": tested, "shadows": shadows, "candidates": found,
            "depth_ratio": float(np.median(ratios)) if ratios else None,
            "message": check_message(len(tested), missing, new)}


def _options(options, thresholds):
    if options is not None and thresholds:
        raise TypeError("check_dust: give options= or the threshold keywords, not both")
    if isinstance(options, CheckOptions):
        return options
    return CheckOptions.from_dict(options if options is not None else thresholds)


def check_message(n_tested, missing, new, unconfirmed=0):
    """The one-line verdict: shadows tested, missing and new ones with their places."""
    parts = [f"{n_tested} shadows tested"]
    if unconfirmed:
        parts[0] += f" ({unconfirmed} not shown by most videos, not counted)"
    if missing:
        parts.append(f"{len(missing)} missing (at x, y {', '.join(f'{x:.0f} {y:.0f}' for x, y in missing[:5])})")
    if new:
        parts.append(f"{len(new)} new (at x, y {', '.join(f'{x:.0f} {y:.0f}' for x, y in new[:5])})")
    return "; ".join(parts)


# --------------------------------------------------------------------------- the noise of a depth

def _null_depths(image, core, ring, origin, blocked, *, radius):
    """Depths of the same core and ring moved to places around ``origin`` that no dust touches.

    ``core`` and ``ring`` are boolean masks of one window whose top-left
    corner is ``origin`` (row, column); the places are 12 directions at one
    and two ``radius`` (a move of ``radius`` takes the window off its own
    shadow).  Returns the depths measured there (finite ones only).
    """
    h, w = core.shape
    ny, nx = image.shape
    used = core | ring
    out = []
    for r in (radius, 2 * radius):
        for a in np.linspace(0, 2 * np.pi, 12, endpoint=False):
            y0, x0 = origin[0] + int(round(r * np.sin(a))), origin[1] + int(round(r * np.cos(a)))
            if y0 < 0 or x0 < 0 or y0 + h > ny or x0 + w > nx or blocked[y0:y0 + h, x0:x0 + w][used].any():
                continue
            d = _ring_depth(image[y0:y0 + h, x0:x0 + w], core, ring)
            if np.isfinite(d):
                out.append(d)
    return np.asarray(out)


def _noise(nulls):
    """Root mean square of the null depths about zero (NaN when too few).

    Not a robust spread: the scene's texture has heavy tails (a plage ridge
    or a pore under a shadow can hide or deepen it), and its offset from
    zero (a ring brighter than its core on average) is as much noise as its
    scatter.  A placement on a sunspot inflates it: that shadow's test then
    tells little, which is what such a neighbourhood allows.
    """
    if nulls.size < MIN_NULLS:
        return np.nan
    return float(np.sqrt(np.mean(nulls ** 2)))


def _depth_noise(image, core, ring, origin, blocked, *, radius):
    """σ of a depth: from the null placements (`_noise`), else from the ring's own scatter (`_ring_sigma`).

    A shadow too large for 8 dust-free placements around it (a soft disc of
    a third of the frame) gets the error of the ring's own scatter.
    """
    sigma = _noise(_null_depths(image, core, ring, origin, blocked, radius=radius))
    if np.isfinite(sigma):
        return sigma
    patch = image[origin[0]:origin[0] + core.shape[0], origin[1]:origin[1] + core.shape[1]]
    return _ring_sigma(patch, core, ring)


def _ring_sigma(patch, core, ring):
    """σ of a depth from its ring pixels' robust relative scatter s: ``1.25 s sqrt(1/n_core + 1/n_ring)``.

    Twice that for the texture's correlation between neighbouring pixels;
    NaN when the ring is dark or too small.  A ring across the limb (half
    disc, half sky) has a scatter of order one: its depth tells nothing.
    """
    values = patch[ring][np.isfinite(patch[ring])]
    level = np.median(values) if values.size >= 8 else 0.0
    if level <= 0 or not core.any():
        return np.nan
    spread = 1.4826 * np.median(np.abs(values / level - 1))
    return float(2 * 1.2533 * spread * np.sqrt(1 / core.sum() + 1 / values.size))


# --------------------------------------------------------------------------- a shadow missing

def _shadow_windows(dust):
    """Each shared shadow: ``(label, window, region, ring width)`` (the geometry of `_shadow_window`)."""
    labels, _ = ndimage.label(dust)
    for k, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None:
            continue
        size = max(sl[0].stop - sl[0].start, sl[1].stop - sl[1].start)
        win, _gap, width = _shadow_window(sl, dust.shape, size)
        yield k, win, labels[win] == k, width


def _missing_test(own, ref, flat, dust, opts):
    """Each shared shadow the video lights: depths, noise and whether it is there.

    The null hypothesis is that the dust matches: a shadow is missing only
    when its depth in the video is ``z σ`` below the flat's (that rejects it
    being there at the test's false-alarm rate) and nearer to none than to
    the flat's (below ``keep_fraction`` of it: a flat a little too deep is
    no missing speck).
    """
    blocked = ndimage.binary_dilation(dust, iterations=2)
    tested = [m for m in (_measure_shadow(own, ref, flat, blocked, k, win, region, width)
                          for k, win, region, width in _shadow_windows(dust))
              if m is not None and m["expected"] >= opts.min_depth]
    z = opts.z(len(tested))
    for m in tested:
        gone = m["expected"] - m["depth"] >= z * m["sigma"] and m["depth"] < opts.keep_fraction * m["expected"]
        m["present"] = not gone
    return tested


def _measure_shadow(own, ref, flat, blocked, k, win, region, width, gap=2):
    """Depth in the video, depth the flat predicts, noise (or None: not lit, no ring, no noise)."""
    core = region & (flat[win] <= np.median(flat[win][region]))
    inner = ndimage.binary_dilation(region, iterations=gap)
    ring = ndimage.binary_dilation(region, iterations=gap + width) & ~inner & ~blocked[win]
    if ring.sum() < 8 or not _lit(own[win], ref[win], ring):
        return None
    expected = _ring_depth(flat[win], core, ring)
    depth = _ring_depth(own[win], core, ring)
    origin = (win[0].start, win[1].start)
    sigma = _depth_noise(own, core, ring, origin, blocked, radius=max(region.shape))
    if not (np.isfinite(expected) and np.isfinite(depth) and np.isfinite(sigma)):
        return None
    cy, cx = ndimage.center_of_mass(region)
    return {"label": int(k), "x": round(float(cx) + win[1].start, 1), "y": round(float(cy) + win[0].start, 1),
            "depth": round(depth, 4), "expected": round(expected, 4), "sigma": round(sigma, 4)}


def _lit(own, ref, ring, fraction=0.5):
    """Whether the video's scene lights ``ring`` at least ``fraction`` as brightly as the shared median.

    A shadow over the sky (or off the disc) in this video cannot show its
    dust, so it is no evidence that the dust is missing.
    """
    a, b = own[ring], ref[ring]
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    return a.size >= 4 and b.size >= 4 and np.median(a) >= fraction * np.median(b)


# --------------------------------------------------------------------------- a new shadow

def _disk(shape, x, y, radius):
    """The window, core disc and ring of a candidate at ``(x, y)`` of ``radius``."""
    ny, nx = shape
    r_in, r_out = radius + 2, radius + 2 + max(3.0, radius)
    y0, y1 = max(0, int(y - r_out - 1)), min(ny, int(y + r_out + 2))
    x0, x1 = max(0, int(x - r_out - 1)), min(nx, int(x + r_out + 2))
    yy, xx = np.mgrid[y0:y1, x0:x1]
    d = np.hypot(xx - x, yy - y)
    return (slice(y0, y1), slice(x0, x1)), d <= max(1.0, 0.6 * radius), (d >= r_in) & (d <= r_out)


def _new_candidates(corrected, shared, others, safe, known, opts, candidates):
    """The candidates outside the shared mask deep above their noise in ``corrected``, with the others' view.

    The depth is tested at the one-test threshold ``z(1)``, the motion test
    (`_new_test`) at the Bonferroni one ``z(n)`` that is returned: a dip of
    the scene or of the noise that passes the first must still be placed on
    the sensor by the second, so the false-alarm rate is the motion test's;
    splitting it over the first too lost shallow specks on a textured disc
    (a 0.29 deep one against 3.4 σ of 0.088).  Each candidate is a dict:
    ``x``, ``y``, ``depth``, ``sigma``, ``shared`` (its depth in ``shared``,
    the shared median over the flat) and ``others`` (`_other_view` of each
    of the ``others``, the other videos' own medians, divided by ``safe``),
    and the private ``win``, ``core`` of the motion test.
    """
    grown = ndimage.binary_dilation(known, iterations=2) if known.any() else known
    rows = [r for r in (candidates if candidates is not None else ())
            if not grown[min(max(int(round(float(r["y_centroid"]))), 0), known.shape[0] - 1),
                         min(max(int(round(float(r["x_centroid"]))), 0), known.shape[1] - 1)]]
    z, z_depth = opts.z(len(rows)), opts.z(1)
    least = 2 * opts.min_depth if opts.new_depth is None else opts.new_depth
    out = []
    for row in rows:
        x, y = float(row["x_centroid"]), float(row["y_centroid"])
        radius = float(np.sqrt(max(float(row["area"]), 1.0) / np.pi))
        win, core, ring = _disk(corrected.shape, x, y, radius)
        ring = ring & ~grown[win]
        d_own, d_shared = _ring_depth(corrected[win], core, ring), _ring_depth(shared[win], core, ring)
        sigma = _depth_noise(corrected, core, ring, (win[0].start, win[1].start), grown,
                             radius=core.shape[0])
        if not np.isfinite(d_own) or d_own < least or not (np.isfinite(sigma) and d_own >= z_depth * sigma):
            continue
        views = [_other_view(o, safe, grown, win, core, ring) for o in others]
        out.append({"x": round(x, 1), "y": round(y, 1), "depth": round(d_own, 4), "sigma": round(sigma, 4),
                    "shared": None if not np.isfinite(d_shared) else round(d_shared, 4), "others": views,
                    "win": win, "core": core})
    return out, z


def _other_view(other, safe, blocked, win, core, ring):
    """``[depth, σ]`` of a candidate's core and ring in another video's median over the flat (None: no ring).

    σ is the larger of the null placements' (`_depth_noise`: the scene
    around the spot) and the ring's own scatter at the spot (`_ring_sigma`:
    a ring across the limb or a sunspot's edge).  Only a neighbourhood of the candidate is read (``other`` may be a
    memory-mapped median): the window and the null placements of
    `_depth_noise` around it, at one and two window sizes.
    """
    h, w = core.shape
    pad = 2 * h + 1
    ny, nx = safe.shape
    y0, x0 = max(0, win[0].start - pad), max(0, win[1].start - pad)
    area = (slice(y0, min(ny, win[0].stop + pad)), slice(x0, min(nx, win[1].stop + pad)))
    image = mono_frame(other[area]) / safe[area]
    origin = (win[0].start - y0, win[1].start - x0)
    patch = image[origin[0]:origin[0] + h, origin[1]:origin[1] + w]
    depth = _ring_depth(patch, core, ring)
    # the scene's noise around the spot, and the ring's own at the spot (the limb through it)
    sigma = max(_depth_noise(image, core, ring, origin, blocked[area], radius=h), _ring_sigma(patch, core, ring))
    if not (np.isfinite(depth) and np.isfinite(sigma)):
        return None
    return [round(depth, 4), round(sigma, 4)]


def new_by_vote(candidate, voters, opts):
    """Whether a candidate is new dust, from the other videos that can measure it (``voters``: which may vote).

    A video *can measure* the candidate when the two hypotheses, its depth
    (the night's dust the shared mask missed) and none (new dust of this
    video alone), lie at least ``2 z₁ σ`` apart in it (σ: the depth's noise
    there, `_other_view`); one whose ring there is the limb or a sunspot's
    edge cannot, and abstains.  The candidate is the night's dust when any
    of the videos that may vote and can measure it shows it nearer to its
    depth than to none (at least ``new_fraction`` of it), new dust
    otherwise.  When none can, the shared median decides as the only
    witness left: new when it shows less than ``new_fraction`` of the
    depth.  ``voters`` is one bool per entry of ``candidate["others"]``
    (the night: the videos whose shadows are all present, the same dust).

    Examples
    --------
    >>> c = {"depth": 0.3, "shared": 0.05, "others": [[0.28, 0.02], [0.0, 0.5]]}
    >>> new_by_vote(c, [True, True], CheckOptions()), new_by_vote(c, [False, True], CheckOptions())
    (False, True)
    """
    z1 = opts.z(1)
    least = opts.new_fraction * candidate["depth"]
    votes = [view[0] for view, may in zip(candidate["others"], voters)
             if may and view is not None and candidate["depth"] >= 2 * z1 * view[1]]
    if votes:
        return not any(d >= least for d in votes)
    shared = candidate.get("shared")
    return shared is None or shared < least


def _new_test(corrected, shared, others, safe, own, known, opts, *, frames=None, candidates=None,
              mem_limit=None):
    """The candidates of new dust (`_new_candidates`), each with ``static`` from the motion test.

    ``static`` is True when the motion test puts the candidate on the sensor
    at the Bonferroni threshold, False when it does not, None without frames.
    """
    found, z = _new_candidates(corrected, shared, others, safe, known, opts,
                               _with_dips(candidates, _dips(corrected, known, opts)))
    betas = _static_betas(frames, own, known, found, mem_limit=mem_limit) if found and frames is not None else None
    for k, cand in enumerate(found):
        cand.pop("win"), cand.pop("core")
        if betas is None:
            cand["static"] = None
            continue
        b, s = betas[k]
        cand["beta"], cand["sigma_beta"] = round(float(b), 4), round(float(s), 4)
        cand["static"] = bool(np.isfinite(b) and np.isfinite(s) and (BETA_SPLIT - b) >= z * max(s, 1e-3))
    return found


def new_shadows(candidates, voters, opts):
    """``(new, n_unverified)``: the static candidates that the vote calls new (`new_by_vote`), as ``[x, y]``,
    and how many the vote calls new that the motion test could not place on the sensor."""
    judged = [c for c in candidates if new_by_vote(c, voters, opts)]
    return [[c["x"], c["y"]] for c in judged if c["static"]], sum(1 for c in judged if not c["static"])


def _static_betas(frames, median, known, found, *, mem_limit=None):
    """``(β, σβ)`` of each candidate: the detector's motion test on the video's frames.

    The scene's shifts come from the registration of the frames (a night's
    videos hold the target under seeing; the disc centroids of a partial
    disc are not its motion).
    """
    from .detection.local.motion import motion_betas, open_source
    from .registration import register_frames

    class _Candidate:
        def __init__(self, win, core):
            self.sl, self.pix = win, core

    source, opened = open_source(frames, median.shape)
    try:
        size = {} if mem_limit is None else {"max_size": registration_size(mem_limit)}
        drift = register_frames(source, dust_mask=known if known.mean() < 0.1 else None,
                                max_frames=source.n_frames, n_reference=min(12, source.n_frames), **size)
        return motion_betas(source, np.asarray(drift.frame_index), np.asarray(drift.shifts, float),
                            median.astype(np.float32), [_Candidate(c["win"], c["core"]) for c in found])
    finally:
        if opened:
            source.close()


#: Working memory of `~aiflat_astro.registration.register_frames` a registered pixel (measured: 105 MB allocated
#: at the peak for 640 x 512 frames, whatever the number of frames).
REGISTER_BYTES_PER_PIXEL = 320


def registration_size(mem_limit):
    """The side (px) of the central region the check registers so that it keeps to ``mem_limit``.

    Between 128 and the registration's default 1024 px.

    Examples
    --------
    >>> registration_size("256MB"), registration_size("64MB"), registration_size("4GB")
    (894, 447, 1024)
    """
    from .utils._atomic import parse_size

    return int(min(1024, max(128, np.sqrt(parse_size(mem_limit) / REGISTER_BYTES_PER_PIXEL))))


def _dips(image, known, opts, *, size=31, most=30):
    """Dark spots of ``image`` (the video's median over the flat) off the shared dust: ``x, y, area`` rows.

    Whatever the video's own detector found or missed: each pixel's depth
    against a running median of ``size`` px (on a grid of every second
    pixel), over the lit part of the image; spots deeper than ``new_depth``
    and four times the image's robust depth noise at a local maximum, the
    ``most`` deepest.  The check's tests then decide which are new dust.
    """
    small = ndimage.median_filter(image[::2, ::2], size=max(3, size // 2), mode="nearest")
    background = np.repeat(np.repeat(small, 2, axis=0), 2, axis=1)[:image.shape[0], :image.shape[1]]
    lit = background > 0.3 * np.percentile(background, 99)
    if lit.sum() < 16:
        return []
    with np.errstate(invalid="ignore", divide="ignore"):
        depth = np.where(lit, 1 - image / np.where(lit, background, 1.0), 0.0)
    noise = 1.4826 * np.median(np.abs(depth[lit] - np.median(depth[lit])))
    least = max(2 * opts.min_depth if opts.new_depth is None else opts.new_depth, 4 * noise)
    # each local maximum of the depth is a spot (a speck on a dark lane is its own spot, not the lane's)
    smooth = ndimage.gaussian_filter(depth, 1.0)
    peaks = (smooth == ndimage.maximum_filter(smooth, size=11)) & (depth > least) & ~known
    ys, xs = np.nonzero(peaks)
    order = np.argsort(-depth[ys, xs])[:most]
    return [_spot(depth, int(ys[i]), int(xs[i])) for i in order]


def _spot(depth, y, x, reach=20):
    """The spot at a depth maximum ``(y, x)``: the centre and area of its pixels at least half as deep."""
    y0, x0 = max(0, y - reach), max(0, x - reach)
    patch = depth[y0:y + reach + 1, x0:x + reach + 1]
    labels, _ = ndimage.label(patch >= 0.5 * depth[y, x])
    px = labels == labels[y - y0, x - x0]
    cy, cx = ndimage.center_of_mass(px)
    return {"x_centroid": float(cx) + x0, "y_centroid": float(cy) + y0, "area": float(px.sum()),
            "peak": float(depth[y, x])}


def _with_dips(candidates, dips, near=4.0):
    """The catalog's candidates and the dips that none of them is within ``near`` px of."""
    rows = list(candidates) if candidates is not None else []
    xy = [(float(r["x_centroid"]), float(r["y_centroid"])) for r in rows]
    for d in dips:
        if all(np.hypot(d["x_centroid"] - x, d["y_centroid"] - y) > near for x, y in xy):
            rows.append(d)
    return rows
