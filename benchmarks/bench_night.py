"""A night of videos: throughput on a LocalCluster, per-worker memory, shared vs single-video flat accuracy.

Three measurements (issue 14):

1. **throughput**: ``--n-videos`` simulated videos of about ``--size-mb`` MB
   each (one dust), run as a night in-process (``client=None``: the tasks one
   after another in this process) and on a ``LocalCluster`` of ``--workers``
   worker processes (one thread each), fresh output folders each; the ratio of
   the wall times.  Simulation time is not counted.
2. **memory**: the peak resident memory of every worker process during the
   cluster run (psutil, sampled every 0.1 s), against ``--mem-limit`` (the
   bound of each task's working memory) and the worker's resident memory
   before the run (Python, numpy, astropy, distributed).
3. **accuracy**: with 3 videos of one dust (scene, motion and noise seeds
   differ), the flat of the night against the flat of each single video
   (``aiflat run`` on it alone), on the truth: flat residual
   (`~aiflat_astro.evaluate.evaluate_file` of flat.fits: residual rms inside the
   true shadows over the uncorrected rms; lower is better) and recall of the
   mask.

Usage::

    python benchmarks/bench_night.py [--n-videos 8] [--size-mb 150] [--workers 2] [--mem-limit 256MB]
                                     [--skip-throughput] [--skip-accuracy] [--json results_night.json]
"""

import argparse
import json
import os
import shutil
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np


def simulate(folder, n, *, size_mb, shape, dust_seed=21, first_seed=100):
    from aiflat_astro.datasets import make_dusty_video

    frame_bytes = 2 * shape[0] * shape[1]
    n_frames = max(10, int(size_mb * 1e6 / frame_bytes))
    paths, truths = [], []
    for k in range(n):
        p = Path(folder) / f"v{k:02d}.ser"
        truths.append(make_dusty_video(p, shape=shape, n_frames=n_frames, seed=first_seed + k,
                                       dust_seed=dust_seed))
        paths.append(p)
    return paths, truths, n_frames


