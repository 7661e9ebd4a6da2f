"""Accuracy of aiflat products against simulated ground truth.

`evaluate_mask` scores a dust mask (a `~aiflat_astro.detection.DustDetection`,
a DQ array or ``mask.fits``) against the truth of a simulated video
(`aiflat_astro.datasets.make_dusty_video`): object recall and precision, false
shadows per megapixel and pixel IoU.  `evaluate_file` picks the evaluator from
the kind of product file (``aiflat evaluate``).  `shadow_contrast` and
`residual_contrast` measure the dust left in an image without any ground
truth, from a given dust mask (the figure used on real data).
"""

import logging
from pathlib import Path

import numpy as np
from scipy import ndimage

from .dq import DustDQ
from .utils.exceptions import InputError, renamed_keyword

__all__ = ["evaluate_mask", "evaluate_file", "shadow_snr", "shadow_contrast", "residual_contrast",
           "mask_from_flat", "flat_errors"]

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


# --------------------------------------------------------------------------------------
# dust left in an image, without ground truth (real data)
# --------------------------------------------------------------------------------------
def _robust_plane(ys, xs, values, nsigma=3.0, max_iter=5):
    """Plane ``a + b y + c x`` fitted by least squares with iterative ``nsigma`` clipping."""
    y0, x0 = ys.mean(), xs.mean()
    terms = np.stack([np.ones(ys.size), ys - y0, xs - x0], axis=-1)
    good = np.ones(values.size, dtype=bool)
    coef = np.zeros(3)
    for _ in range(max_iter):
        coef, *_ = np.linalg.lstsq(terms[good], values[good], rcond=None)
        resid = values - terms @ coef
        sigma = 1.4826 * np.median(np.abs(resid[good] - np.median(resid[good])))
        new = np.abs(resid) <= nsigma * max(sigma, np.finfo(float).tiny)
        if new.sum() < 10 or np.array_equal(new, good):
            break
        good = new
    return lambda yy, xx: coef[0] + coef[1] * (yy - y0) + coef[2] * (xx - x0)


def shadow_contrast(image, dust_mask, *, ring=3, plane_width=None, ignore=None, exclude=None):
    """Contrast of each dust shadow in an image against a local plane fitted outside it.

    For every connected shadow of ``dust_mask`` (its *core*), the shadow is
    the core grown by ``ring`` px (so a bright Fresnel ring just outside the
    dark core counts).  A plane ``a + b y + c x`` is fitted robustly (3-σ
    clipping) to the pixels between ``ring`` and ``ring + plane_width`` px
    from the core (other shadows, ``ignore`` and non-finite pixels left
    out), and the shadow's contrast is the rms of ``image / plane - 1`` over
    its pixels.  A perfectly corrected shadow on a smooth scene gives 0; the
    scene's own texture sets the floor.

    Parameters
    ----------
    image : `~numpy.ndarray` or `~astropy.nddata.CCDData`
        2-D image (a median, a frame, or either divided by a flat).
    dust_mask : `~numpy.ndarray` of bool, or uint8 DQ
        The dust cores (a DQ array uses its ``DUST`` bit).
    ring : int, optional
        Width in px of the ring added around each core (default 3).
    plane_width : float, optional
        Width in px of the annulus the plane is fitted to; default
        ``max(5, equivalent radius of the core)``.
    ignore : `~numpy.ndarray` of bool, optional
        Pixels not to use for the plane (and not counted in a shadow).
    exclude : `~numpy.ndarray` of bool, optional
        Deprecated name of ``ignore``.

    Returns
    -------
    dict
        ``rms``: the rms over shadows of the per-shadow contrasts (NaN with
        no shadow); ``per_shadow``: float array, one contrast per shadow
        (NaN where the plane could not be fitted); ``labels``: the int32
        shadow labels (core), ``centres``: (row, col) of each core;
        ``n_pixels``: pixels per shadow (core plus ring).

    Raises
    ------
    InputError
        Shapes that differ, or an image that is not 2-D.

    Examples
    --------
    >>> import numpy as np
    >>> y, x = np.mgrid[0:60, 0:60]
    >>> img = 1000.0 + 2 * x + y
    >>> core = np.hypot(y - 30, x - 30) < 5
    >>> dusty = np.where(core, 0.8 * img, img)
    >>> round(float(shadow_contrast(dusty, core)["rms"]), 3)
    0.125
    >>> float(shadow_contrast(img, core)["rms"]) < 1e-12
    True
    """
    data = np.asarray(getattr(image, "data", image), dtype=np.float64)
    if data.ndim != 2:
        raise InputError(f"shadow_contrast needs a 2-D image, got shape {data.shape}")
    arr = np.asarray(dust_mask)
    if arr.shape != data.shape:
        raise InputError(f"dust mask shape {arr.shape} does not match the image shape {data.shape}")
    core = arr if arr.dtype == bool else (arr.astype(np.int64) & DustDQ.DUST) > 0
    if int(ring) < 0:
        raise InputError(f"ring must be >= 0, got {ring}")
    bad = ~np.isfinite(data)
    if exclude is not None:
        ignore = renamed_keyword("shadow_contrast", "exclude", "ignore", exclude, given=ignore)
    if ignore is not None:
        ignore = np.asarray(ignore, dtype=bool)
        if ignore.shape != data.shape:
            raise InputError(f"ignore shape {ignore.shape} does not match the image shape {data.shape}")
        bad |= ignore
    labels, n = ndimage.label(core, structure=np.ones((3, 3), bool))
    grown = ndimage.distance_transform_edt(~core) <= ring if n else np.zeros(core.shape, bool)
    per, npx, centres = np.full(n, np.nan), np.zeros(n, int), []
    for k, sl in enumerate(ndimage.find_objects(labels), start=1):
        mine = labels[sl] == k
        width = float(plane_width) if plane_width is not None else max(5.0, np.sqrt(mine.sum() / np.pi))
        pad = int(np.ceil(ring + width)) + 1
        y0, y1 = max(sl[0].start - pad, 0), min(sl[0].stop + pad, data.shape[0])
        x0, x1 = max(sl[1].start - pad, 0), min(sl[1].stop + pad, data.shape[1])
        win = (slice(y0, y1), slice(x0, x1))
        dist = ndimage.distance_transform_edt(labels[win] != k)
        shadow = (dist <= ring) & ~bad[win]
        annulus = (dist > ring) & (dist <= ring + width) & ~grown[win] & ~bad[win]
        cy, cx = np.nonzero(labels[win] == k)
        centres.append((float(cy.mean() + y0), float(cx.mean() + x0)))
        npx[k - 1] = int(shadow.sum())
        ay, ax = np.nonzero(annulus)
        if ay.size < 10 or not shadow.any():
            continue
        plane = _robust_plane(ay.astype(float), ax.astype(float), data[win][annulus])
        sy, sx = np.nonzero(shadow)
        level = plane(sy.astype(float), sx.astype(float))
        if np.any(level <= 0):
            continue
        per[k - 1] = float(np.sqrt(np.mean((data[win][shadow] / level - 1.0) ** 2)))
    ok = np.isfinite(per)
    rms = float(np.sqrt(np.mean(per[ok] ** 2))) if ok.any() else float("nan")
    return {"rms": rms, "per_shadow": per, "labels": labels.astype(np.int32), "centres": np.array(centres),
            "n_pixels": npx}


