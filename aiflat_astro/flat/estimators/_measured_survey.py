"""The measured flat's survey of static dark features outside the dust mask (dust the detector missed).

Part of the measured flat (`aiflat_astro.flat.estimators.measured`); see
`_static_survey`.
"""

import logging

import numpy as np
from scipy import ndimage as ndi

from ..._imaging.robust import block_mean, robust_sigma
from ...io.frames import spread_indices
from ...registration import _binned_frames
from ._measured_solve import _nanmedian

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------
# survey: static dark features the dust mask missed
# ---------------------------------------------------------------------------
_SURVEY_FRAMES = 40
_SURVEY_SIZE = 512


def _static_survey(source, frame_index, shifts, known, *, nsigma=5.0, min_depth=0.005):
    """Find static dark features outside ``known``: dust the detector missed.

    A coarse version of the measurement over the whole frame, on a binned
    subset of frames: the scene is the median of the registered frames (the
    known dust left out), the sensor pattern the median of frame / shifted
    scene, divided by its large-scale shape.  Pixels darker than
    ``max(nsigma * noise, min_depth)`` there, outside the known dust, are
    returned (full resolution, dilated) with a list of features.
    Unmasked, such dust would contaminate the clean samples of the scene.

    Why not the project's detector (`aiflat_astro.detection.detect_dust`):
    the survey looks at another image, the static sensor pattern left once
    the registered scene is divided out, on binned frames, where the scene
    (granulation, spots, the limb) is gone and the only question is "darker
    than its smooth surroundings by more than the noise".  The detector
    works on the median, where it must tell dust from the scene (its
    hard negatives, the motion test); run on the pattern it would re-open the
    frames and re-register them.  The survey only *excludes* pixels from the
    clean samples; it never adds shadows to the catalogue.
    """
    shape = known.shape
    b = max(1, int(np.ceil(max(shape) / _SURVEY_SIZE)))
    pick = spread_indices(frame_index.size, _SURVEY_FRAMES) if frame_index.size else np.arange(0)
    if pick.size < 8:
        return np.zeros(shape, bool), []
    known_b = ndi.binary_dilation(block_mean(known.astype(np.float32), b) > 0, iterations=1)
    frames = list(_binned_frames(source, frame_index[pick], b))
    offsets = [shifts[i] / b for i in pick]
    scene = _survey_scene(frames, offsets, known_b)
    pattern = _survey_pattern(frames, offsets, scene)
    del frames
    keep, features = _dark_features(pattern, scene, known_b, b, nsigma=nsigma,
                                    min_depth=min_depth)
    if not features:
        return np.zeros(shape, bool), []
    full = np.zeros(shape, bool)
    up = np.repeat(np.repeat(keep, b, axis=0), b, axis=1)
    full[: up.shape[0], : up.shape[1]] = up
    # the faint tail of a shadow extends beyond its threshold crossing
    reach = [max(3.0, 0.5 * np.sqrt(f["area_px"] / np.pi)) for f in features]
    full = ndi.binary_dilation(full, iterations=int(np.ceil(max(reach))))
    log.info("survey: %d static dark feature(s) outside the dust mask excluded from the clean "
             "samples (possible undetected dust)", len(features))
    return full & ~known, features


def _survey_scene(frames, offsets, known_b):
    """The scene: median of the binned frames shifted onto it, the known dust left out."""
    stack = [ndi.shift(np.where(known_b, np.nan, frame), (-dy, -dx), order=1, mode="constant",
                       cval=np.nan) for frame, (dy, dx) in zip(frames, offsets, strict=True)]
    return _nanmedian(np.array(stack), axis=0)


def _survey_pattern(frames, offsets, scene):
    """The static sensor pattern: median over frames of frame / shifted scene (level 1)."""
    ratios = []
    for frame, (dy, dx) in zip(frames, offsets, strict=True):
        o_k = ndi.shift(np.nan_to_num(scene, nan=0.0), (dy, dx), order=1, mode="constant", cval=0)
        o_ok = ndi.shift(np.isfinite(scene).astype(np.float32), (dy, dx), order=1,
                         mode="constant", cval=0) > 0.999
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(o_ok & (o_k > 0), frame / o_k, np.nan)
        level = np.nanmedian(ratio) if np.isfinite(ratio).any() else np.nan
        ratios.append(ratio / level if np.isfinite(level) and level > 0 else ratio)
    return _nanmedian(np.array(ratios), axis=0)


def _dark_features(pattern, scene, known_b, b, *, nsigma, min_depth):
    """Pixels of ``pattern`` darker than its smooth shape by the threshold: ``(keep, features)``.

    Only on the bright scene (no sky beyond the limb), outside the known dust;
    features of at least 3 binned pixels, centroids in full-resolution pixels.
    """
    scene_level = np.nanmedian(scene) if np.isfinite(scene).any() else 0.0
    valid = np.isfinite(pattern) & ~known_b
    if valid.sum() < 100 or not np.isfinite(scene_level) or scene_level <= 0:
        return np.zeros(pattern.shape, bool), []
    bright = np.nan_to_num(scene, nan=0.0) > 0.1 * scene_level
    # the large-scale shape (vignetting, level) from the valid pixels only
    sigma = max(4.0, 32.0 / b)
    w = valid.astype(np.float64)
    smooth = (ndi.gaussian_filter(np.where(valid, pattern, 0.0), sigma, mode="nearest")
              / np.maximum(ndi.gaussian_filter(w, sigma, mode="nearest"), 1e-6))
    rel = np.where(valid, pattern / smooth, np.nan)
    rel_s = (ndi.gaussian_filter(np.nan_to_num(rel - 1.0), 1.0)
             / np.maximum(ndi.gaussian_filter(w, 1.0), 1e-6))
    threshold = max(nsigma * robust_sigma(rel_s[valid]), min_depth)
    lab, _ = ndi.label(valid & (rel_s < -threshold) & bright)
    features = []
    keep = np.zeros(pattern.shape, bool)
    for k, sl in enumerate(ndi.find_objects(lab), start=1):
        sel = lab[sl] == k
        if sel.sum() < 3:
            continue
        keep[sl] |= sel
        ys, xs = np.nonzero(sel)
        features.append({"x_centroid": round(float((xs.mean() + sl[1].start + 0.5) * b - 0.5), 2),
                         "y_centroid": round(float((ys.mean() + sl[0].start + 0.5) * b - 0.5), 2),
                         "area_px": int(sel.sum() * b * b),
                         "depth": round(float(-rel_s[sl][sel].min()), 5)})
    return keep, features


def _survey_static_dust(source, drift, maps, opts):
    """Dust the detector missed (`_static_survey`), added to ``maps``; its list."""
    if not (opts.survey and drift.extent[0] >= 5.0):  # without drift everything looks static
        return []
    extra, static_features = _static_survey(source, np.asarray(drift.frame_index),
                                            np.asarray(drift.shifts), maps.excl)
    if static_features:
        maps.add(extra)
    return static_features
