"""`LocalDustDetector`: the offline eye, from the median alone or with the frames."""

import logging

import numpy as np
from astropy.table import Table
from scipy import ndimage

from ...dq import DustDQ
from ...io.frames import spread_indices
from ...registration import median_pair_distance
from ...utils.exceptions import InputError, renamed_keyword
from ...products import DustDetection, empty_catalog
from .._protocol import DustDetector
from . import motion
from .candidates import extract, family, merge_scales, scale_diameters, scale_maps
from .scoring import BETA_SPLIT, BETA_SPLIT_STATIC, released_children, score
from .shape import CONTEXT_STEP, describe, footprint

__all__ = ["LocalDustDetector", "expected_diameters"]

log = logging.getLogger(__name__)

#: Distances (mm) of dust in front of the focal plane that the size prior allows:
#: sensor cover glass and windows (0.5–7 mm) to filters (10–30 mm).
DUST_DISTANCE_MM = (0.5, 30.0)
#: Seeds are this far (px) inside the limb at least: the limb band (seeing-blurred, drift-smeared,
#: spicules) is scene, and the backgrounds are least sure there.
LIMB_MARGIN = 8.0
#: Pixels this many sigmas brighter than their background (and their neighbours) seed no candidate.
BRIGHT_SIGMA = 8.0
#: ... nor do pixels within this many pixels of them (a star's wings, a cosmic ray's halo),
BRIGHT_GROW = 8
#: ... when the bright region is compact (a star, a hot pixel): extended bright scene (plage ridges,
#: faculae) is no reason to leave the specks beside it unseen.
BRIGHT_MAX_AREA = 150
#: ... and a point source: at least twice as bright as its background somewhere (a star on the sky,
#: a hot pixel, a cosmic ray).  A bright granule, a facula or a plage point on a solar disc is a
#: few tens of per cent above its surroundings and hides no speck beside it.
BRIGHT_CONTRAST = 1.0
#: Hysteresis: a candidate region extends down to this many sigmas around its seeds.
K_LOW = 2.5


def expected_diameters(f_ratio, pixel_size, *, distance_mm=DUST_DISTANCE_MM):
    """Range of dust-shadow diameters (pixels) for the given optics.

    ``D = Δz / (N p)`` for dust at the distances ``distance_mm`` (Δz) from the
    focal plane.

    Parameters
    ----------
    f_ratio : float
        Focal ratio N.
    pixel_size : float
        Pixel size in µm.
    distance_mm : tuple of float, optional
        Nearest and farthest dust distance in mm; default (0.5, 30).

    Returns
    -------
    tuple of float
        ``(d_min, d_max)`` in pixels.

    Examples
    --------
    >>> [round(d, 1) for d in expected_diameters(30, 3.75)]
    [4.4, 266.7]
    """
    lo, hi = distance_mm
    return lo * 1e3 / (f_ratio * pixel_size), hi * 1e3 / (f_ratio * pixel_size)


