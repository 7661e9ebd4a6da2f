"""How many frames the jitter estimate needs: its error against the number of frames used.

The jitter estimate (`aiflat_astro.flat.estimators.jitter.jitter_clean`)
regresses each pixel of a shadow's box on the frames' shifts; the noise of
the fitted slopes falls as one over the square root of the number of
frames, but what is left once it is small is the estimate's *bias* (the
quadratic model of the scene over the shifts, the integration, the
registration): past some number of frames the error stops falling and every
further frame only costs its registration (a few milliseconds a frame and a
shadow).  This benchmark measures that point on long simulated videos
(`make_dusty_video`, the solar scenario, the true dust mask), one
``jitter_clean`` per ``max_frames`` on the same video, and prints per
``max_frames`` the figure of ``bench_jitter.py`` (rms over the true shadow
pixels of ``clean / true_clean - 1``) pooled over the seeds, over the
shadows filled at that count and (``common``, the fair comparison) over
the shadows filled at every count, the shadows filled, and the time.

Usage::

    python benchmarks/bench_jitter_frames.py --seeds 50-53 --frames 400 \\
        --counts 20,40,60,80,120,200,400,200/60 [--level 0.55] [--json out.json]

A count ``200/60`` is ``max_frames=200, first_frames=60`` (the default:
every shadow on 60 frames, the unsettled ones on all 200); a plain count
sets ``first_frames=None`` (every shadow on every selected frame).
``--level`` is the simulator's disc level as a fraction of full scale
(default 0.55; a fainter video has less signal per frame and may need
more frames).  Figures are in ``docs/performance.rst``.
"""

import argparse
import json
import os
import tempfile
import time

import numpy as np

from aiflat_astro.combine import median_combine
from aiflat_astro.datasets import make_dusty_video
from aiflat_astro.flat.estimators.jitter import jitter_clean


def _seeds(text):
    out = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out += list(range(int(lo), int(hi or lo) + 1))
    return out


def _one_video(seed, n_frames, shape, counts, level):
    """Per count: (rms of clean / true_clean - 1 over the filled shadows, seconds, shadows filled,
    the same rms over the shadows filled at every count)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "v.ser")
        truth = make_dusty_video(path, shape=shape, n_frames=n_frames, seed=seed, level=level)
        median = median_combine(path).data
        mask = truth.labels > 0
        true_clean = median / truth.transmission
        runs = {}
        for count in counts:
            t0 = time.perf_counter()
            most, _, first = count.partition("/")
            clean, report = jitter_clean(median, mask, path, max_frames=int(most),
                                         first_frames=int(first) if first else None)
            dt = time.perf_counter() - t0
            used = np.zeros(truth.labels.max() + 1, bool)
            for row in report:
                used[row["label"]] = row["used"]
            runs[count] = (clean, used, dt)
        common = np.logical_and.reduce([used for _, used, _ in runs.values()])
        return {count: (_rms(clean, true_clean, used[truth.labels] & mask), dt, int(used.sum()),
                        _rms(clean, true_clean, common[truth.labels] & mask))
                for count, (clean, used, dt) in runs.items()}


def _rms(clean, true_clean, take):
    err = clean[take] / true_clean[take] - 1
    return float(np.sqrt(np.mean(err**2))) if err.size else np.nan


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="50-53")
    parser.add_argument("--frames", type=int, default=400)
    parser.add_argument("--shape", default="256x320")
    parser.add_argument("--counts", default="20,30,40,60,80,120,200,400")
    parser.add_argument("--level", type=float, default=0.55)
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    counts = args.counts.split(",")
    shape = tuple(int(v) for v in args.shape.split("x"))
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    per_seed = {seed: _one_video(seed, args.frames, shape, counts, args.level)
                for seed in _seeds(args.seeds)}
    print(f"{'max_frames':>10s} {'rms err':>8s} {'common':>8s} {'per seed':>30s} "
          f"{'filled':>12s} {'s':>6s}")
    table = {}
    for count in counts:
        errs = [per_seed[s][count][0] for s in per_seed]
        secs = [per_seed[s][count][1] for s in per_seed]
        common = [per_seed[s][count][3] for s in per_seed]
        filled = [per_seed[s][count][2] for s in per_seed]
        pooled = float(np.sqrt(np.nanmean(np.square(errs))))
        pooled_common = float(np.sqrt(np.nanmean(np.square(common))))
        table[count] = {"rms": pooled, "rms_common": pooled_common, "per_seed": errs,
                        "per_seed_common": common, "seconds": float(np.mean(secs)),
                        "filled": filled}
        print(f"{count:>10s} {pooled:8.4f} {pooled_common:8.4f} "
              f"{' '.join(f'{e:.4f}' for e in common):>30s} "
              f"{' '.join(str(f) for f in filled):>12s} {np.mean(secs):6.2f}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": vars(args), "table": table}, fh, indent=1)


if __name__ == "__main__":
    main()
