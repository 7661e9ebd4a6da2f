"""The measured flat's result and its catalog: `MeasuredTransmission`, the per-shadow table and columns.

Part of the measured flat (`aiflat_astro.flat.estimators.measured`): what a
measurement returns (maps, the per-shadow table, the drift) and how its
per-shadow decisions go into a dust catalog (`add_flat_method`,
`write_measured_catalog`).
"""

import logging
from dataclasses import dataclass, field

import numpy as np
from astropy.table import Table

from ...registration import DriftPath

__all__ = ["MeasuredTransmission", "add_flat_method", "write_measured_catalog"]

log = logging.getLogger(__name__)


@dataclass
class MeasuredTransmission:
    """Dust transmission measured from the drift, with its diagnostics.

    Attributes
    ----------
    transmission : `~numpy.ndarray`
        float32 (H, W); measured inside the shadows whose ``method`` is
        ``'measured'``, 1.0 everywhere else.
    uncertainty : `~numpy.ndarray`
        float32 (H, W) standard error of ``transmission`` (0 where not measured).
    measured : `~numpy.ndarray`
        bool (H, W): pixels whose value was measured.
    shadows : `~astropy.table.Table`
        One row per region (a connected piece of the dust mask with the
        pixels to correct nearest to it): ``id`` (catalog id, or negative for
        dust without catalog row; a shadow in several pieces has several
        rows), ``x_centroid``, ``y_centroid``,
        ``diameter`` (px, bounding size of the dust mask), ``drift_ok``
        (drift extent ≥ diameter along both principal axes), ``coverage``
        (fraction of the region's pixels with enough usable frames),
        ``n_frames_used``, ``trans_err`` (median standard error inside),
        ``measured_depth`` (1 - the 1st percentile of the measured
        transmission: about 0 for a false detection),
        ``profile`` (``'radial'`` when the radial profile replaced the
        measured values, ``'plain'`` otherwise), ``chi2`` (reduced chi^2 of
        the measured values about the radial profile), ``method``
        (``'measured'`` or ``'local'``) and ``reason``.
    drift : `~aiflat_astro.registration.DriftPath`
        The registration result.
    params : dict
        Parameters of the measurement.
    """

    transmission: np.ndarray
    uncertainty: np.ndarray
    measured: np.ndarray
    shadows: Table
    drift: DriftPath
    params: dict = field(default_factory=dict)

    @property
    def n_measured(self):
        """Number of regions (rows of ``shadows``) whose transmission was measured."""
        return int(np.sum(self.shadows["method"] == "measured")) if len(self.shadows) else 0

    def methods_by_id(self):
        """``{id: 'measured' | 'local' | 'mixed'}`` per catalog id (over its regions)."""
        return _methods_by_id(zip(self.shadows["id"], self.shadows["method"], strict=True))

    def provenance(self):
        """JSON-serialisable record: drift path, per-shadow decision, parameters."""
        rows = []
        for row in self.shadows:
            rec = {}
            for name in self.shadows.colnames:
                value = row[name]
                if isinstance(value, (np.floating, float)):
                    value = None if not np.isfinite(value) else round(float(value), 5)
                elif isinstance(value, (np.integer, int)):
                    value = int(value)
                elif isinstance(value, (np.bool_, bool)):
                    value = bool(value)
                else:
                    value = str(value)
                rec[name] = value
            rows.append(rec)
        return {"drift": self.drift.provenance(), "shadows": rows, "params": dict(self.params)}


def _methods_by_id(pairs):
    """Aggregate per-region methods into one per id: measured, local, or mixed."""
    seen = {}
    for sid, method in pairs:
        seen.setdefault(int(sid), set()).add(str(method))
    return {sid: (methods.pop() if len(methods) == 1 else "mixed")
            for sid, methods in seen.items()}


def _shadow_table(rows):
    """The per-shadow table of `MeasuredTransmission`."""
    return Table(rows=rows or None,
                 names=("id", "x_centroid", "y_centroid", "diameter", "drift_ok", "coverage",
                        "n_frames_used", "trans_err", "measured_depth", "profile", "chi2",
                        "method", "reason"),
                 dtype=(np.int64, np.float64, np.float64, np.float64, bool, np.float64,
                        np.int64, np.float64, np.float64, "U6", np.float64, "U8", "U160"))