class LocalDustDetector(DustDetector):
    """Offline dust detector: darkness at several scales, a model of dust, and the motion test.

    Parameters
    ----------
    threshold : float, optional
        Seed threshold of a candidate, in robust sigmas of the smoothed
        darkness at its scale; default 4.
    accept : float, optional
        Candidates with a confidence at or above this are dust; default 0.5.
    review_below : float, optional
        Accepted shadows with a confidence below this get the REVIEW bit;
        default 0.8.
    min_diameter, max_diameter : float, optional
        Range of shadow diameters (pixels) to search.  Defaults: 3 px and 60 %
        of the smaller side (at most 400), or the range implied by ``f_ratio``
        and ``pixel_size`` (dust 0.5–30 mm from the focal plane) when both are
        given.
    max_frames : int, optional
        At most this many frames, spread over the video, are read for the
        motion test; default 24.
    progress_bar : bool, optional
        Show a progress bar while registering frames.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> y, x = np.mgrid[:96, :96]
    >>> img = 500 * (1 - 0.1 * (np.hypot(y - 48, x - 48) < 9)) + rng.normal(0, 2, (96, 96))
    >>> det = LocalDustDetector()(img)
    >>> len(det.catalog), int(det.catalog["equivalent_diameter"][0].round())
    (1, 18)
    """

    name = "local"

    def __init__(self, *, threshold=4.0, accept=0.5, review_below=0.8, min_diameter=None,
                 max_diameter=None, max_frames=24, progress_bar=False):
        if not threshold > 0:
            raise InputError(f"threshold must be positive, got {threshold!r}")
        if not 0 <= accept <= review_below <= 1:
            raise InputError("need 0 <= accept <= review_below <= 1")
        if not int(max_frames) >= 2:
            raise InputError(f"max_frames must be at least 2, got {max_frames!r}")
        self.threshold = float(threshold)
        self.accept = float(accept)
        self.review_below = float(review_below)
        self.min_diameter = min_diameter
        self.max_diameter = max_diameter
        self.max_frames = int(max_frames)
        self.progress_bar = bool(progress_bar)

    def _size_range(self, shape, f_ratio, pixel_size):
        lo, hi = 3.0, min(0.6 * min(shape), 400.0)
        optics = f_ratio is not None and pixel_size is not None
        if optics:
            elo, ehi = expected_diameters(f_ratio, pixel_size)
            lo, hi = max(lo, 0.7 * elo), min(hi, 1.3 * ehi)
        if self.min_diameter is not None:
            lo = max(3.0, float(self.min_diameter))
        if self.max_diameter is not None:
            hi = float(self.max_diameter)
        if hi < lo:
            raise InputError(f"no shadow size to search: diameters {lo:.1f}-{hi:.1f} px "
                             f"(check f_ratio, pixel_size and the image size)")
        return lo, hi, optics

    def __call__(self, median, *, frames=None, ignore=None, f_ratio=None, pixel_size=None, mask=None):
        if mask is not None:
            ignore = renamed_keyword("LocalDustDetector", "mask", "ignore", mask, given=ignore)
        data = np.array(getattr(median, "data", median), dtype=np.float32)
        if data.ndim != 2:
            raise InputError(f"the median must be a 2-D image, got shape {data.shape}")
        if ignore is not None and np.shape(ignore) != data.shape:
            raise InputError(f"ignore shape {np.shape(ignore)} differs from the median's {data.shape}")
        if frames is not None:      # fail before the work
            source, own = motion.open_source(frames, data.shape)
            if own:
                source.close()
        d_lo, d_hi, _ = self._size_range(data.shape, f_ratio, pixel_size)
        valid, has_limb, edge = _usable(data, ignore)
        cands, n_scales = self._candidates(data, valid, edge, d_lo, d_hi, has_limb)
        params = {"THRESH": self.threshold, "NSCALES": n_scales, "DMIN": round(float(d_lo), 2),
                  "DMAX": round(float(d_hi), 2)}
        used, summary = False, None
        if frames is not None and cands:
            used, summary, cands = self._motion(frames, data, cands, d_lo, d_hi)
            params["NFRMOT"] = int(summary["n_frames_used"]) if used else 0
            params["STATMAP"] = bool(used and summary["method"] == "offsets")
        split = BETA_SPLIT_STATIC if params.get("STATMAP") else BETA_SPLIT
        cands = self._judge(cands, has_limb=has_limb, frames_used=used, beta_split=split)
        return self._build(data, cands, f_ratio=f_ratio, pixel_size=pixel_size, params=params,
                           used_frames=used, motion_summary=summary)

    def _judge(self, cands, *, has_limb, frames_used, beta_split):
        """Score the candidates; a rejected one gives way to the ones it replaced (`released_children`).

        Returns every candidate judged (the accepted ones and the rejected ones).
        """
        out = []
        for c in cands:
            score(c, has_limb=has_limb, frames_used=frames_used, beta_split=beta_split)
            log.debug("candidate y=%.0f x=%.0f core=%.0f d=%.1f depth=%.3f z=%.1f beta=%.2f+-%.2f "
                      "conf=%.2f %s",
                      c.y, c.x, c.core_area, c.diameter, c.depth, c.z, c.beta, c.beta_sigma,
                      c.confidence, c.terms)
            out.append(c)
            if c.confidence < self.accept:
                out.extend(self._judge(released_children(c, frames_used=frames_used), has_limb=has_limb,
                                       frames_used=frames_used, beta_split=beta_split))
        return out

    def _candidates(self, data, valid, edge, d_lo, d_hi, has_limb):
        """Candidates of every scale, described, merged and given their DUST footprint; the number of scales.

        The scales' maps are freed on return: the motion test that follows
        (registration) is the detector's largest use of memory.
        """
        diameters = scale_diameters(d_lo, d_hi)
        maps = [None] * len(diameters)
        _compute_scales(maps, data, valid, diameters, 0)
        # dark pixels beside a strongly bright one (a star, a cosmic ray, a hot pixel) are its
        # ringing or its background's dip, not a shadow
        bright = point_sources(maps[0], BRIGHT_SIGMA, BRIGHT_MAX_AREA, BRIGHT_CONTRAST)
        bright = ndimage.binary_dilation(bright, iterations=BRIGHT_GROW)
        level = float(np.median(data[valid])) if valid.any() else None
        per_scale = []
        for k, d in enumerate(diameters):
            _compute_scales(maps, data, valid, diameters, k)
            margin = max(LIMB_MARGIN, 0.25 * d + 3) if has_limb else 2.0
            d_min = d_lo if k == 0 else diameters[k - 1] / 1.4
            d_cap = 1.15 * d if k < len(diameters) - 1 else 1.3 * d
            cands = extract(maps[k], valid & (edge > margin) & ~bright, index=k, d_min=d_min, d_cap=d_cap,
                            k_hi=self.threshold, k_lo=K_LOW, min_seed=2 if k == 0 else 3)
            per_scale.append([describe(maps, k, c, edge, disc_level=level) for c in cands])
            maps[k] = maps[k].slim()
        merged = merge_scales(per_scale)
        for c in family(merged):
            c.pix = footprint(maps[c.scale_index], c)
            c.area = float(c.pix.sum())
            c.diameter = float(np.sqrt(4 * ndimage.binary_fill_holes(c.pix).sum() / np.pi))
        log.debug("local detector: %d candidates on %d scales", len(merged), len(maps))
        return merged, len(maps)

    def _motion(self, frames, data, cands, d_lo, d_hi):
        """β of every candidate from the frames; (frames used, a summary, the candidates).

        For a scene moved by more than the shadows' size (an off-pointed set), the
        median mixes disc and sky; the candidates are then taken from the frames'
        sensor-fixed transmission (`motion.static_transmission`) instead.
        """
        source, own = motion.open_source(frames, data.shape)
        try:
            if source.n_frames < 2:
                return False, None, cands
            idx = spread_indices(source.n_frames, self.max_frames)
            dust = np.zeros(data.shape, bool)
            for c in cands:
                dust[c.sl] |= c.pix
            dust = ndimage.binary_dilation(dust, iterations=3)
            idx, shifts, method = motion.scene_shifts(source, idx, dust, progress_bar=self.progress_bar)
            if method == "offsets":
                trans, covered = motion.static_transmission(source, idx)
                valid, has_limb, edge = _usable(np.nan_to_num(trans), ~covered)
                cands, _ = self._candidates(np.nan_to_num(trans), valid, edge, d_lo, min(d_hi, 60.0), has_limb)
            every = family(cands)
            betas = motion.motion_betas(source, idx, shifts, data, every)
            for c, (beta, sigma) in zip(every, betas):
                c.beta, c.beta_sigma = beta, sigma
        finally:
            if own:
                source.close()
        rms = float(np.sqrt(np.mean(np.sum((shifts - np.median(shifts, axis=0)) ** 2, axis=1))))
        return True, {"n_frames_used": int(len(idx)), "method": method, "rms_px": round(rms, 3),
                      "pair_px": round(median_pair_distance(shifts), 3)}, cands

    def _build(self, data, cands, *, f_ratio, pixel_size, params, used_frames, motion_summary):
        """The `DustDetection`: accepted shadows into DQ, labels and catalog; the rest rejected."""
        shape = data.shape
        dq = np.zeros(shape, np.uint8)
        labels = np.zeros(shape, np.int32)
        with_distance = f_ratio is not None and pixel_size is not None
        catalog = empty_catalog(with_distance=with_distance)
        accepted = sorted((c for c in cands if c.confidence >= self.accept), key=lambda c: (c.y, c.x))
        n = 0
        for c in accepted:
            pix = c.pix & (labels[c.sl] == 0)
            if not pix.any():
                continue
            n += 1
            labels[c.sl][pix] = n
            review = c.confidence < self.review_below
            dq[c.sl][pix] |= np.uint8(DustDQ.DUST | (DustDQ.REVIEW if review else 0))
            row = {"id": n, "x_centroid": c.x, "y_centroid": c.y, "area": float(pix.sum()),
                   "equivalent_diameter": c.diameter, "depth": c.depth, "confidence": c.confidence,
                   "review": review, "method": self.name}
            if with_distance:
                row["distance_mm"] = c.diameter * pixel_size * f_ratio * 1e-3
            catalog.add_row([row[k] for k in catalog.colnames])
        prov = {"detector": self.name, "params": dict(params),
                "history": [f"local dust detector: {n} shadows from {len(cands)} candidates"
                            + (" (motion test on the frames)" if used_frames else " (median only)")]}
        if motion_summary is not None:
            prov["motion"] = motion_summary
        log.info("local detector: %d candidates, %d accepted", len(cands), n)
        return DustDetection(dq=dq, weight=(dq > 0).astype(np.float32), catalog=catalog,
                             detector=self.name, provenance=prov, labels=labels,
                             rejected=_rejected_table(c for c in cands if c.confidence < self.accept))


