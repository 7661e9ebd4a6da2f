"""Human-facing outputs of a dust detection: catalog (ECSV), DS9 regions, preview PNG.

* ``dust.ecsv``: one row per shadow with units and column descriptions in the
  ECSV header; the distance of the dust from the focal plane (Δz ≈ D·p·N) tells
  which glass surface to clean.
* ``dust.reg``: DS9 regions in image coordinates, green circles for confident
  shadows and dashed yellow ones for those flagged REVIEW; edit them and feed
  them back with ``--exclude-regions`` / ``--include-regions``.
* ``preview.png``: the median with an astropy.visualization stretch and the
  shadow outlines, for a check at a glance.

All files are written atomically and refuse to overwrite without ``overwrite=True``.
"""

import logging

import numpy as np

from ..dq import DustDQ
from ..utils._atomic import atomic_output
from ..utils._colour import to_mono
from ..io.catalog import write_catalog_ecsv

__all__ = ["write_catalog", "write_regions", "write_preview", "REGION_COLORS"]

log = logging.getLogger(__name__)

#: Colours: confident shadows, shadows to review, candidates not masked (preview only).
REGION_COLORS = {"dust": "green", "review": "yellow", "maybe": "0.6"}


def write_catalog(path, detection, *, overwrite=False):
    """Write the shadow catalog as ECSV (units and column descriptions included).

    Parameters
    ----------
    path : str or `pathlib.Path`
        Output ``.ecsv`` file.
    detection : `~aiflat_astro.detection.DustDetection`
        The detection.
    overwrite : bool, optional
        Replace an existing file.

    Examples
    --------
    >>> import tempfile, os, numpy as np
    >>> from astropy.table import Table
    >>> from aiflat_astro.detection import DustDetection, catalog_from_mask
    >>> m = np.zeros((32, 32), bool); m[4:10, 4:10] = True
    >>> det = DustDetection(dq=m.astype(np.uint8), weight=m.astype(np.float32), catalog=catalog_from_mask(m))
    >>> p = os.path.join(tempfile.mkdtemp(), "dust.ecsv")
    >>> write_catalog(p, det)
    >>> t = Table.read(p)
    >>> str(t["x_centroid"].unit), float(t["area"][0])
    ('pix', 36.0)
    """
    table = detection.catalog
    prov = detection.provenance or {}
    meta = {"detector": detection.detector, "n_shadows": len(table),
            "n_review": int(np.count_nonzero(table["review"])) if len(table) else 0}
    for key in ("input_sha256", "mask_sha256"):
        if prov.get(key):
            meta[key] = prov[key]
    params = prov.get("params") or {}
    if "FRATIO" in params and "PIXSIZE" in params:
        meta["f_ratio"] = params["FRATIO"]
        meta["pixel_size_um"] = params["PIXSIZE"]
    write_catalog_ecsv(path, table, overwrite=overwrite, meta=meta,
                       comments=["x_centroid, y_centroid: 0-based pixels, rows top-down as in the median FITS file"])
    log.info("wrote %s (%d shadows)", path, len(table))


def _shadow_regions(detection):
    from regions import CirclePixelRegion, PixCoord, RegionMeta, RegionVisual

    out = []
    for row in detection.catalog:
        review = bool(row["review"])
        color = REGION_COLORS["review" if review else "dust"]
        visual = {"color": color}
        if review:
            visual["linestyle"] = "dashed"
        text = f"{int(row['id'])}" + (" ?" if review else "")
        radius = max(float(row["equivalent_diameter"]) / 2, 1.0)
        out.append(CirclePixelRegion(PixCoord(float(row["x_centroid"]), float(row["y_centroid"])), radius,
                                     meta=RegionMeta({"text": text}), visual=RegionVisual(visual)))
    return out


def write_regions(path, detection, *, overwrite=False):
    """Write the shadows as a DS9 region file (image coordinates).

    Each shadow is a circle of its equivalent diameter at its centroid,
    labelled with its catalog id; REVIEW shadows are dashed yellow and
    labelled ``id ?``, the others green.

    Examples
    --------
    >>> import tempfile, os, numpy as np
    >>> from aiflat_astro.detection import DustDetection, catalog_from_mask, read_regions
    >>> m = np.zeros((32, 32), bool); m[4:10, 4:10] = True
    >>> det = DustDetection(dq=m.astype(np.uint8), weight=m.astype(np.float32), catalog=catalog_from_mask(m))
    >>> p = os.path.join(tempfile.mkdtemp(), "dust.reg")
    >>> write_regions(p, det)
    >>> round(float(read_regions(p)[0].center.x), 1)
    6.5
    """
    from regions import Regions

    regs = Regions(_shadow_regions(detection))
    with atomic_output(path, overwrite=overwrite) as tmp:
        regs.write(tmp, format="ds9", overwrite=True)
    log.info("wrote %s (%d regions)", path, len(regs))


