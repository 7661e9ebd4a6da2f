"""Benchmark of ``aiflat run`` against ``aiflat median`` and ``cp`` of the same video.

Run by hand (not a test)::

    python benchmarks/bench_run.py                         # 1280x960x60 simulated video
    python benchmarks/bench_run.py --frames 410            # a 1 GB video (1280x960x410)
    python benchmarks/bench_run.py --video sun.ser         # an existing video
    python benchmarks/bench_run.py --json results_run.json # also write the figures

Each command runs in its own process, side by side in one run, ``--repeat``
times interleaved (the machine may be shared); the table gives the range of
wall times and the ratios to ``aiflat median`` of the same repeat, then the
per-step times of ``aiflat run`` (its ``aiflat_run.json``: median, mask, i.e.
detection, flat, apply) and the 1-minute load average before and after.
Simulated videos are written to a temporary directory and removed.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _wall(cmd):
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - t0


def _simulate(aiflat, video, frames, shape, drift):
    cmd = aiflat + ["simulate", "-o", str(video), "--frames", str(frames), "--shape", shape,
                    "--seed", "2"]
    if drift:
        cmd += ["--drift", str(drift)]
    subprocess.run(cmd, check=True, capture_output=True)


def _one_repeat(aiflat, video, work, rep, run_options):
    """Wall times of cp, aiflat median and aiflat run, and the run's per-step seconds."""
    times = {"cp": _wall(["cp", str(video), str(work / f"copy{rep}.ser")])}
    (work / f"copy{rep}.ser").unlink()
    median = aiflat + ["median", str(video), "-o", str(work / f"m{rep}.fits")]
    times["aiflat median"] = _wall(median)
    out = work / f"run{rep}"
    times["aiflat run"] = _wall(aiflat + ["run", str(video), "-o", str(out)] + run_options)
    steps = json.loads((out / "aiflat_run.json").read_text())["last_run"]["seconds"]
    shutil.rmtree(out)
    return times, steps


def _print_table(video, rows, steps):
    print(f"video {video.name}: {video.stat().st_size / 1e6:.0f} MB")
    for name, times in rows.items():
        ratios = [t / m for t, m in zip(times, rows["aiflat median"], strict=True)]
        print(f"{name:14s} {min(times):7.2f}-{max(times):7.2f} s   "
              f"x median {min(ratios):6.2f}-{max(ratios):6.2f}")
    for name in steps[0]:
        values = [s[name] for s in steps]
        print(f"  run step {name:8s} {min(values):7.2f}-{max(values):7.2f} s")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--video", help="an existing SER video (default: simulate one)")
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--shape", default="960x1280", help="HxW of the simulated video")
    parser.add_argument("--drift", type=float, default=0.0, help="drift of the simulated video, px")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--inpaint", default=None, help="aiflat run --inpaint (default: local)")
    parser.add_argument("--json", help="write the figures to this JSON file")
    args = parser.parse_args(argv)
    aiflat = [sys.executable, "-m", "aiflat_astro.cli"] if shutil.which("aiflat") is None \
        else ["aiflat"]
    run_options = ["--inpaint", args.inpaint] if args.inpaint else []
    with tempfile.TemporaryDirectory(prefix="aiflat-bench-run-") as tmp:
        work = Path(tmp)
        video = Path(args.video) if args.video else work / "bench.ser"
        if not args.video:
            _simulate(aiflat, video, args.frames, args.shape, args.drift)
        load_before = os.getloadavg()[0]
        rows = {"cp": [], "aiflat median": [], "aiflat run": []}
        steps = []
        for rep in range(args.repeat):
            times, step = _one_repeat(aiflat, video, work, rep, run_options)
            for name, t in times.items():
                rows[name].append(t)
            steps.append(step)
        load_after = os.getloadavg()[0]
        _print_table(video, rows, steps)
        print(f"1-minute load average {load_before:.2f} before, {load_after:.2f} after "
              f"({os.cpu_count()} cores)")
        if args.json:
            result = {"video": video.name, "size_mb": round(video.stat().st_size / 1e6),
                      "frames": args.frames if not args.video else None, "shape": args.shape,
                      "inpaint": args.inpaint or "local",
                      "wall_s": {k: [round(t, 2) for t in v] for k, v in rows.items()},
                      "run_steps_s": [{k: round(v, 2) for k, v in s.items()} for s in steps],
                      "load_average": [round(load_before, 2), round(load_after, 2)]}
            Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
