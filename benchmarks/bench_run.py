"""Benchmark of ``aiflat run`` against ``aiflat median`` and ``cp`` of the same video.

Run by hand (not a test)::

    python benchmarks/bench_run.py                         # 1280x960x60 simulated video
    python benchmarks/bench_run.py --video sun.ser         # an existing video

Each command runs in its own process, side by side in one run, ``--repeat``
times interleaved (the machine may be shared); the table gives the range of
wall times and the ratios to ``aiflat median`` of the same repeat.  The
per-step times of ``aiflat run`` are in its ``-v`` log.
"""

import argparse
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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--video", help="an existing SER video (default: simulate one)")
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--shape", default="960x1280", help="HxW of the simulated video")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args(argv)
    aiflat = [sys.executable, "-m", "aiflat_astro.cli"] if shutil.which("aiflat") is None \
        else ["aiflat"]
    with tempfile.TemporaryDirectory(prefix="aiflat-bench-run-") as tmp:
        work = Path(tmp)
        video = Path(args.video) if args.video else work / "bench.ser"
        if not args.video:
            subprocess.run(aiflat + ["simulate", "-o", str(video), "--frames", str(args.frames),
                                     "--shape", args.shape, "--seed", "2"], check=True,
                           capture_output=True)
        rows = {"cp": [], "aiflat median": [], "aiflat run": []}
        for rep in range(args.repeat):
            rows["cp"].append(_wall(["cp", str(video), str(work / f"copy{rep}.ser")]))
            rows["aiflat median"].append(_wall(aiflat + ["median", str(video), "-o",
                                                         str(work / f"m{rep}.fits")]))
            rows["aiflat run"].append(_wall(aiflat + ["run", str(video), "-o",
                                                      str(work / f"run{rep}")]))
        print(f"video {video.name}: {video.stat().st_size / 1e6:.0f} MB")
        for name, times in rows.items():
            ratios = [t / m for t, m in zip(times, rows["aiflat median"])]
            print(f"{name:14s} {min(times):7.2f}-{max(times):7.2f} s   "
                  f"x median {min(ratios):6.2f}-{max(ratios):6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