def residual_contrast(corrected, uncorrected, dust_mask, *, ring=3, plane_width=None, ignore=None, exclude=None):
    """Fraction of the shadows' contrast left after a correction (`shadow_contrast` of both).

    Parameters
    ----------
    corrected, uncorrected : `~numpy.ndarray`
        The image divided by the flat, and the image itself.
    dust_mask : `~numpy.ndarray`
        The dust cores (bool, or a DQ array's ``DUST`` bit).
    ring, plane_width, ignore
        As in `shadow_contrast`.
    exclude : `~numpy.ndarray` of bool, optional
        Deprecated name of ``ignore``.

    Returns
    -------
    dict
        ``residual``: rms contrast of ``corrected`` over that of
        ``uncorrected`` (0: all dust removed, 1: nothing done);
        ``per_shadow``: the same ratio per shadow; ``corrected`` and
        ``uncorrected``: the two `shadow_contrast` rms values.

    Examples
    --------
    >>> import numpy as np
    >>> y, x = np.mgrid[0:60, 0:60]
    >>> img = 1000.0 + 2 * x + y
    >>> core = np.hypot(y - 30, x - 30) < 5
    >>> t = np.where(core, 0.8, 1.0)
    >>> half = 1 - 0.5 * (1 - t)                      # a flat that removes half the shadow
    >>> round(residual_contrast(img * t / half, img * t, core)["residual"], 2)
    0.56
    """
    if exclude is not None:
        ignore = renamed_keyword("residual_contrast", "exclude", "ignore", exclude, given=ignore)
    after = shadow_contrast(corrected, dust_mask, ring=ring, plane_width=plane_width, ignore=ignore)
    before = shadow_contrast(uncorrected, dust_mask, ring=ring, plane_width=plane_width, ignore=ignore)
    with np.errstate(divide="ignore", invalid="ignore"):
        per = after["per_shadow"] / before["per_shadow"]
    return {"residual": after["rms"] / before["rms"] if before["rms"] > 0 else float("nan"),
            "per_shadow": per, "corrected": after["rms"], "uncorrected": before["rms"]}


