"""Accuracy of the measured dust flat against local interpolation, on simulated videos.

For each simulated solar video (known truth) this script makes the flat twice
from the same median and the same mask -- ``inpaint='local'`` and
``inpaint='measured'`` -- and reports the rms error of the flat against the
true transmission inside the shadows, and the registration error of the
drift path.  Two masks are used: the truth (the simulator's labels, so only
the *hand* is compared) and the local detector's (the real pipeline; errors
are then taken on the truth shadows that the detector found).

Run:  python benchmarks/bench_measured.py [--quick] [--json results.json]
"""

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from aiflat_astro.combine import median_combine
from aiflat_astro.datasets import make_dusty_video
from aiflat_astro.detection import detect_dust
from aiflat_astro.detection._base import DustDetection, empty_catalog
from aiflat_astro.dq import DustDQ, expand_mask
from aiflat_astro.flat import make_flat
from aiflat_astro.flat.estimators.measured import measure_transmission

CASES = [
    # (label, options of make_dusty_video)
    ("drift 60 px, 100 frames", dict(shape=(200, 256), n_frames=100, drift=60.0, seed=0)),
    ("drift 60 px, 100 frames", dict(shape=(200, 256), n_frames=100, drift=60.0, seed=1)),
    ("drift 40 px, 100 frames", dict(shape=(200, 256), n_frames=100, drift=40.0, seed=2)),
    ("drift 80 px, 120 frames, 480x640", dict(shape=(480, 640), n_frames=120, drift=80.0, seed=0)),
    ("drift 20 px, 100 frames", dict(shape=(200, 256), n_frames=100, drift=20.0, seed=3)),
]


def truth_detection(truth):
    dust = truth.labels > 0
    weight, halo = expand_mask(dust)
    dq = np.where(dust, DustDQ.DUST, 0).astype(np.uint8)
    dq[halo] |= np.uint8(DustDQ.DUST_HALO)
    return DustDetection(dq=dq, weight=weight, catalog=empty_catalog(), detector="truth",
                         labels=truth.labels)


def rms(flat, truth, select):
    return float(np.sqrt(np.mean((flat.data[select] - truth.transmission[select]) ** 2)))


def run_case(label, options, workdir):
    path = Path(workdir) / "video.ser"
    truth = make_dusty_video(path, overwrite=True, **options)
    median = median_combine(path)
    out = {"case": label, **{k: v for k, v in options.items() if k != "shape"},
           "shape": list(options["shape"])}
    t0 = time.perf_counter()
    det_truth = truth_detection(truth)
    mt = measure_transmission(path, det_truth.dust_mask, weight=det_truth.weight,
                              labels=det_truth.labels)
    out["seconds_measure"] = round(time.perf_counter() - t0, 1)
    err = mt.drift.shifts - truth.shifts
    err -= np.median(err, axis=0)
    out["registration_rms_px"] = round(float(np.sqrt(np.mean(np.sum(err**2, axis=1)))), 3)
    out["registration_max_px"] = round(float(np.abs(err).max()), 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        detected = detect_dust(median, detector="local")
        for name, det in (("truth_mask", det_truth), ("detector_mask", detected)):
            local = make_flat(median, det, inpaint="local")
            measured = make_flat(median, det, inpaint="measured", frames=path,
                                 inpaint_options={"drift": mt.drift})
            info = json.loads(measured.meta["PROVJSON"])["inpaint_info"]
            select = (truth.labels > 0) & (det.weight > 0)
            out[name] = {"n_shadows": len(info["shadows"]), "n_measured": info["n_measured"],
                         "measured_rms": round(rms(measured, truth, select), 5),
                         "local_rms": round(rms(local, truth, select), 5)}
            out[name]["ratio"] = round(out[name]["local_rms"] / out[name]["measured_rms"], 1)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="first case only")
    parser.add_argument("--json", help="write the results there")
    args = parser.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory() as workdir:
        for label, options in CASES[:1] if args.quick else CASES:
            res = run_case(label, options, workdir)
            results.append(res)
            print(json.dumps(res))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
