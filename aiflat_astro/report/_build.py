"""Build the review report: read an output folder, draw the pictures, fill the HTML template."""

import base64
import datetime
import html
import io
import json
import logging
import time
from importlib import resources
from pathlib import Path

import numpy as np

from ..dq import DQ_BITS
from ..utils._atomic import atomic_output
from ..utils.exceptions import InputError, ProvenanceError, warn_user

__all__ = ["write_report", "collect_report", "REPORT_NAME"]

log = logging.getLogger(__name__)

#: Default file name of the report inside the output folder.
REPORT_NAME = "report.html"

#: Marker in the HTML head: a report aiflat made may be replaced without ``overwrite``.
_GENERATOR = "aiflat_astro report"

_BIT = {name: value for _, value, name, _ in DQ_BITS}

#: Overlay layers: (DQ bit name, RGBA colour, shown at start).
_LAYERS = (("DUST_HALO", (0, 150, 255, 90), False), ("DUST", (40, 220, 60, 120), True),
           ("REVIEW", (255, 190, 0, 150), True), ("LOW_TRANS", (255, 0, 220, 200), True),
           ("GENERATED", (150, 80, 255, 160), True))

#: Largest side of the overview image (larger medians are binned for display; coordinates stay native).
_OVERVIEW_MAX = 2048
#: Largest side of a thumbnail panel in pixels (larger crops are resampled).
_THUMB_MAX = 64


