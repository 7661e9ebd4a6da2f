"""Extent of the local detector's DUST masks on large soft shadows, end to end.

For each simulated video (`make_dusty_video`, 256×320, 40 frames) the local
detector runs as ``aiflat run`` runs it (with the frames, the f-ratio and the
pixel size), `make_flat` makes the flat from its mask (``poly2``, radial
profile), and the script reports, per video and pooled over the set:

* the residual dust ``T / flat - 1`` relative to the uncorrected dust ``1 - T``,
  rms over the TRUE shadow pixels — per video, the rms of the per-video figures
  (``bench_flat.py``'s "pooled" column) and pooled over all the shadow pixels
  of the set (one sum of squares);
* object recall and precision and pixel IoU (`evaluate_mask`);
* for every true shadow larger than ``--large`` px: the share of its labelled
  footprint that the DUST mask covers, and its own residual;
* the distance of the catalog centroids from the true centres.

``--refine`` runs the detector with ``refine_extent=True`` (the extent and
centre of each accepted shadow from its own radial profile).

Simulations and medians are cached in ``--cache`` (default a folder in the
system's temporary directory) so that detector variants can be compared on the
same inputs quickly.

Usage::

    python benchmarks/bench_detect_extent.py --first-seed 20 --seeds 8 [--regime solar] [--refine] [-v]
"""

import argparse
import json
import logging
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from aiflat_astro.combine import median_combine
from aiflat_astro.datasets import make_dusty_video, read_truth, write_truth
from aiflat_astro.detection import detect_dust
from aiflat_astro.evaluate import evaluate_mask
from aiflat_astro.flat import make_flat

log = logging.getLogger("bench_detect_extent")


def load(cache, regime, seed):
    """(median, truth, video path) of one simulated video, from the cache when there."""
    video = cache / f"{regime}_{seed}.ser"
    tpath = cache / f"{regime}_{seed}_truth.fits"
    mpath = cache / f"{regime}_{seed}_median.npy"
    if not (video.exists() and tpath.exists() and mpath.exists()):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            truth = make_dusty_video(video, regime=regime, seed=seed, overwrite=True)
            write_truth(tpath, truth, overwrite=True)
            np.save(mpath, median_combine(video).data)
    return np.load(mpath), read_truth(tpath), video


def run_one(median, truth, video, large, refine=False):
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        det = detect_dust(median, frames=video, f_ratio=truth.params["f_ratio"],
                          pixel_size=truth.params["pixel_size"], refine_extent=refine)
    t_det = time.perf_counter() - t0
    dust = (det.dq & 1) > 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        flat = make_flat(median, det, inpaint="local",
                         inpaint_options={"method": "poly", "poly_degree": 2}, profile="radial").data
    t = truth.transmission.astype(np.float64)
    inside = truth.labels > 0
    res2 = float(np.sum((t[inside] / flat[inside] - 1) ** 2))
    dust2 = float(np.sum((1 - t[inside]) ** 2))
    ev = evaluate_mask(det, truth)
    big = []
    cat = det.catalog
    centre_err = []
    for row in truth.shadows:
        err = np.nan
        if len(cat):
            dist = np.hypot(np.asarray(cat["x_centroid"]) - row["x_centroid"],
                            np.asarray(cat["y_centroid"]) - row["y_centroid"])
            if dist.min() < 0.5 * row["diameter"]:
                err = float(dist.min())
                centre_err.append(err)
        if row["diameter"] < large:
            continue
        px = truth.labels == int(row["id"])
        r = np.sqrt(np.mean((t[px] / flat[px] - 1) ** 2) / np.mean((1 - t[px]) ** 2))
        big.append({"id": int(row["id"]), "diameter": round(float(row["diameter"]), 1),
                    "depth": round(float(row["depth"]), 3), "covered": round(float(dust[px].mean()), 3),
                    "centre_err": round(err, 2),
                    "residual": round(float(r), 3)})
    return {"residual": np.sqrt(res2 / dust2), "res2": res2, "dust2": dust2, "recall": ev["recall"],
            "n_found": ev["n_found"], "n_required": ev["n_required"], "n_detected": ev["n_detected"],
            "n_false": ev["n_false"], "precision": ev["precision"], "iou": ev["pixel_iou"],
            "time": t_det, "large": big, "centre_err": centre_err, "false_positions": ev["false_positions"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--first-seed", type=int, default=20)
    parser.add_argument("--seed-list", type=lambda v: [int(s) for s in v.split(",")], default=None)
    parser.add_argument("--regime", default="solar")
    parser.add_argument("--large", type=float, default=40.0, help="diameter (px) of a 'large' shadow")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "aiflat_extent_cache")
    parser.add_argument("--refine", action="store_true",
                        help="extent from the radial profile (LocalDustDetector(refine_extent=True))")
    parser.add_argument("--json", type=Path, default=None, help="write the per-video results here")
    parser.add_argument("-v", "--verbose", action="store_true", help="per-video lines and large shadows")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    log.setLevel(logging.INFO)
    args.cache.mkdir(parents=True, exist_ok=True)
    seeds = args.seed_list or list(range(args.first_seed, args.first_seed + args.seeds))
    out = {}
    for seed in seeds:
        median, truth, video = load(args.cache, args.regime, seed)
        r = run_one(median, truth, video, args.large, refine=args.refine)
        out[seed] = r
        if args.verbose:
            log.info("seed %d: residual %.3f, found %d/%d, detected %d, false %d, IoU %.2f, %.1f s %s",
                     seed, r["residual"], r["n_found"], r["n_required"], r["n_detected"], r["n_false"],
                     r["iou"] or 0, r["time"],
                     " ".join(f"[{b['diameter']:.0f}px {b['depth']:.2f} cov {b['covered']:.2f} "
                              f"res {b['residual']:.2f}]" for b in r["large"]))
    per = np.array([r["residual"] for r in out.values()])
    pooled_px = np.sqrt(sum(r["res2"] for r in out.values()) / sum(r["dust2"] for r in out.values()))
    found = sum(r["n_found"] for r in out.values())
    req = sum(r["n_required"] for r in out.values())
    det = sum(r["n_detected"] for r in out.values())
    false = sum(r["n_false"] for r in out.values())
    cov = [b["covered"] for r in out.values() for b in r["large"]]
    log.info("%s seeds %s: residual rms-of-videos %.3f, pooled-pixels %.3f; recall %d/%d = %.3f; "
             "precision %d/%d = %.3f; IoU %.3f; large shadows %d, coverage mean %.2f min %.2f; "
             "centre error median %.2f px (large %.2f); detect %.1f s/video",
             args.regime, ",".join(map(str, seeds)), np.sqrt(np.mean(per**2)), pooled_px,
             found, req, found / max(req, 1), det - false, det, (det - false) / max(det, 1),
             np.mean([r["iou"] or 0 for r in out.values()]), len(cov), np.mean(cov) if cov else np.nan,
             np.min(cov) if cov else np.nan,
             np.median([e for r in out.values() for e in r["centre_err"]]),
             np.median([b["centre_err"] for r in out.values() for b in r["large"]] or [np.nan]),
             np.mean([r["time"] for r in out.values()]))
    if args.json:
        args.json.write_text(json.dumps({str(k): v for k, v in out.items()}, indent=1))


if __name__ == "__main__":
    main()