def write_preview(path, median, detection, *, overwrite=False, max_size=1600, title=None):
    """Write a PNG of the median with the shadow outlines.

    The median is shown with a ZScale interval and an asinh stretch
    (`astropy.visualization`), rows top-down as in the FITS file; confident
    shadows are outlined in green, REVIEW ones in dashed yellow, with their
    catalog ids.  Large images are shown at a reduced size (at most
    ``max_size`` pixels on a side).

    Parameters
    ----------
    path : str or `pathlib.Path`
        Output ``.png``.
    median : `numpy.ndarray` or `~astropy.nddata.CCDData`
        The median the detection was made on.
    detection : `~aiflat_astro.detection.DustDetection`
        The detection.
    overwrite : bool, optional
        Replace an existing file.
    max_size : int, optional
        Largest side of the picture in pixels.
    title : str, optional
        Figure title (default: detector and number of shadows).
    """
    from astropy.visualization import AsinhStretch, ImageNormalize, ZScaleInterval
    from matplotlib.figure import Figure

    data = to_mono(np.asarray(getattr(median, "data", median), dtype=np.float32))
    h, w = data.shape
    finite = np.isfinite(data)
    shown = np.where(finite, data, np.nanmedian(data) if finite.any() else 0)
    norm = ImageNormalize(shown, interval=ZScaleInterval(contrast=0.15), stretch=AsinhStretch(0.5))
    dpi = 100
    scale = min(1.0, max_size / max(h, w))
    fig = Figure(figsize=(max(w * scale / dpi, 3), max(h * scale / dpi, 2) + 0.4), dpi=dpi)
    ax = fig.add_axes([0, 0, 1, h * scale / dpi / fig.get_figheight()])
    ax.imshow(shown, cmap="gray", norm=norm, origin="upper", interpolation="nearest")
    ax.set_axis_off()
    dust = detection.dust_mask
    review = dust & ((detection.dq & DustDQ.REVIEW) > 0)
    sure = dust & ~review
    if sure.any():
        ax.contour(sure, levels=[0.5], colors=REGION_COLORS["dust"], linewidths=0.8)
    if review.any():
        ax.contour(review, levels=[0.5], colors=REGION_COLORS["review"], linewidths=0.8,
                   linestyles="dashed")
    fontsize = max(6, min(10, int(0.02 * max(h, w) * scale)))
    for row in detection.catalog:
        color = REGION_COLORS["review" if row["review"] else "dust"]
        ax.text(float(row["x_centroid"]), float(row["y_centroid"]) - float(row["equivalent_diameter"]) / 2 - 2,
                str(int(row["id"])) + ("?" if row["review"] else ""), color=color, fontsize=fontsize,
                ha="center", va="bottom")
    # candidates the detector turned down but did not rule out: dotted grey circles, not in the
    # mask (add them with --include-regions if they are dust)
    n_maybe = 0
    rej = detection.rejected
    if rej is not None and len(rej) and "confidence" in rej.colnames:
        from matplotlib.patches import Circle

        for row in rej:
            if row["confidence"] >= 0.3 and "overlaps" not in str(row["reason"]):
                n_maybe += 1
                ax.add_patch(Circle((float(row["x_centroid"]), float(row["y_centroid"])),
                                    max(float(row["equivalent_diameter"]) / 2, 2.0), fill=False,
                                    edgecolor=REGION_COLORS["maybe"], linestyle=":", linewidth=0.8))
    n_rev = int(np.count_nonzero(detection.catalog["review"])) if len(detection.catalog) else 0
    fig.suptitle(title or f"{detection.detector}: {len(detection.catalog)} shadows "
                 f"({n_rev} to review, dashed yellow)"
                 + (f"; {n_maybe} possible, not masked (dotted)" if n_maybe else ""),
                 fontsize=9, y=0.995, va="top")
    with atomic_output(path, overwrite=overwrite) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, facecolor="white")
    log.info("wrote %s", path)
