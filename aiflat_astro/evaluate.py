"""Accuracy of aiflat products against simulated ground truth.

`evaluate_mask` scores a dust mask (a `~aiflat_astro.detection.DustDetection`,
a DQ array or ``mask.fits``) against the truth of a simulated video
(`aiflat_astro.datasets.make_dusty_video`): object recall and precision, false
shadows per megapixel and pixel IoU.  `evaluate_file` picks the evaluator from
the kind of product file (``aiflat evaluate``).
"""

import logging
from pathlib import Path

import numpy as np
from scipy import ndimage

from .dq import DustDQ
from .utils.exceptions import InputError

__all__ = ["evaluate_mask", "evaluate_file", "shadow_snr"]

log = logging.getLogger(__name__)

#: A detected object matches a true shadow when they share at least this
#: fraction of the smaller of the two.
MATCH_OVERLAP = 0.2


def _as_truth(truth):
    if isinstance(truth, (str, Path)):
        from .datasets import read_truth

        return read_truth(truth)
    if not hasattr(truth, "labels") or not hasattr(truth, "shadows"):
        raise InputError("truth must be a DustyVideoTruth or the path of a ground-truth FITS file")
    return truth


def _detected_objects(detection):
    """(labels of detected objects, DUST mask) from a detection, DQ array or mask path."""
    if isinstance(detection, (str, Path)):
        from .io.fits import read_mask

        detection = read_mask(detection)
    if hasattr(detection, "dq"):
        dust = detection.dust_mask
        labels = np.asarray(detection.labels) if detection.labels is not None else None
    else:
        dq = np.asarray(detection)
        if dq.dtype == bool:
            dust = dq
        else:
            dust = (dq.astype(np.int64) & DustDQ.DUST) > 0
        labels = None
    if labels is None or labels.shape != dust.shape or not np.array_equal(labels > 0, dust):
        labels, _ = ndimage.label(dust, structure=np.ones((3, 3), bool))
    return labels.astype(np.int32), dust


def shadow_snr(truth):
    """Depth of every true shadow over the per-pixel noise of the video's median.

    The noise of a median of ``n`` frames is 1.2533 σ/√n, with σ the shot,
    read and quantisation noise of one frame at the shadow's (un-dusted)
    signal level, taken from the simulation parameters.

    Parameters
    ----------
    truth : `~aiflat_astro.datasets.DustyVideoTruth`
        Ground truth.

    Returns
    -------
    `numpy.ndarray`
        One value per row of ``truth.shadows`` (infinite without noise).
    """
    p = truth.params
    n = max(int(p.get("n_frames", 1)), 1)
    snr = np.full(len(truth.shadows), np.inf)
    if p.get("noise", "none") in (None, "none") or not len(truth.shadows):
        return snr
    e_per_adu = float(p["e_per_adu"])
    rn_adu = float(p["read_noise"]) / e_per_adu
    for i, row in enumerate(truth.shadows):
        sel = truth.labels == int(row["id"])
        if not sel.any():
            continue
        signal = float(np.median((p["gain"] * truth.scene * truth.vignetting)[sel]))
        sigma = np.sqrt(max(signal, 0) / e_per_adu + rn_adu**2 + 1 / 12)
        noise = 1.2533 * sigma / np.sqrt(n) / max(signal, 1e-9)
        snr[i] = float(row["depth"]) / noise
    return snr