def add_flat_method(catalog, info):
    """Return a copy of a dust catalog with the per-shadow decision of ``'measured'``.

    Adds ``flat_method`` (``'measured'`` or ``'local'``: which method set the
    flat inside the shadow; ``'mixed'`` for a shadow in several pieces of
    which only some were measured), ``drift_ok (the drift spans the shadow
    diameter along both principal axes), ``coverage``, ``trans_err``
    (median standard error of the measured transmission) and
    ``measured_depth`` (about 0 for a detection that is not dust), matched
    on ``id``.
    The summary of the drift goes to ``meta['drift']``.  (The existing
    ``method`` column says how the shadow was *found*.)

    Parameters
    ----------
    catalog : `~astropy.table.Table`
        The detection catalog (column ``id``).
    info : dict or `MeasuredTransmission`
        The ``info`` returned by `inpaint_measured` (or found under
        ``inpaint_info`` in a flat's ``PROVJSON``), or a measurement.

    Returns
    -------
    `~astropy.table.Table`
    """
    if isinstance(info, MeasuredTransmission):
        info = {"shadows": [dict(rec, flat_method=rec["method"])
                            for rec in info.provenance()["shadows"]],
                "drift": info.drift.provenance()}
    records = {}
    for rec in info.get("shadows", []):
        records.setdefault(int(rec["id"]), []).append(rec)
    methods = _methods_by_id((rec["id"], rec["flat_method"]) for rec in info.get("shadows", []))

    def agg(i, name, func, default):
        values = [r.get(name) for r in records.get(i, []) if r.get(name) is not None]
        return func(values) if values else default

    out = catalog.copy()
    ids = [int(i) for i in out["id"]] if "id" in out.colnames else []
    out["flat_method"] = np.array([methods.get(i, "") for i in ids], dtype="U8")
    out["drift_ok"] = np.array([agg(i, "drift_ok", all, False) for i in ids], dtype=bool)
    out["coverage"] = np.array([agg(i, "coverage", min, 0.0) for i in ids], dtype=float)
    out["trans_err"] = np.array([agg(i, "trans_err", max, np.nan) for i in ids], dtype=float)
    out["measured_depth"] = np.array([agg(i, "measured_depth", max, np.nan) for i in ids],
                                     dtype=float)
    out["flat_method"].description = "which method set the flat inside the shadow"
    out["drift_ok"].description = "drift extent >= shadow diameter along both principal axes"
    out["coverage"].description = ("fraction of the shadow's pixels with enough "
                                   "drift-uncovered frames")
    out["trans_err"].description = "median standard error of the measured transmission"
    out["measured_depth"].description = ("1 - 1st percentile of the measured transmission "
                                         "(about 0: not a dust shadow)")
    drift = info.get("drift") or {}
    if "summary" in drift:
        out.meta["drift"] = drift["summary"]
    return out


def write_measured_catalog(path, detection, info, *, overwrite=False):
    """Write the dust catalog with the per-shadow method of ``inpaint='measured'`` (ECSV).

    The columns of the detection catalog plus those of `add_flat_method`;
    ``meta`` holds the detector, the drift summary (``drift``: extents,
    rms, number of frames), ``n_measured`` and ``n_local``.

    Parameters
    ----------
    path : str or path-like
        Output ``.ecsv`` file (written atomically).
    detection : `~aiflat_astro.detection.DustDetection`
    info : dict
        The ``info`` of `inpaint_measured` (``PROVJSON['inpaint_info']`` of a flat).
    overwrite : bool, optional
        Default `False`.
    """
    from ...io.catalog import write_catalog_ecsv

    drift = (info.get("drift") or {}).get("summary", {})
    meta = {"detector": detection.detector, "n_shadows": len(detection.catalog),
            "inpaint": "measured", "n_measured": int(info.get("n_measured", 0)),
            "n_local": int(info.get("n_local", 0)), "drift": drift}
    comment = ("flat_method: how the flat was set inside the shadow (measured from the drift "
               "of the scene, or local interpolation)")
    write_catalog_ecsv(path, add_flat_method(detection.catalog, info), comments=[comment],
                       meta=meta, overwrite=overwrite)
    log.info("wrote %s (%d shadows, %d measured)", path, meta["n_shadows"], meta["n_measured"])