# ----------------------------------------------------------------------------------------------
# small helpers
# ----------------------------------------------------------------------------------------------
def _png(array):
    """PNG bytes of a uint8 (H, W), (H, W, 3) or (H, W, 4) array."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def _data_uri(data, mime="image/png"):
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")


def _figure_png(fig):
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=fig.dpi, facecolor="white")
    return buf.getvalue()


def _finite(x, default=None, digits=4):
    try:
        v = float(x)
    except (TypeError, ValueError):
        return default
    return round(v, digits) if np.isfinite(v) else default


def _stretch(data):
    """uint8 display of the median: ZScale + asinh, as the preview PNG."""
    from astropy.visualization import AsinhStretch, ImageNormalize, ZScaleInterval

    finite = np.isfinite(data)
    shown = np.where(finite, data, np.nanmedian(data) if finite.any() else 0).astype(np.float32)
    norm = ImageNormalize(shown, interval=ZScaleInterval(contrast=0.15), stretch=AsinhStretch(0.5))
    return (np.clip(np.ma.getdata(norm(shown)), 0, 1) * 255).astype(np.uint8)


def _bin(array, f, how):
    if f == 1:
        return array
    h, w = (array.shape[0] // f) * f, (array.shape[1] // f) * f
    blocks = array[:h, :w].reshape(h // f, f, w // f, f)
    return blocks.max(axis=(1, 3)) if how == "max" else blocks.mean(axis=(1, 3))


def _boundary(mask):
    from scipy import ndimage

    return mask & ~ndimage.binary_erosion(mask, border_value=0)


# ----------------------------------------------------------------------------------------------
# reading the folder
# ----------------------------------------------------------------------------------------------
def _read_products(outdir):
    from astropy.table import Table

    from ..io.fits import read_flat, read_mask, read_median
    from ..utils._colour import to_mono

    outdir = Path(outdir)
    if not outdir.is_dir():
        raise InputError(f"{str(outdir)!r} is not a folder (expected an output folder of aiflat run)")
    missing = [n for n in ("median.fits", "mask.fits") if not (outdir / n).is_file()]
    if missing:
        raise InputError(f"{str(outdir)!r} is not an aiflat output folder: {' and '.join(missing)} missing "
                         "(make one with `aiflat run VIDEO -o OUTDIR`)")
    try:
        median = read_median(outdir / "median.fits")
        detection = read_mask(outdir / "mask.fits")
        flat = read_flat(outdir / "flat.fits") if (outdir / "flat.fits").is_file() else None
    except ProvenanceError as exc:
        raise InputError(f"cannot make a report of {outdir}: {exc}") from None
    data = to_mono(np.asarray(median.data, dtype=np.float32))
    if data.shape != detection.shape:
        raise InputError(f"median.fits ({data.shape[1]}x{data.shape[0]}) and mask.fits "
                         f"({detection.shape[1]}x{detection.shape[0]}) differ in size: not one run")
    if flat is not None and flat.shape != data.shape:
        warn_user("flat.fits does not have the size of the median; the report leaves it out")
        flat = None
    if flat is None:
        log.info("no flat.fits in %s: the report has no calibrated crops", outdir)
    catalog = detection.catalog
    ecsv = outdir / "dust.ecsv"
    if ecsv.is_file():
        try:
            table = Table.read(ecsv, format="ascii.ecsv")
        except Exception as exc:  # noqa: BLE001 - any parser error: fall back on the mask's own catalog
            log.warning("cannot read %s (%s); using the catalog stored in mask.fits", ecsv, exc)
        else:
            if len(table) == len(catalog) and "id" in table.colnames and \
                    set(int(i) for i in table["id"]) == set(int(i) for i in catalog["id"]):
                catalog = table
            else:
                log.info("%s does not match mask.fits; using the catalog stored in mask.fits", ecsv)
    state = {}
    if (outdir / "aiflat_run.json").is_file():
        try:
            state = json.loads((outdir / "aiflat_run.json").read_text())
        except (OSError, ValueError):
            state = {}
    return median, data, detection, catalog, flat, state


def _residual(outdir, flat, video):
    """The flat against a simulation's truth, when there is one.

    The truth is ``<video stem>_truth.fits`` beside the video of the last run
    (what ``aiflat simulate`` writes), else the one ``*_truth.fits`` in the folder.
    """
    if flat is None:
        return None
    truths = []
    if video:
        beside = Path(video).with_name(Path(video).stem + "_truth.fits")
        truths = [beside] if beside.is_file() else []
    if not truths:
        truths = sorted(Path(outdir).glob("*_truth.fits"))
    if len(truths) != 1:
        return None
    from ..datasets import read_truth
    from ..flat import evaluate_flat

    try:
        truth = read_truth(truths[0])
        if truth.transmission.shape != flat.shape:
            return None
        ev = evaluate_flat(flat, truth)
    except Exception as exc:  # noqa: BLE001 - a truth file we cannot use is simply not reported
        log.info("cannot compare with %s: %s", truths[0], exc)
        return None
    return {"truth": truths[0].name, **{k: _finite(ev.get(k), digits=5) for k in
                                        ("residual_ratio", "residual_rms", "uncorrected_rms", "outside_exact")}}


# ----------------------------------------------------------------------------------------------
# pictures
# ----------------------------------------------------------------------------------------------
def _overview(data, dq):
    h, w = data.shape
    f = max(1, int(np.ceil(max(h, w) / _OVERVIEW_MAX)))
    gray = _bin(_stretch(data).astype(np.float32), f, "mean").astype(np.uint8)
    layers = []
    for name, rgba, on in _LAYERS:
        bit = (dq & _BIT[name]) > 0
        if not bit.any():
            continue
        sel = _bin(bit, f, "max")
        img = np.zeros(sel.shape + (4,), np.uint8)
        img[sel] = rgba
        layers.append({"name": name, "on": on, "src": _data_uri(_png(img)), "count": int(bit.sum()),
                       "color": "rgba({},{},{},{:.2f})".format(*rgba[:3], min(1.0, rgba[3] / 255 + 0.3))})
    return {"src": _data_uri(_png(gray)), "width": w, "height": h, "binning": f, "layers": layers}


def _nearest(xs, ys):
    """Distance from each centroid to the nearest other one (inf for a lone shadow)."""
    from scipy.spatial import cKDTree

    n = len(xs)
    if n < 2:
        return np.full(n, np.inf)
    d, _ = cKDTree(np.column_stack([xs, ys])).query(np.column_stack([xs, ys]), k=2)
    return d[:, 1]


def _resample(img, side):
    """Nearest-neighbour resampling of a (h, w[, c]) crop so that its larger side is ``side``."""
    h, w = img.shape[:2]
    s = side / max(h, w)
    if s >= 1:
        return img
    ri = np.minimum((np.arange(max(1, round(h * s))) / s).astype(int), h - 1)
    ci = np.minimum((np.arange(max(1, round(w * s))) / s).astype(int), w - 1)
    return img[ri][:, ci]


def _radial(values, dist, rmax, valid):
    """Mean of ``values`` in 1-px rings (NaN where empty), 0..rmax."""
    nb = int(np.ceil(rmax)) + 1
    idx = np.minimum(dist.astype(int), nb - 1)
    ok = valid & np.isfinite(values)
    s = np.bincount(idx[ok], weights=values[ok], minlength=nb)[:nb]
    c = np.bincount(idx[ok], minlength=nb)[:nb]
    with np.errstate(invalid="ignore", divide="ignore"):
        out = s / c
    return [None if not np.isfinite(v) else round(float(v), 4) for v in out]


def _crop_box(x, y, diam, shape):
    """Half-size and ``(r0, r1, c0, c1)`` of the thumbnail around a shadow (clipped to the image)."""
    h, w = shape
    half = int(np.clip(np.ceil(0.8 * diam) + 6, 10, 120))
    cx, cy = int(round(np.clip(x, 0, w - 1))), int(round(np.clip(y, 0, h - 1)))
    return half, (max(cy - half, 0), min(cy + half + 1, h), max(cx - half, 0), min(cx + half + 1, w))


def _thumbnail_strip(crop, cal, own, others, low):
    """PNG-ready RGB strip: the median, the median with outlines, the calibrated image."""
    ref = np.concatenate([crop[np.isfinite(crop)].ravel()] +
                         ([cal[np.isfinite(cal)].ravel()] if cal is not None else []))
    lo, hi = (np.percentile(ref, [0.5, 99.5]) if ref.size else (0.0, 1.0))
    if not hi > lo:
        hi = lo + 1.0

    def gray(img):
        return (np.clip((np.nan_to_num(img, nan=lo) - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)

    g = gray(crop)
    outline = np.repeat(g[:, :, None], 3, axis=2)
    outline[_boundary(others)] = (0, 190, 255)
    outline[low & own] = (255, 0, 220)
    outline[_boundary(own)] = (255, 225, 0)
    panels = [np.repeat(g[:, :, None], 3, axis=2), outline]
    panels.append(np.repeat(gray(cal)[:, :, None], 3, axis=2) if cal is not None
                  else np.full_like(outline, 235))
    panels = [_resample(p, _THUMB_MAX) for p in panels]
    ph, pw = panels[0].shape[:2]
    strip = np.full((ph, 3 * pw + 4, 3), 255, np.uint8)
    for k, p in enumerate(panels):
        strip[:, k * (pw + 2):k * (pw + 2) + pw] = p
    return strip


def _radial_profiles(crop, cal, flat_crop, ring, box, x, y, half, valid):
    """Radial profiles: the observed dip (median / surrounding level), the flat (the transmission
    the calibration divides by) and the calibrated image (/ its level: 1 = no dust left)."""
    r0, r1, c0, c1 = box
    level = float(np.median(crop[ring])) if ring.sum() >= 8 else float(np.nanmedian(crop))
    yy, xx = np.mgrid[r0:r1, c0:c1]
    dist = np.hypot(yy - y, xx - x)
    rmax = float(min(half, dist.max()))
    prof = {"observed": _radial(crop / level if level else crop * np.nan, dist, rmax, valid)}
    if flat_crop is not None:
        prof["flat"] = _radial(flat_crop, dist, rmax, valid)
        lev_c = float(np.median(cal[ring])) if ring.sum() >= 8 else float(np.nanmedian(cal))
        prof["calibrated"] = _radial(cal / lev_c if lev_c else cal * np.nan, dist, rmax, valid)
    return prof


def _flat_method_label(row, cols, inpaint, shadow_prov, generated):
    """How the flat was set inside the shadow, in words."""
    if "flat_method" in cols:
        return str(row["flat_method"])
    method = str(inpaint or "unknown")
    if shadow_prov.get("profile"):
        method += f", {shadow_prov['profile']} profile" if shadow_prov["profile"] != "none" else ", per pixel"
    if generated:
        method += ", generated"
    return method


def _shadow_cards(data, dq, labels, catalog, flat_data, flat_prov, inpaint):
    """One record a shadow: its numbers, its thumbnail strip, its radial profiles."""
    cols = set(catalog.colnames)
    xs = np.asarray(catalog["x_centroid"], float)
    ys = np.asarray(catalog["y_centroid"], float)
    nn = _nearest(xs, ys)
    shadow_prov = {int(r.get("id", -1)): r for r in (flat_prov.get("shadows") or []) if isinstance(r, dict)}
    calibrated = None
    if flat_data is not None:
        with np.errstate(divide="ignore", invalid="ignore"):
            calibrated = data / flat_data
    dust = (dq & _BIT["DUST"]) > 0
    cards = []
    for i, row in enumerate(catalog):
        sid = int(row["id"])
        x, y = float(xs[i]), float(ys[i])
        diam = _finite(row["equivalent_diameter"], default=2.0) if "equivalent_diameter" in cols else 2.0
        half, box = _crop_box(x, y, diam, data.shape)
        r0, r1, c0, c1 = box
        crop, dqc = data[r0:r1, c0:c1], dq[r0:r1, c0:c1]
        cal = calibrated[r0:r1, c0:c1] if calibrated is not None else None
        own = labels[r0:r1, c0:c1] == sid
        others = dust[r0:r1, c0:c1] & ~own
        ring = ~dust[r0:r1, c0:c1] & ((dqc & _BIT["DUST_HALO"]) == 0) & np.isfinite(crop)
        low = (dqc & _BIT["LOW_TRANS"]) > 0
        strip = _thumbnail_strip(crop, cal, own, others, low)
        prof = _radial_profiles(crop, cal, None if flat_data is None else flat_data[r0:r1, c0:c1], ring, box,
                                x, y, half, ~others)
        sp = shadow_prov.get(sid, {})
        method = _flat_method_label(row, cols, inpaint, sp, (own & ((dqc & _BIT["GENERATED"]) > 0)).any())
        # REVIEW: flagged by the detector, or by the flat (a profile that did not fit, no usable signal)
        review = (bool(row["review"]) if "review" in cols else False) or bool((dqc[own] & _BIT["REVIEW"]).any())
        rec = {"id": sid, "x": round(x, 2), "y": round(y, 2), "diameter": _finite(diam, digits=2),
               "area": _finite(row["area"], digits=1) if "area" in cols else None,
               "depth": _finite(row["depth"], digits=4) if "depth" in cols else None,
               "confidence": _finite(row["confidence"], digits=3) if "confidence" in cols else None,
               "review": review, "found_by": str(row["method"]) if "method" in cols else "",
               "flat_method": method, "low_trans": int((low & own).sum()),
               "distance_mm": _finite(row["distance_mm"], digits=3) if "distance_mm" in cols else None,
               "source": str(row["source"]) if "source" in cols else None,
               "note": str(sp.get("reason", "")) or None,
               # the exclude region of a reject: around the centroid, never reaching another centroid
               "reject_r": round(float(max(0.75, min(max(diam / 2, 1.0), nn[i] - 1.0))), 2),
               "crop": [c0, r0, c1 - c0, r1 - r0], "thumb": base64.b64encode(_png(strip)).decode("ascii"),
               "profile": prof}
        cards.append(rec)
    cards.sort(key=lambda r: (not r["review"], r["confidence"] if r["confidence"] is not None else 1.0, r["id"]))
    return cards


def _summary_figure(cards, flat_data, dq):
    """Depth against size of every shadow, and the flat's values inside the dust (matplotlib)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8.0, 2.8), dpi=100)
    ax1, ax2 = fig.subplots(1, 2)
    d = np.array([c["diameter"] if c["diameter"] is not None else np.nan for c in cards], float)
    z = np.array([c["depth"] if c["depth"] is not None else np.nan for c in cards], float)
    rv = np.array([c["review"] for c in cards], bool)
    if len(cards):
        ax1.scatter(d[~rv], z[~rv], s=14, c="#2a2", label="dust", edgecolors="none")
        ax1.scatter(d[rv], z[rv], s=18, c="#e90", marker="D", label="REVIEW", edgecolors="none")
        ax1.legend(fontsize=7, frameon=False)
    ax1.set_xlabel("equivalent diameter (px)", fontsize=8)
    ax1.set_ylabel("depth (1 - min transmission)", fontsize=8)
    ax1.set_title(f"{len(cards)} shadows", fontsize=9)
    if flat_data is not None and ((dq & _BIT["DUST"]) > 0).any():
        vals = flat_data[(dq & _BIT["DUST"]) > 0]
        ax2.hist(vals[np.isfinite(vals)], bins=40, color="#48c")
        ax2.set_xlabel("flat value inside the dust (transmission)", fontsize=8)
        ax2.set_ylabel("pixels", fontsize=8)
        ax2.set_title("what the calibration divides by", fontsize=9)
    else:
        ax2.set_axis_off()
        ax2.text(0.5, 0.5, "no flat.fits yet", ha="center", va="center", transform=ax2.transAxes)
    for ax in (ax1, ax2):
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    return _data_uri(_figure_png(fig))