class PeakRSS:
    """Peak RSS of a set of processes, sampled in a thread."""

    def __init__(self, pids, interval=0.1):
        import psutil

        self.procs = {pid: psutil.Process(pid) for pid in pids}
        self.peak = {pid: 0 for pid in pids}
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            for pid, proc in self.procs.items():
                try:
                    self.peak[pid] = max(self.peak[pid], proc.memory_info().rss)
                except Exception:  # a worker restarted: no more samples from it
                    pass
            time.sleep(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def throughput(args, folder):
    import distributed

    from aiflat_astro.night import local_cluster, run_night
    from aiflat_astro.utils._atomic import parse_size

    shape = tuple(int(s) for s in args.shape.split("x"))[::-1]
    t0 = time.perf_counter()
    paths, _, n_frames = simulate(folder, args.n_videos, size_mb=args.size_mb, shape=shape)
    total_mb = sum(p.stat().st_size for p in paths) / 1e6
    print(f"simulated {len(paths)} videos of {n_frames} frames {shape[1]}x{shape[0]} "
          f"({total_mb / len(paths):.0f} MB each) in {time.perf_counter() - t0:.0f} s")
    opts = {"mem_limit": args.mem_limit}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        seq = run_night(paths, Path(folder) / "out_seq", **opts)
        t_seq = time.perf_counter() - t0
    print(f"in-process: {t_seq:.1f} s ({total_mb / t_seq:.1f} MB/s); steps "
          + ", ".join(f"{k} {v:.1f}" for k, v in seq["seconds"].items()))
    with local_cluster(args.workers, mem_limit=args.mem_limit) as lc, distributed.Client(lc) as client:
        client.run(lambda: __import__("aiflat_astro.night"))  # imports before the clock, as a warm cluster
        pids = list(client.run(os.getpid).values())
        import psutil

        idle = {pid: psutil.Process(pid).memory_info().rss for pid in pids}
        with warnings.catch_warnings(), PeakRSS(pids) as rss:
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            par = run_night(paths, Path(folder) / "out_par", client=client, **opts)
            t_par = time.perf_counter() - t0
    print(f"{args.workers} workers: {t_par:.1f} s ({total_mb / t_par:.1f} MB/s); steps "
          + ", ".join(f"{k} {v:.1f}" for k, v in par["seconds"].items()))
    same = [a["output_sha256"] for a in seq["videos"]] == [b["output_sha256"] for b in par["videos"]]
    limit = parse_size(args.mem_limit)
    mem = [{"pid": pid, "idle_mb": idle[pid] / 1e6, "peak_mb": rss.peak[pid] / 1e6,
            "peak_minus_idle_mb": (rss.peak[pid] - idle[pid]) / 1e6} for pid in pids]
    for m in mem:
        print(f"  worker {m['pid']}: idle {m['idle_mb']:.0f} MB, peak {m['peak_mb']:.0f} MB "
              f"(+{m['peak_minus_idle_mb']:.0f} MB; mem_limit {limit / 1e6:.0f} MB)")
    print(f"speed-up {t_seq / t_par:.2f}x; same calibrated videos: {same}; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    return {"n_videos": len(paths), "mb_each": total_mb / len(paths), "n_frames": n_frames,
            "shape": list(shape), "seconds_in_process": t_seq, "seconds_cluster": t_par,
            "workers": args.workers, "speedup": t_seq / t_par, "same_outputs": same,
            "steps_in_process": seq["seconds"], "steps_cluster": par["seconds"], "memory": mem,
            "mem_limit_mb": limit / 1e6, "loadavg": os.getloadavg()[0]}


def accuracy(args, folder):
    from aiflat_astro.evaluate import evaluate_file
    from aiflat_astro.pipeline import run_pipeline

    rows = []
    for dust_seed in args.dust_seeds:
        sub = Path(folder) / f"acc{dust_seed}"
        sub.mkdir()
        from aiflat_astro.datasets import make_dusty_video

        paths, truths = [], []
        for k in range(3):
            p = sub / f"s{k}.ser"
            truths.append(make_dusty_video(p, shape=(240, 320), n_frames=args.acc_frames, n_dust=10,
                                           seed=10 * dust_seed + k, dust_seed=dust_seed))
            paths.append(p)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            singles = []
            for k, p in enumerate(paths):
                out = sub / f"single{k}"
                run_pipeline(p, out, apply=False)
                singles.append((evaluate_file(out / "flat.fits", truths[k]),
                                evaluate_file(out / "mask.fits", truths[k])))
            night = run_pipeline(paths, sub / "night", apply=False, force=True)
            shared = (evaluate_file(sub / "night" / "flat.fits", truths[0]),
                      evaluate_file(sub / "night" / "mask.fits", truths[0]))
        row = {"dust_seed": dust_seed,
               "single_residual": [s[0].get("residual_ratio") for s in singles],
               "single_recall": [s[1].get("recall") for s in singles],
               "night_residual": shared[0].get("residual_ratio"), "night_recall": shared[1].get("recall"),
               "night_status": [v["status"] for v in night["videos"]]}
        rows.append(row)
        print(f"dust {dust_seed}: single residual {', '.join(f'{r:.3f}' for r in row['single_residual'])} "
              f"recall {', '.join(f'{r:.2f}' for r in row['single_recall'])}; night residual "
              f"{row['night_residual']:.3f} recall {row['night_recall']:.2f}; checks {row['night_status']}")
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-videos", type=int, default=8)
    p.add_argument("--size-mb", type=float, default=150)
    p.add_argument("--shape", default="640x512", help="frame width x height")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--mem-limit", default="256MB")
    p.add_argument("--dust-seeds", type=int, nargs="+", default=[31, 32])
    p.add_argument("--acc-frames", type=int, default=40)
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument("--skip-accuracy", action="store_true")
    p.add_argument("--json", help="write the figures to this file")
    p.add_argument("--tmp", help="working folder (default: a temporary one, removed)")
    args = p.parse_args(argv)
    folder = Path(args.tmp or tempfile.mkdtemp(prefix="bench_night_"))
    folder.mkdir(parents=True, exist_ok=True)
    results = {}
    try:
        if not args.skip_throughput:
            results["throughput"] = throughput(args, folder)
        if not args.skip_accuracy:
            results["accuracy"] = accuracy(args, folder)
    finally:
        if not args.tmp:
            shutil.rmtree(folder, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=float) + "\n")
    return results


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