def mask_from_flat(flat, positions, *, min_depth=0.1, grow=2, search=70, annulus=(40, 60)):
    """A dust mask from a measured flat (a gain table) around known dust positions.

    For each position a plane is fitted robustly to the flat on an annulus
    around it (``annulus`` radii in px, clear of the shadow), the depth is
    ``1 - flat / plane``, and the shadow is the connected set of pixels
    deeper than ``min_depth`` that holds the deepest pixel within 3 px of the
    position, grown by ``grow`` px (towards the bright ring just outside the
    dark core).  Used to give the hand a mask that no detector made (for
    example from the paper's own flat of the real ``xu2016`` set).

    Parameters
    ----------
    flat : `~numpy.ndarray`
        2-D flat or gain table, any scale.
    positions : array-like, shape (n, 2)
        Approximate (row, col) of each shadow.
    min_depth : float, optional
        Depth threshold relative to the local plane (default 0.1).
    grow : int, optional
        Pixels the mask is grown by, with a disc (default 2).
    search : int, optional
        Half size in px of the window examined around each position (default 70).
    annulus : (float, float), optional
        Inner and outer radius in px of the plane's annulus (default 40, 60).

    Returns
    -------
    `~numpy.ndarray` of bool
        The mask (True = dust).

    Raises
    ------
    InputError
        A flat that is not 2-D, positions outside it, or a position with no
        pixel deeper than ``min_depth``.

    Examples
    --------
    >>> import numpy as np
    >>> y, x = np.mgrid[0:200, 0:200]
    >>> flat = 100 + 0.1 * x - 30 * (np.hypot(y - 90, x - 110) < 10)
    >>> m = mask_from_flat(flat, [(92, 108)], grow=0)
    >>> int(m.sum()), bool(m[90, 110])
    (305, True)
    """
    data = np.asarray(flat, dtype=np.float64)
    if data.ndim != 2:
        raise InputError(f"mask_from_flat needs a 2-D flat, got shape {data.shape}")
    out = np.zeros(data.shape, bool)
    for r, c in np.atleast_2d(np.asarray(positions, dtype=float)):
        r, c = int(round(r)), int(round(c))
        if not (0 <= r < data.shape[0] and 0 <= c < data.shape[1]):
            raise InputError(f"position ({r}, {c}) lies outside the flat of shape {data.shape}")
        y0, y1 = max(r - search, 0), min(r + search + 1, data.shape[0])
        x0, x1 = max(c - search, 0), min(c + search + 1, data.shape[1])
        win = data[y0:y1, x0:x1]
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(float)
        rr = np.hypot(yy - r, xx - c)
        ann = (rr >= annulus[0]) & (rr <= annulus[1]) & np.isfinite(win)
        if ann.sum() < 10:
            raise InputError(f"too few pixels around ({r}, {c}) for the flat's local plane")
        depth = 1.0 - win / _robust_plane(yy[ann], xx[ann], win[ann])(yy, xx)
        lab, _ = ndimage.label(depth > min_depth)
        near = (rr <= 3) & (lab > 0)
        if not near.any():
            raise InputError(f"no pixel near ({r}, {c}) is {min_depth:g} deeper than the flat around it")
        k = lab[near][np.argmax(depth[near])]
        shadow = lab == k
        if grow > 0:
            shadow = ndimage.distance_transform_edt(~shadow) <= grow
        out[y0:y1, x0:x1] |= shadow
    return out


def flat_errors(gain, truth, cover):
    """Error of a gain map against the truth: rms of the log ratio, as is and with a plane removed.

    Both maps are normalised to their median over ``cover`` first (a flat is
    known up to a constant).  The second figure leaves out the best-fitting
    plane of the log ratio too: a large-offset flat is constrained up to a
    plane when the frames' levels are free.

    Parameters
    ----------
    gain, truth : `~numpy.ndarray`
        2-D gain maps of one shape (positive where ``cover``).
    cover : `~numpy.ndarray` of bool
        Pixels to compare.

    Returns
    -------
    rms, rms_plane_removed : float
        Fractions (0.01 = 1 %).

    Raises
    ------
    `~aiflat_astro.utils.exceptions.InputError`
        Maps of different shapes, fewer than 3 pixels in ``cover``, or a map
        not positive and finite there.

    Examples
    --------
    >>> import numpy as np
    >>> yy, xx = np.mgrid[0:64, 0:64]
    >>> truth = np.ones((64, 64))
    >>> gain = 2.0 * np.exp(1e-3 * (yy - xx))       # another level and a slope
    >>> rms, rms_plane = flat_errors(gain, truth, np.ones((64, 64), bool))
    >>> round(rms, 4), round(rms_plane, 6)
    (0.0261, 0.0)
    """
    gain, truth = np.asarray(gain, dtype=np.float64), np.asarray(truth, dtype=np.float64)
    cover = np.asarray(cover, dtype=bool)
    if gain.shape != truth.shape or cover.shape != gain.shape or gain.ndim != 2:
        raise InputError(f"gain {gain.shape}, truth {truth.shape} and cover {cover.shape} must be "
                         "2-D maps of one shape")
    g, t = gain[cover], truth[cover]
    if g.size < 3 or not (np.all(np.isfinite(g) & (g > 0)) and np.all(np.isfinite(t) & (t > 0))):
        raise InputError("flat_errors needs at least 3 covered pixels, positive and finite in "
                         "both maps")
    e = np.log(g / np.median(g)) - np.log(t / np.median(t))
    yy, xx = np.nonzero(cover)
    a = np.column_stack([np.ones(yy.size), yy, xx])
    coef, *_ = np.linalg.lstsq(a, e, rcond=None)
    return float(np.sqrt(np.mean(e**2))), float(np.sqrt(np.mean((e - a @ coef) ** 2)))