# ----------------------------------------------------------------------------------------------
# provenance and headline numbers
# ----------------------------------------------------------------------------------------------
def _provenance(outdir, median, detection, flat, state):
    from ..provenance import sha256_file

    mask_prov = dict(detection.provenance or {})
    flat_prov = {}
    if flat is not None and flat.meta.get("PROVJSON"):
        flat_prov = json.loads(flat.meta["PROVJSON"])
    rows = []
    meta = median.meta
    for k in range(1, 100):
        if f"PROV{k}" not in meta:
            break
        rows.append({"what": "median input", "name": str(meta[f"PROV{k}"]),
                     "sha256": str(meta.get(f"PROVSHA{k}", ""))})
    video = (state.get("last_run") or {}).get("video") or {}
    if video.get("path"):
        rows.append({"what": "video (last run)", "name": video["path"],
                     "sha256": f"size {video.get('size')} B (identity by size and time)"})
    for item in mask_prov.get("inputs") or []:
        rows.append({"what": "detection input", "name": str(item.get("path")), "sha256": str(item.get("sha256", ""))})
    for name in ("median.fits", "mask.fits", "flat.fits", "dust.ecsv", "dust.reg"):
        p = Path(outdir) / name
        if p.is_file():
            rows.append({"what": "product", "name": name, "sha256": sha256_file(p)})
    ai = {}
    for src in (mask_prov, flat_prov):
        for key in ("ai_model", "ai_prompt", "prompt_sha256", "response_sha256"):
            if src.get(key) and key not in ai:
                ai[key] = str(src[key])
    history = [str(x) for x in (mask_prov.get("history") or [])] + [str(x) for x in (flat_prov.get("history") or [])]
    params = {"mask": {str(k): v for k, v in (mask_prov.get("params") or {}).items()},
              "flat": {str(k): v for k, v in (flat_prov.get("params") or {}).items()}}
    return {"software": str((flat.meta if flat is not None else {}).get("PROCSOFT") or
                            _software()),
            "detector": detection.detector,
            "inpaint": str(flat_prov.get("inpaint") or (flat.meta.get("INPAINT") if flat is not None else "") or ""),
            "ncombine": _finite(meta.get("NCOMBINE"), digits=0),
            "files": rows, "ai": ai, "history": history,
            "params": json.loads(json.dumps(params, default=str))}, flat_prov


