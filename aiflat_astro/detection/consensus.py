"""The consensus detector: the local detector and Gemini must agree.

"Verify, don't trust": a shadow that both eyes mark (their masks overlap) is
DUST and is corrected by the flat.  A shadow that only one of them marks is
*disputed*: it gets the REVIEW bit and, by default, no DUST bit, so the flat
leaves it alone until a person has looked.  Every shadow is listed in the
catalog with a ``source`` column (``'both'``, ``'local'`` or ``'gemini'``),
so the person checks only the rows whose ``review`` is True, then either
accepts them (rerun with ``disputed='include'``, or add include regions) or
drops them (exclude regions).

Examples
--------
>>> import tempfile
>>> import numpy as np
>>> from aiflat_astro._gemini.fake_server import FakeGeminiServer, dark_pixel_mask
>>> y, x = np.mgrid[:128, :160]
>>> median = 1000.0 * (1 - 0.2 * (np.hypot(y - 60, x - 70) < 6))
>>> with FakeGeminiServer(dark_pixel_mask()) as server:
...     detector = ConsensusDetector(api_key="test-key", base_url=server.url, image_size="1K",
...                                  cache_dir=tempfile.mkdtemp())
...     detection = detector(median)
>>> [(str(row["source"]), bool(row["review"])) for row in detection.catalog]
[('both', False)]
"""

import logging

import numpy as np
from scipy import ndimage

from ..dq import DustDQ
from ..utils.exceptions import InputError, renamed_keyword
from ..products import DustDetection
from ._protocol import DustDetector, ignore_keyword
from .._gemini.render import normalise, smooth_background
from .gemini import GeminiDustDetector, _component_catalog
from .local import LocalDustDetector

__all__ = ["ConsensusDetector", "DISPUTED_POLICIES"]

log = logging.getLogger(__name__)

#: What happens to a shadow only one detector marks: 'review' (REVIEW bit only, not
#: corrected) or 'include' (DUST and REVIEW: corrected, but flagged for a check).
DISPUTED_POLICIES = ("review", "include")

_AI_KEYS = ("ai_model", "ai_prompt", "prompt_sha256", "response_sha256")


class ConsensusDetector(DustDetector):
    """Dust detector combining the local detector and `GeminiDustDetector`.

    Parameters
    ----------
    local : `~aiflat_astro.detection.DustDetector` or dict, optional
        The local detector, or options for ``'local'`` from the registry.
    gemini : `GeminiDustDetector`, optional
        The Gemini detector; default one built from ``**gemini_options``.
    disputed : {'review', 'include'}, optional
        Policy for shadows only one detector marks (see `DISPUTED_POLICIES`);
        default ``'review'``.
    **gemini_options
        Passed to `GeminiDustDetector` (``model``, ``image_size``,
        ``base_url``, ``cache_dir``, ...).  A blank Gemini mask is accepted
        here: it is an opinion (no dust) like any other.
    """

    name = "consensus"

    def __init__(self, *, local=None, gemini=None, disputed="review", **gemini_options):
        _check_policy(disputed)
        if gemini is not None and gemini_options:
            raise InputError("give either a Gemini detector or Gemini options, not both")
        if local is None or isinstance(local, dict):
            local = LocalDustDetector(**dict(local or {}))
        if gemini is None:
            gemini_options.setdefault("allow_empty", True)
            gemini = GeminiDustDetector(**gemini_options)
        self.local = local
        self.gemini = gemini
        self.disputed = disputed

    def __repr__(self):
        return (f"ConsensusDetector(local={self.local!r}, gemini={self.gemini!r}, "
                f"disputed={self.disputed!r})")

    def __call__(self, median, *, frames=None, ignore=None, f_ratio=None, pixel_size=None, mask=None):
        if mask is not None:
            ignore = renamed_keyword("ConsensusDetector", "mask", "ignore", mask, given=ignore)
        data = np.array(getattr(median, "data", median), dtype=np.float32)
        kwargs = {"frames": frames, "f_ratio": f_ratio, "pixel_size": pixel_size}
        local = self.local(data, **kwargs, **ignore_keyword(self.local, ignore))
        gemini = self.gemini(data, **kwargs, **ignore_keyword(self.gemini, ignore))
        return combine_detections(data, local, gemini, disputed=self.disputed, f_ratio=f_ratio,
                                  pixel_size=pixel_size)


