"""Accuracy of the local dust detector on the realistic simulator, on held-out seeds.

Run by hand (not a test), from the project root::

    python benchmarks/bench_detect_sim.py                   # seeds 11-14 and two dust-free controls
    python benchmarks/bench_detect_sim.py --seeds 2024 7 8  # the diagnosis seeds

Each seed: ``make_dusty_video`` in the default realistic ``'solar'`` scenario (640x512, f/40, 60
frames, 1 px seeing jitter, the limb in a corner), its median, then ``LocalDustDetector`` with the
frames (the motion test) and from the median alone.  Recall counts the true specks deeper than 5x
the median's noise (`aiflat_astro.evaluate.evaluate_mask`); a clump member is found when a
detection covers 20 % of it.  The dust-free controls are the same scenes without dust: every shadow
there is false.  Targets (issue 11): recall >= 0.97, <= 1 false shadow per Mpx, 0 on the control.
Seeds 2024 (the demo), 7 and 8 were used to diagnose and fix the detector; 11-14, 21-22 were not.
"""

import argparse
import json
import sys
import tempfile
import warnings
from pathlib import Path

SHAPE = (512, 640)
KEYS = ("n_required", "n_found", "n_false", "n_detected", "recall", "precision")


def evaluate_seed(seed, directory, *, dust_free=False, n_frames=60):
    """Figures with the frames and from the median alone for one simulated video."""
    from aiflat_astro.combine import median_combine
    from aiflat_astro.datasets import make_dusty_video
    from aiflat_astro.detection import LocalDustDetector
    from aiflat_astro.evaluate import evaluate_mask

    path = Path(directory) / f"sim{seed}{'c' if dust_free else ''}.ser"
    truth = make_dusty_video(path, shape=SHAPE, n_frames=n_frames, seed=seed, dust_free=dust_free)
    median = median_combine(path).data
    out = {}
    for mode, frames in (("frames", path), ("median", None)):
        det = LocalDustDetector()(median, frames=frames, f_ratio=truth.params["f_ratio"],
                                  pixel_size=truth.params["pixel_size"])
        score = evaluate_mask(det, truth)
        out[mode] = {k: score[k] for k in KEYS}
    return out


def pooled(results, mode):
    """Recall, precision and false shadows per Mpx over the seeds."""
    req = sum(r[mode]["n_required"] for r in results.values())
    found = sum(r[mode]["n_found"] for r in results.values())
    det = sum(r[mode]["n_detected"] for r in results.values())
    false = sum(r[mode]["n_false"] for r in results.values())
    mpix = len(results) * SHAPE[0] * SHAPE[1] / 1e6
    precision = (det - false) / det if det else 1.0
    return {"recall": found / req if req else None, "precision": precision,
            "false_per_mpix": false / mpix, "n_required": req, "n_found": found, "n_false": false}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[11, 12, 13, 14])
    parser.add_argument("--controls", type=int, nargs="*", default=[21, 22])
    parser.add_argument("--out", default=str(Path(__file__).with_name("results_detect_sim.json")))
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        dusty = {s: evaluate_seed(s, tmp) for s in args.seeds}
        controls = {s: evaluate_seed(s, tmp, dust_free=True) for s in args.controls}
    result = {"shape": list(SHAPE), "seeds": dusty, "controls": controls,
              "pooled": {m: pooled(dusty, m) for m in ("frames", "median")},
              "control_false": {m: sum(r[m]["n_false"] for r in controls.values())
                                for m in ("frames", "median")}}
    print(json.dumps(result["pooled"], indent=1), json.dumps(result["control_false"]))
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