def _software():
    from ..provenance import software_id

    return software_id()


def collect_report(outdir):
    """Read an output folder and return everything the report shows, as a JSON-ready dict.

    Parameters
    ----------
    outdir : str or `pathlib.Path`
        An output folder of ``aiflat run`` (``median.fits`` and ``mask.fits``
        at least; ``flat.fits``, ``dust.ecsv``, ``aiflat_run.json`` and
        ``drift.png`` are used when present).

    Returns
    -------
    dict
        ``overview`` (image and layers), ``shadows`` (one record a shadow,
        REVIEW first), ``headline``, ``provenance``, ``figures``.

    Raises
    ------
    `~aiflat_astro.utils.exceptions.InputError`
        ``outdir`` is not an aiflat output folder.

    Examples
    --------
    >>> import tempfile
    >>> try:
    ...     collect_report(tempfile.mkdtemp())
    ... except Exception as exc:
    ...     print(type(exc).__name__)
    InputError
    """
    t0 = time.perf_counter()
    outdir = Path(outdir)
    median, data, detection, catalog, flat, state = _read_products(outdir)
    dq = detection.dq.copy()
    flat_data = None
    if flat is not None:
        flat_data = np.asarray(flat.data, dtype=np.float32)
        if flat.flags is not None:
            dq |= np.asarray(flat.flags, dtype=np.uint8)  # the flat adds LOW_TRANS, REVIEW, GENERATED
    prov, flat_prov = _provenance(outdir, median, detection, flat, state)
    cards = _shadow_cards(data, dq, detection.labels, catalog, flat_data, flat_prov, prov["inpaint"])
    last = state.get("last_run") or {}
    headline = {"shadows": len(cards), "review": sum(c["review"] for c in cards),
                "low_trans_px": int(((dq & _BIT["LOW_TRANS"]) > 0).sum()),
                "masked_fraction": round(float(((dq & _BIT["DUST"]) > 0).mean()), 6),
                "size": [int(data.shape[1]), int(data.shape[0])],
                "seconds": {k: round(float(v), 2) for k, v in (last.get("seconds") or {}).items()},
                "computed": last.get("computed"), "reused": last.get("reused"),
                "residual": _residual(outdir, flat, (last.get("video") or {}).get("path"))}
    figures = {"summary": _summary_figure(cards, flat_data, dq)}
    drift = outdir / "drift.png"
    if drift.is_file():
        figures["drift"] = _data_uri(drift.read_bytes())
    radius = float(np.median([c["diameter"] for c in cards]) / 2) if cards else 6.0
    mask_sha = str(detection.provenance.get("mask_sha256") or "")
    if not mask_sha:
        from ..provenance import sha256_array

        mask_sha = sha256_array(detection.dq)
    report = {"title": outdir.resolve().name, "outdir": str(outdir.resolve()),
              "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
              "key": mask_sha[:16], "default_radius": round(max(radius, 2.0), 1),
              "video": ((last.get("video") or {}).get("path")),
              "overview": _overview(data, dq), "shadows": cards, "headline": headline,
              "provenance": prov, "figures": figures}
    log.info("report data of %s: %d shadows in %.1f s", outdir, len(cards), time.perf_counter() - t0)
    return report