def evaluate_mask(detection, truth, *, min_depth_snr=5.0):
    """Object recall and precision and pixel IoU of a dust mask against ground truth.

    A detected object (a shadow of the catalog, or a connected group of DUST
    pixels) matches a true shadow when they overlap by at least 20 % of the
    smaller of the two.  Recall counts the true shadows deeper than
    ``min_depth_snr`` times the noise of the median (`shadow_snr`); a detection
    of a fainter true shadow is not a false one.

    Parameters
    ----------
    detection : `~aiflat_astro.detection.DustDetection`, `numpy.ndarray` or path
        The mask (a DQ array uses its DUST bit; a bool array is the dust mask).
    truth : `~aiflat_astro.datasets.DustyVideoTruth` or path
        Ground truth of the simulated video.
    min_depth_snr : float, optional
        Depth over noise above which a true shadow must be found; default 5.

    Returns
    -------
    dict
        ``n_true``, ``n_required`` (deeper than the limit), ``n_detected``,
        ``n_found`` (required shadows found), ``n_found_all``, ``n_false``,
        ``recall`` (of the required shadows; None when there are none),
        ``recall_all``, ``precision`` (1.0 with no detection),
        ``false_per_mpix``, ``pixel_iou`` (DUST pixels vs labelled pixels;
        None when both are empty), ``missed`` (ids of required shadows not found)
        and ``false_positions`` ((x, y) of false detections).

    Examples
    --------
    >>> import numpy as np
    >>> from types import SimpleNamespace
    >>> from astropy.table import Table
    >>> labels = np.zeros((100, 100), np.int32); labels[10:20, 10:20] = 1
    >>> truth = SimpleNamespace(labels=labels, shadows=Table({"id": [1], "depth": [0.1]}),
    ...                         params={"noise": "none"})
    >>> dq = np.zeros((100, 100), np.uint8); dq[11:21, 10:20] = 1; dq[50:53, 50:53] = 1
    >>> r = evaluate_mask(dq, truth)
    >>> r["recall"], r["n_false"], round(r["pixel_iou"], 2), round(r["false_per_mpix"])
    (1.0, 1, 0.76, 100)
    """
    truth = _as_truth(truth)
    det_labels, dust = _detected_objects(detection)
    true_labels = np.asarray(truth.labels)
    if det_labels.shape != true_labels.shape:
        raise InputError(f"mask shape {det_labels.shape} differs from the truth's {true_labels.shape}")
    ids = [int(i) for i in truth.shadows["id"]] if len(truth.shadows) else []
    snr = shadow_snr(truth) if ids else np.zeros(0)
    required = {i for i, s in zip(ids, snr) if s >= min_depth_snr}
    n_det = int(det_labels.max())
    det_area = np.bincount(det_labels.ravel(), minlength=n_det + 1)
    true_area = np.bincount(true_labels.ravel(), minlength=max(ids, default=0) + 1)
    # overlap counts of (detected, true) pairs
    both = (det_labels > 0) & (true_labels > 0)
    pairs = {}
    if both.any():
        keys, counts = np.unique(np.stack([det_labels[both], true_labels[both]]), axis=1, return_counts=True)
        for (d, t), c in zip(keys.T, counts):
            pairs[(int(d), int(t))] = int(c)
    matched_true, matched_det = set(), set()
    for (d, t), c in pairs.items():
        if c >= MATCH_OVERLAP * min(det_area[d], true_area[t]):
            matched_true.add(t)
            matched_det.add(d)
    present = [d for d in range(1, n_det + 1) if det_area[d] > 0]
    false = [d for d in present if d not in matched_det]
    centres = ndimage.center_of_mass(dust, det_labels, false) if false else []
    shape = true_labels.shape
    union = int(np.count_nonzero(dust | (true_labels > 0)))
    result = {
        "n_true": len(ids),
        "n_required": len(required),
        "n_detected": len(present),
        "n_found": len(required & matched_true),
        "n_found_all": len(matched_true),
        "n_false": len(false),
        "recall": len(required & matched_true) / len(required) if required else None,
        "recall_all": len(matched_true) / len(ids) if ids else None,
        "precision": (len(present) - len(false)) / len(present) if present else 1.0,
        "false_per_mpix": len(false) / (shape[0] * shape[1] / 1e6),
        "pixel_iou": int(np.count_nonzero(dust & (true_labels > 0))) / union if union else None,
        "min_depth_snr": float(min_depth_snr),
        "missed": sorted(required - matched_true),
        "false_positions": [[round(float(c[1]), 1), round(float(c[0]), 1)] for c in centres],
    }
    log.info("recall %s, %d false, IoU %s", result["recall"], result["n_false"], result["pixel_iou"])
    return result


def _product_kind(path):
    from astropy.io import fits

    try:
        with fits.open(path) as hdul:
            names = [h.name for h in hdul]
            primary = hdul[0]
            if primary.header.get("BITPIX") == 8 and "WEIGHT" in names:
                return "mask"
            if primary.header.get("BITPIX") == -32 and "DQ" in names:
                return "flat"
    except OSError as exc:
        raise InputError(f"cannot read {str(path)!r} as FITS: {exc}") from None
    raise InputError(f"{Path(path).name} is neither an aiflat mask nor an aiflat flat")


#: Evaluators by product kind: a function (product path, truth, **options) -> dict,
#: or "module:function" imported when needed.
EVALUATORS = {"mask": evaluate_mask, "flat": "aiflat_astro.flat:evaluate_flat"}


def evaluate_file(path, truth, **options):
    """Evaluate an aiflat product file (``mask.fits``, ``flat.fits``) against ground truth.

    Parameters
    ----------
    path : str or `pathlib.Path`
        The product.
    truth : str, `pathlib.Path` or `~aiflat_astro.datasets.DustyVideoTruth`
        Ground truth.
    **options
        Passed to the evaluator (for example ``min_depth_snr``).

    Returns
    -------
    dict
        The evaluator's figures plus ``product`` (the kind of file).
    """
    import inspect

    from .utils._lazy import resolve

    kind = _product_kind(path)
    if kind not in EVALUATORS:
        raise InputError(f"evaluating a {kind} file is not available in this version")
    func = resolve(EVALUATORS[kind], what=f"evaluating a {kind} file")
    accepted = inspect.signature(func).parameters
    options = {k: v for k, v in options.items() if k in accepted}   # e.g. min_depth_snr: masks only
    result = func(path, _as_truth(truth), **options)
    return {"product": kind, **result}