def compact(mask, max_area):
    """The connected regions of ``mask`` of at most ``max_area`` pixels."""
    lab, n = ndimage.label(mask)
    if n == 0:
        return mask
    sizes = np.bincount(lab.ravel())
    small = sizes <= max_area
    small[0] = False
    return small[lab]


def point_sources(maps, k_sigma, max_area, contrast):
    """Compact regions over ``k_sigma`` sigmas bright holding a pixel ``contrast`` above its background.

    Stars, hot pixels and cosmic rays: the dark pixels beside them (ringing, the
    background's dip) are no shadow.  Scene brightenings of a disc (granules,
    faculae, plage points) are far below a point source's contrast.
    """
    regions = compact(maps.z < -k_sigma, max_area)
    lab, n = ndimage.label(regions)
    if n == 0:
        return regions
    strong = np.bincount(lab[maps.darkness < -contrast], minlength=n + 1) > 0
    strong[0] = False
    return strong[lab]


def _compute_scales(maps, data, valid, diameters, k):
    """Fill ``maps[k:k + CONTEXT_STEP + 1]`` (what scale ``k``'s candidates are described with).

    The scales are computed as the search reaches them and slimmed once done
    (`~.candidates.ScaleMaps.slim`), so at most ``CONTEXT_STEP + 1`` scales are
    held whole at a time.
    """
    for j in range(k, min(k + CONTEXT_STEP + 1, len(diameters))):
        if maps[j] is None:
            maps[j] = scale_maps(data, valid, diameters[j])


def _usable(data, ignore):
    """Usable pixels (finite, not a static defect, not ignored, on the disc), limb flag, edge distance."""
    from ...dq import static_defects

    bad = ~np.isfinite(data) | ndimage.binary_dilation(static_defects(data) > 0)
    if ignore is not None:
        bad |= np.asarray(ignore, bool)
    from .background import valid_region

    valid, has_limb = valid_region(data, bad)
    inside = np.pad(valid, 1, constant_values=True)     # the frame border is not a limb
    edge = ndimage.distance_transform_edt(inside)[1:-1, 1:-1].astype(np.float32)
    return valid, has_limb, edge


def _rejected_table(rejected):
    """The rejected candidates with the term that weighed most against them."""
    rows = [(c.x, c.y, c.diameter, c.depth, c.confidence, min(c.terms, key=c.terms.get), c.beta)
            for c in sorted(rejected, key=lambda c: -c.confidence)]
    return Table(rows=rows or None,
                 names=("x_centroid", "y_centroid", "equivalent_diameter", "depth", "confidence",
                        "reason", "beta"),
                 dtype=("f8", "f8", "f8", "f8", "f8", "U32", "f8"))