# ----------------------------------------------------------------------------------------------
# the HTML file
# ----------------------------------------------------------------------------------------------
def _asset(name):
    return resources.files(__package__).joinpath("_static", name).read_text(encoding="utf-8")


def _is_own_report(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            head = f.read(2048)
    except OSError:
        return False
    return f'name="generator" content="{_GENERATOR}' in head


def render_html(report):
    """The HTML text of a report dict (`collect_report`)."""
    from .. import __version__

    payload = json.dumps(report, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")
    page = _asset("report.html")
    return (page.replace("{{GENERATOR}}", f"{_GENERATOR} {html.escape(__version__)}")
            .replace("{{TITLE}}", html.escape(f"aiflat review: {report['title']}"))
            .replace("/*{{CSS}}*/", _asset("report.css"))
            .replace("/*{{JS}}*/", _asset("report.js"))
            .replace("{{DATA}}", payload))


def write_report(outdir, *, output=None, overwrite=False):
    """Write the HTML review report of an ``aiflat run`` output folder.

    Parameters
    ----------
    outdir : str or `pathlib.Path`
        The output folder (``median.fits`` and ``mask.fits`` at least).
    output : str or `pathlib.Path`, optional
        The HTML file; default ``outdir/report.html``.
    overwrite : bool, optional
        Replace an existing file that is not an aiflat report (an aiflat
        report is always replaced: it is a product of the folder).

    Returns
    -------
    `pathlib.Path`
        The report written.

    Raises
    ------
    `~aiflat_astro.utils.exceptions.InputError`
        Not an aiflat output folder, or ``output`` exists and is not a report.

    Examples
    --------
    >>> import tempfile
    >>> try:
    ...     write_report(tempfile.mkdtemp())
    ... except Exception as exc:
    ...     print(str(exc).split(":")[-1].strip())
    median.fits and mask.fits missing (make one with `aiflat run VIDEO -o OUTDIR`)
    """
    outdir = Path(outdir)
    output = Path(output) if output is not None else outdir / REPORT_NAME
    if output.exists() and not overwrite and not _is_own_report(output):
        raise InputError(f"{str(output)!r} exists and is not an aiflat report (use --overwrite to replace it)")
    report = collect_report(outdir)
    text = render_html(report)
    with atomic_output(output, overwrite=True) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
    log.info("wrote %s (%d shadows, %.1f MB)", output, len(report["shadows"]), output.stat().st_size / 1e6)
    return output
