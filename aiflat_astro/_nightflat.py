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
  transmission, δ: its rms distance from the videos' per-pixel median,
  ε = 0.003; the median over every video that measured the shadow, those
  flagged REVIEW there included), so that a video whose scene spoils the
  clean estimate of one shadow hardly counts there; a video that does not
  light a shadow (its flat is flagged REVIEW there) gets no weight.
"""

import numpy as np

__all__ = ["merge_detections", "combine_flats"]

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
    inside over the median of a ring around it, outside the halo of every
    shadow (``anydust``).  A median whose ring is less than half as bright as
    the brightest median's ring does not light the spot (sky beyond the limb).
    """
    from scipy import ndimage

    sl = ndimage.find_objects(region.astype(np.int32))[0]
    size = max(sl[0].stop - sl[0].start, sl[1].stop - sl[1].start)
    win, gap, width = _shadow_window(sl, region.shape, size)
    reg = region[win]
    inner = ndimage.binary_dilation(reg, iterations=gap)
    ring = ndimage.binary_dilation(reg, iterations=gap + width) & ~inner & ~anydust[win]
    levels = np.array([np.nanmedian(m[win][ring]) if ring.any() else np.nan for m in medians])
    depths = np.array([_ring_depth(m[win], reg, ring) for m in medians])
    lit = np.isfinite(levels) & (levels >= 0.5 * np.nanmax(levels, initial=0.0))
    return np.where(lit, depths, np.nan)


def _components(detection):
    """Each catalog shadow of a detection: (row, its DUST pixels, its pixels of weight > 0)."""
    from scipy import ndimage

    support, _ = ndimage.label(detection.weight > 0)
    for row in (detection.catalog if detection.catalog is not None else ()):
        dust = detection.labels == int(row["id"])
        if not dust.any():
            continue
        ids = np.unique(support[dust])
        yield row, dust, np.isin(support, ids[ids > 0]) | dust


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
    meds = [np.asarray(m, np.float64).mean(axis=-1) if np.ndim(m) == 3 else np.asarray(m, np.float64)
            for m in medians]
    anydust = np.zeros(meds[0].shape, bool)
    for det in detections:
        anydust |= (det.dq & int(DustDQ.DUST | DustDQ.DUST_HALO)) > 0
    dq = np.zeros(meds[0].shape, np.uint8)
    weight = np.zeros(meds[0].shape, np.float32)
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
            dq[support] |= det.dq[support] & np.uint8(~defects & 0xFF)
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

    δ is the distance from the per-pixel median of every video that
    measured the shadow (its flat differs from 1.0 there), those flagged
    REVIEW included: they vote on what the transmission is, they just get
    no weight in it.  With two usable videos that disagree, a third one's
    measurement tells which one its scene spoiled.
    """
    use = ~(unlit.mean(axis=1) > 0.5)
    if not use.any():
        use[:] = True
    measured = ~np.all(t == 1.0, axis=1)
    voters = measured if measured.sum() > use.sum() else use
    consensus = np.median(t[voters], axis=0)
    delta2 = np.mean((t - consensus) ** 2, axis=1)
    sigma2 = np.mean(u ** 2, axis=1)
    w = np.where(use, 1.0 / (sigma2 + delta2 + WEIGHT_FLOOR ** 2), 0.0)
    return w / w.sum()


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
