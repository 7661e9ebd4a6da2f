"""A night of videos: throughput on a LocalCluster, per-worker memory, shared vs single-video flat accuracy.

Three measurements (issue 14):

1. **throughput**: ``--n-videos`` simulated videos of about ``--size-mb`` MB
   each (one dust), the baseline being ``aiflat run`` on each video alone, one
   after another in this process (each detects and makes its own flat), against
   the night (``force=True``: every video calibrated, as the baseline does) on a
   ``LocalCluster`` of ``--workers`` worker processes (one thread each); the
   ratio of the wall times.  Simulation time is not counted.
2. **memory**: the peak resident memory of every worker process during the
   cluster run (psutil, sampled every 0.1 s), against ``--mem-limit`` (the
   bound of each task's working memory) and the worker's *import floor*: its
   resident memory after importing what the tasks use (Python, numpy, scipy,
   astropy, distributed, aiflat_astro), before any data.
3. **accuracy**: for each ``--regimes`` (the realistic default ``solar`` and
   ``solar-soft``) and held-out ``--dust-seeds``, 3 videos of one dust (scene,
   motion and noise seeds differ), the flat of the night against the flat of each single video
   (``aiflat run`` on it alone), on the truth: flat residual
   (`~aiflat_astro.evaluate.evaluate_file` of flat.fits: residual rms inside the
   true shadows over the uncorrected rms; lower is better) and recall of the
   mask.
4. **the dust-change check** (``--check-seeds``): realistic default nights of
   ``--check-same`` videos of one dust, one more with a lit speck divided
   out of its frames and one with a new speck (at least 30 % deep) multiplied
   in; how many same-dust videos are called ``dust-mismatch`` and whether the
   removed and the new speck are named at their places.

Usage::

    python benchmarks/bench_night.py [--n-videos 8] [--size-mb 150] [--workers 2] [--mem-limit 256MB]
                                     [--skip-throughput] [--skip-accuracy] [--skip-check]
                                     [--check-seeds 91 92 93] [--json results_night.json]
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np

# the dust changes of the check's cases are shared with tests/test_night_check.py
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


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


def _warm_imports():
    """Import what the tasks use (the worker's floor before any data), return the RSS in bytes."""
    import importlib

    import psutil

    for mod in ("aiflat_astro.night", "aiflat_astro.combine", "aiflat_astro.flat",
                "aiflat_astro.flat.estimators.jitter", "aiflat_astro.flat.estimators.local",
                "aiflat_astro.detection.local", "aiflat_astro.apply", "aiflat_astro.io.fits",
                "aiflat_astro.detection.outputs", "aiflat_astro._nightflat"):
        importlib.import_module(mod)
    return psutil.Process().memory_info().rss


def sequential_singles(paths, folder, opts):
    """``aiflat run`` on each video alone, one after another, in this process (the baseline)."""
    from aiflat_astro.pipeline import run_pipeline

    t0, c0 = time.perf_counter(), time.process_time()
    steps = {}
    for k, p in enumerate(paths):
        r = run_pipeline(p, Path(folder) / f"single{k:02d}", **opts)
        for name, sec in r["seconds"].items():
            steps[name] = steps.get(name, 0.0) + sec
    return time.perf_counter() - t0, steps, time.process_time() - c0


def _cpu_seconds():
    import psutil

    t = psutil.Process().cpu_times()
    return t.user + t.system


def cluster_night(paths, folder, args, opts):
    """The night on a LocalCluster; wall time, result and per-worker memory."""
    import distributed

    from aiflat_astro.night import local_cluster, run_night

    with local_cluster(args.workers, mem_limit=args.mem_limit) as lc, distributed.Client(lc) as client:
        floor = client.run(_warm_imports)  # imports before the clock, as a warm cluster
        pids = client.run(os.getpid)
        with PeakRSS(list(pids.values())) as rss:
            cpu0, c0 = client.run(_cpu_seconds), time.process_time()
            t0 = time.perf_counter()
            night = run_night(paths, Path(folder) / "night_cluster", client=client, force=True, **opts)
            t_night = time.perf_counter() - t0
            cpu1, c1 = client.run(_cpu_seconds), time.process_time()
    cpu = {"workers": sum(cpu1[a] - cpu0[a] for a in cpu0), "driver": c1 - c0}
    mem = [{"pid": pid, "import_floor_mb": floor[addr] / 1e6, "peak_mb": rss.peak[pid] / 1e6,
            "data_mb": (rss.peak[pid] - floor[addr]) / 1e6} for addr, pid in pids.items()]
    return t_night, night, mem, cpu


def _reset_peak():
    """Reset this process's peak resident memory (Linux: VmHWM, /proc/self/clear_refs) and return the RSS."""
    import psutil

    Path("/proc/self/clear_refs").write_text("5")
    return psutil.Process().memory_info().rss


def _peak_rss():
    """This process's peak resident memory since the last `_reset_peak` (bytes)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def task_memory(args, folder):
    """Peak RSS of each task of a night on one fresh worker process, one task at a time (its HWM reset before).

    The night's tasks are submitted one by one (the runner's ``map`` is
    replaced here, the tasks are the library's): before each, the worker's
    peak is reset; after it, read.  The worker's first task pays its imports.
    """
    import distributed

    from aiflat_astro import night as night_mod
    from aiflat_astro.utils._atomic import parse_size

    shape = tuple(int(s) for s in args.shape.split("x"))[::-1]
    videos = Path(folder) / "videos"
    videos.mkdir(exist_ok=True)
    paths = sorted(videos.glob("v*.ser"))
    if len(paths) != args.n_videos:  # simulated once for the trees compared (--tmp)
        paths, _truths, n_frames = simulate(videos, args.n_videos, size_mb=args.size_mb, shape=shape)
    from aiflat_astro.io import open_frames

    with open_frames(paths[0]) as src:
        n_frames = src.n_frames
    rows = []

    def one_by_one(self, label, calls):
        out = []
        for fn, a, kw in calls:
            before = self.client.run(_reset_peak)
            fut = self.client.submit(fn, *a, pure=False, **kw)
            try:
                out.append((fut.result(), None))
            except Exception as exc:
                out.append((None, exc))
            peak = self.client.run(_peak_rss)
            rows.append({"task": fn.__name__, "rss_before_mb": max(before.values()) / 1e6,
                         "peak_mb": max(peak.values()) / 1e6})
            self.bar.update(1)
        return out

    with night_mod.local_cluster(1, mem_limit=args.mem_limit) as lc, distributed.Client(lc) as client:
        start = max(client.run(_reset_peak).values())
        night_mod._Runner.map = one_by_one
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            night_mod.run_night(paths, Path(folder) / f"night_tasks_{os.getpid()}", client=client, force=True,
                                mem_limit=args.mem_limit)
    per_task = {}
    for r in rows:
        per_task[r["task"]] = max(per_task.get(r["task"], 0.0), r["peak_mb"])
    load = os.getloadavg()
    print(f"per-task peak RSS on one worker ({len(paths)} videos of {n_frames} frames {shape[1]}x{shape[0]}, "
          f"mem_limit {parse_size(args.mem_limit) / 1e6:.0f} MB, worker started at {start / 1e6:.0f} MB; "
          f"load {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}): "
          + ", ".join(f"{k} {v:.0f}" for k, v in per_task.items()), flush=True)
    return {"tree": str(Path(night_mod.__file__).parents[1]), "n_videos": len(paths), "n_frames": n_frames,
            "shape": list(shape), "mem_limit_mb": parse_size(args.mem_limit) / 1e6, "worker_start_mb": start / 1e6,
            "peak_mb_per_task": per_task, "tasks": rows, "loadavg": list(load)}


def flat_accuracy(folder, truths):
    """Flat residual on the truth of each single-video flat and of the night's (one dust: one truth)."""
    from aiflat_astro.evaluate import evaluate_file

    singles = [evaluate_file(Path(folder) / f"single{k:02d}" / "flat.fits", t)["residual_ratio"]
               for k, t in enumerate(truths)]
    return {"singles": singles,
            "night": evaluate_file(Path(folder) / "night_cluster" / "flat.fits", truths[0])["residual_ratio"]}


def throughput(args, folder):
    from aiflat_astro.utils._atomic import parse_size

    shape = tuple(int(s) for s in args.shape.split("x"))[::-1]
    t0 = time.perf_counter()
    paths, truths, n_frames = simulate(folder, args.n_videos, size_mb=args.size_mb, shape=shape)
    total_mb = sum(p.stat().st_size for p in paths) / 1e6
    print(f"simulated {len(paths)} videos of {n_frames} frames {shape[1]}x{shape[0]} "
          f"({total_mb / len(paths):.0f} MB each) in {time.perf_counter() - t0:.0f} s; load {os.getloadavg()}",
          flush=True)
    opts = {"mem_limit": args.mem_limit}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t_seq, seq_steps, cpu_seq = sequential_singles(paths, folder, opts)
        print(f"{len(paths)} single-video runs in-process, one after another: {t_seq:.1f} s "
              f"({total_mb / t_seq:.1f} MB/s); steps " + ", ".join(f"{k} {v:.1f}" for k, v in seq_steps.items()),
              flush=True)
        t_par, night, mem, cpu = cluster_night(paths, folder, args, opts)
    print(f"the night on {args.workers} workers: {t_par:.1f} s ({total_mb / t_par:.1f} MB/s); steps "
          + ", ".join(f"{k} {v:.1f}" for k, v in night["seconds"].items()))
    limit = parse_size(args.mem_limit)
    for m in mem:
        print(f"  worker {m['pid']}: import floor {m['import_floor_mb']:.0f} MB, peak {m['peak_mb']:.0f} MB "
              f"(data +{m['data_mb']:.0f} MB; mem_limit {limit / 1e6:.0f} MB)")
    status = [v["status"] for v in night["videos"]]
    acc = flat_accuracy(folder, truths)
    print(f"flat residual on the truth: single videos {', '.join(f'{r:.3f}' for r in acc['singles'])}; "
          f"the night {acc['night']:.3f}")
    load = os.getloadavg()
    cpu_night = cpu["workers"] + cpu["driver"]
    ideal = cpu_seq / max(cpu_night / args.workers, cpu["driver"])
    print(f"speed-up {t_seq / t_par:.2f}x (target >= 1.7); statuses {status}; load average "
          f"{load[0]:.1f} {load[1]:.1f} {load[2]:.1f} on {os.cpu_count()} cores")
    print(f"CPU seconds: single-video runs {cpu_seq:.1f}, the night {cpu_night:.1f} (workers {cpu['workers']:.1f}, "
          f"driver {cpu['driver']:.1f}): {cpu_seq / cpu_night:.2f}x less work; on {args.workers} free cores "
          f"at most {ideal:.2f}x")
    return {"n_videos": len(paths), "mb_each": total_mb / len(paths), "n_frames": n_frames,
            "shape": list(shape), "seconds_sequential_singles": t_seq, "seconds_cluster_night": t_par,
            "workers": args.workers, "speedup": t_seq / t_par, "statuses": status,
            "steps_singles": seq_steps, "steps_cluster": night["seconds"], "memory": mem,
            "residual_singles": acc["singles"], "residual_night": acc["night"],
            "cpu_seconds_singles": cpu_seq, "cpu_seconds_night_workers": cpu["workers"],
            "cpu_seconds_night_driver": cpu["driver"], "work_ratio": cpu_seq / cpu_night,
            "speedup_on_free_cores_at_most": ideal,
            "mem_limit_mb": limit / 1e6, "loadavg": list(load)}


def accuracy(args, folder):
    rows = []
    for regime in args.regimes:
        for dust_seed in args.dust_seeds:
            row = accuracy_case(args, Path(folder) / f"acc_{regime}_{dust_seed}", regime, dust_seed)
            rows.append(row)
            best = min(row["single_residual"])
            print(f"{regime} dust {dust_seed}: single residual "
                  f"{', '.join(f'{r:.3f}' for r in row['single_residual'])} recall "
                  f"{', '.join(f'{r:.2f}' for r in row['single_recall'])}; night residual "
                  f"{row['night_residual']:.3f} recall {row['night_recall']:.2f} "
                  f"({'met' if row['night_residual'] <= best else 'NOT met'} against the best single "
                  f"{best:.3f}); checks {row['night_status']}", flush=True)
    return rows


def accuracy_case(args, sub, regime, dust_seed):
    """Three videos of one dust: each alone, then the night, all against the truth."""
    from aiflat_astro.datasets import make_dusty_video
    from aiflat_astro.evaluate import evaluate_file
    from aiflat_astro.pipeline import run_pipeline

    sub.mkdir(parents=True)
    paths, truths = [], []
    for k in range(3):
        p = sub / f"s{k}.ser"
        truths.append(make_dusty_video(p, shape=(240, 320), n_frames=args.acc_frames, n_dust=10, regime=regime,
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
    return {"regime": regime, "dust_seed": dust_seed,
            "single_residual": [s[0].get("residual_ratio") for s in singles],
            "single_recall": [s[1].get("recall") for s in singles],
            "single_precision": [s[1].get("precision") for s in singles],
            "night_residual": shared[0].get("residual_ratio"), "night_recall": shared[1].get("recall"),
            "night_precision": shared[1].get("precision"),
            "night_status": [v["status"] for v in night["videos"]]}


def check_case(args, sub, dust_seed, shape=(240, 320)):
    """One realistic night: same-dust videos, one with a speck removed, one with a new speck."""
    from aiflat_astro.datasets import make_dusty_video
    from aiflat_astro.pipeline import run_pipeline

    sub.mkdir(parents=True)
    n = args.check_same
    paths, truths = [], []
    for k in range(n + 2):
        paths.append(sub / f"v{k}.ser")
        truths.append(make_dusty_video(paths[-1], shape=shape, n_frames=args.acc_frames, seed=1000 * dust_seed + k,
                                       dust_seed=dust_seed))
    from _dustchange import add_speck, remove_speck

    removed = remove_speck(paths[n], truths[n])
    added = add_speck(paths[n + 1], truths[n + 1], shape, 10 * dust_seed)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        night = run_pipeline([str(p) for p in paths], sub / "night", apply=False)
    checks = [v["dust_check"] for v in night["videos"]]

    def named(places, xy):
        return xy is not None and any(np.hypot(px - xy[0], py - xy[1]) < 5 for px, py in places)

    return {"dust_seed": dust_seed, "same_mismatched": sum(not c["match"] for c in checks[:n]), "same": n,
            "same_new": sum(c["n_new"] for c in checks[:n]),
            "removed_found": named(checks[n]["missing"], removed), "removed_mismatch": not checks[n]["match"],
            "new_found": named(checks[n + 1]["new"], added), "new_mismatch": not checks[n + 1]["match"],
            "messages": [c["message"] for c in checks], "seconds_night": time.perf_counter() - t0,
            "loadavg": list(os.getloadavg())}


def check(args, folder):
    rows = []
    for dust_seed in args.check_seeds:
        row = check_case(args, Path(folder) / f"check_{dust_seed}", dust_seed)
        rows.append(row)
        print(f"check, dust {dust_seed}: same-dust mismatched {row['same_mismatched']} of {row['same']}; removed "
              f"speck {'found' if row['removed_found'] else 'MISSED'}; new speck "
              f"{'found' if row['new_found'] else 'MISSED'} ({row['seconds_night']:.0f} s, load "
              f"{row['loadavg'][0]:.1f})", flush=True)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-videos", type=int, default=8)
    p.add_argument("--size-mb", type=float, default=150)
    p.add_argument("--shape", default="640x512", help="frame width x height")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--mem-limit", default="256MB")
    p.add_argument("--dust-seeds", type=int, nargs="+", default=[51, 52, 53],
                   help="held-out dust seeds (not looked at while developing)")
    p.add_argument("--regimes", nargs="+", default=["solar", "solar-soft"])
    p.add_argument("--acc-frames", type=int, default=40)
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument("--skip-accuracy", action="store_true")
    p.add_argument("--skip-check", action="store_true")
    p.add_argument("--check-seeds", type=int, nargs="+", default=[91, 92, 93],
                   help="held-out dust seeds of the dust-change check's nights")
    p.add_argument("--check-same", type=int, default=4, help="same-dust videos in each check night")
    p.add_argument("--task-memory", action="store_true",
                   help="only the peak RSS of each task on one worker (--n-videos, --size-mb, --shape)")
    p.add_argument("--json", help="write the figures to this file")
    p.add_argument("--tmp", help="working folder (default: a temporary one, removed)")
    args = p.parse_args(argv)
    folder = Path(args.tmp or tempfile.mkdtemp(prefix="bench_night_"))
    folder.mkdir(parents=True, exist_ok=True)
    results = {}
    try:
        if args.task_memory:
            results["task_memory"] = task_memory(args, folder)
            args.skip_throughput = args.skip_accuracy = args.skip_check = True
        if not args.skip_throughput:
            results["throughput"] = throughput(args, folder)
        if not args.skip_accuracy:
            results["accuracy"] = accuracy(args, folder)
        if not args.skip_check:
            results["check"] = check(args, folder)
    finally:
        if not args.tmp:
            shutil.rmtree(folder, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=float) + "\n")
    return results


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