def combine_detections(median, local, gemini, *, disputed="review", f_ratio=None, pixel_size=None):
    """Merge two detections shadow by shadow (see `ConsensusDetector`).

    Shadows are the connected components of the union of both DUST masks; a
    component containing DUST pixels of both detections is agreed.

    Returns
    -------
    `~aiflat_astro.detection.DustDetection`
        Its catalog has the extra column ``source``.
    """
    _check_policy(disputed)
    a, b = local.dust_mask, gemini.dust_mask
    if a.shape != b.shape or a.shape != np.shape(median):
        raise InputError("the two detections and the median must have the same shape")
    union = a | b
    comp, n = ndimage.label(union, structure=np.ones((3, 3), bool))
    has_a = np.zeros(n + 1, bool)
    has_b = np.zeros(n + 1, bool)
    has_a[np.unique(comp[a])] = True
    has_b[np.unique(comp[b])] = True
    agreed = has_a & has_b
    agreed[0] = False
    source = np.where(agreed, "both", np.where(has_a, "local", "gemini"))
    dq = np.zeros(union.shape, np.uint8)
    is_agreed = agreed[comp] & union
    is_disputed = ~agreed[comp] & union
    dq[is_agreed] |= np.uint8(DustDQ.DUST)
    dq[is_disputed] |= np.uint8(DustDQ.REVIEW)
    if disputed == "include":
        dq[is_disputed] |= np.uint8(DustDQ.DUST)
    # other bits (defects) of both inputs are kept
    keep = np.uint8(0xFF ^ (DustDQ.DUST | DustDQ.DUST_HALO | DustDQ.REVIEW))
    dq |= (local.dq & keep) | (gemini.dq & keep)

    background = smooth_background(median, ignore=union)
    ratio = normalise(median, background)
    confidence = _confidence_map(local, gemini, union.shape)
    labels, catalog = _component_catalog(union, ratio, confidence, f_ratio=f_ratio,
                                         pixel_size=pixel_size, method="consensus")
    # _component_catalog labels the same components in the same order as ndimage.label above
    catalog["source"] = source[1:].astype("U6")
    catalog["source"].description = "which detector marked the shadow: both, local or gemini"
    catalog["review"] = np.asarray(catalog["source"] != "both")
    n_agreed = int(agreed.sum())
    n_local = int((has_a & ~agreed)[1:].sum())
    n_gemini = int((has_b & ~agreed)[1:].sum())
    log.info("consensus: %d agreed, %d local only, %d Gemini only (disputed: %s)",
             n_agreed, n_local, n_gemini, disputed)
    provenance = {k: gemini.provenance[k] for k in _AI_KEYS if gemini.provenance.get(k)}
    params = {k: v for k, v in (gemini.provenance.get("params") or {}).items()}
    params.update({"NAGREE": n_agreed, "NLOCAL": n_local, "NGEMINI": n_gemini,
                   "DISPUTED": disputed})
    provenance.update({
        "detector": "consensus",
        "params": params,
        "consensus": {"disputed": disputed, "local": local.provenance, "gemini": gemini.provenance},
        "history": [f"consensus of local and Gemini detectors: {n_agreed} agreed, "
                    f"{n_local + n_gemini} disputed (flagged REVIEW)"],
    })
    detection = DustDetection(dq=dq, weight=((dq & DustDQ.DUST) > 0).astype(np.float32),
                              catalog=catalog, detector="consensus", provenance=provenance,
                              labels=labels)
    return detection.expanded()


def _check_policy(disputed):
    if disputed not in DISPUTED_POLICIES:
        raise InputError(f"disputed must be one of {', '.join(DISPUTED_POLICIES)}, "
                         f"got {disputed!r}")


def _confidence_map(local, gemini, shape):
    """Per-pixel confidence: each detector's catalog confidence painted on its shadows."""
    conf = np.zeros(shape)
    for det in (local, gemini):
        if len(det.catalog) == 0 or "confidence" not in det.catalog.colnames:
            continue
        lookup = np.zeros(int(det.labels.max()) + 1)
        for row in det.catalog:
            if 0 < int(row["id"]) < lookup.size and np.isfinite(row["confidence"]):
                lookup[int(row["id"])] = float(row["confidence"])
        conf = np.maximum(conf, lookup[det.labels])
    return conf
