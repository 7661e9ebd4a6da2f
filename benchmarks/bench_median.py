"""Benchmark of the temporal median on a simulated SER video of at least 1 GB.

Run by hand (not a test)::

    python benchmarks/bench_median.py                 # ~1.08 GB video, results in JSON
    python benchmarks/bench_median.py --frames 31 --shape 512 640 --ccdproc-frames 8   # quick try

In one run, on the same simulated video (``make_dusty_video``), each method in
its own subprocess, it measures the wall time (process start to exit, imports
included) and the peak resident memory (``VmHWM`` of the process, reported by
itself at exit; it counts file pages the process has memory-mapped too) of:

``aiflat``
    the command line ``aiflat median VIDEO.ser -o median.fits`` (default
    ``--mem-limit 256MB``; includes the SHA-256 of the input file and writing
    the FITS file);
``seed``
    the seed approach: every frame read into a list (plain ``np.fromfile``
    reads, no memory map), ``np.array(list)``, ``np.median(stack, axis=0)``;
``ccdproc``
    ``ccdproc.combine(files, method='median', mem_limit=256e6)`` on a list of
    one 2-D FITS file per frame (uint16, written beforehand, not timed) — the
    only input form with which ccdproc bounds its memory (a list of `CCDData`
    holds every frame in memory; a FITS cube is not accepted).  ccdproc
    re-reads every file for every chunk of the image, so its time grows with
    the square of the frame count: it runs on the first ``--ccdproc-frames``
    frames only, with a timeout.

Each method runs on all frames (an odd count) and on one frame fewer (even:
``np.median`` then averages two order statistics with a much slower
selection); aiflat and seed run ``--repeat`` times, interleaved, and the
fastest run is tabulated (the machine may be shared).  Results are checked equal to the aiflat median (bit for bit
after casting to float32).  The page cache is warm (the video was just
written): the times are compute times, not disk times.
"""

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


# --------------------------------------------------------------------------- workers

def _worker(argv):
    """Run one method in this (child) process; write the result as .npy."""
    method, video, n, out = argv[0], argv[1], int(argv[2]), argv[3]
    t0 = time.perf_counter()
    if method == "seed":
        from aiflat_astro.io import SERReader

        with SERReader(video) as ser:  # header only: frames are read below with np.fromfile
            shape, dtype, offset = ser.frame_shape, ser.file_dtype, 178
        count = int(np.prod(shape))
        frames = []
        with open(video, "rb") as f:
            for i in range(n):
                f.seek(offset + i * count * dtype.itemsize)
                frames.append(np.fromfile(f, dtype=dtype, count=count).reshape(shape))
        stack = np.array(frames)
        del frames
        median = np.median(stack, axis=0)
        result = median.astype(np.float32)
    elif method == "ccdproc":
        import ccdproc

        files = argv[4:4 + n]
        combined = ccdproc.combine(files, method="median", mem_limit=256e6, unit="adu")
        result = np.asarray(combined.data, dtype=np.float32)
    else:  # pragma: no cover
        raise SystemExit(f"unknown method {method}")
    np.save(out, result)
    print(json.dumps({"inner_s": time.perf_counter() - t0, "vmhwm": _vmhwm()}))


def _vmhwm():
    """Peak resident memory of this process (bytes), file-backed pages included."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return None  # pragma: no cover


def _run(cmd, *, timeout):
    """Run ``cmd``; return (wall s, child's JSON report or {}, return code or 'timeout').

    The child reports its own peak resident memory (``VmHWM``, which restarts
    at ``exec``; ``ru_maxrss`` would count the forked copy of this process).
    """
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return time.perf_counter() - t0, {}, "timeout"
    wall = time.perf_counter() - t0
    if proc.returncode:
        print(proc.stderr, file=sys.stderr)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    return wall, (json.loads(lines[-1]) if lines else {}), proc.returncode


# --------------------------------------------------------------------------- main

def _table(result):
    """Lines of the summary table (fastest run of each method and frame count)."""
    runs = [r for r in result["runs"] if r.get("best")]
    runs.sort(key=lambda r: (-r["n_frames"], r["method"]))
    lines = [f"{'method':38s} {'frames':>6s} {'GB':>6s} {'wall s':>7s} {'Melem/s':>8s} "
             f"{'MB/s':>6s} {'peak MB':>8s} {'vs seed':>7s}  equal"]
    for r in runs:
        lines.append(f"{r['method']:38s} {r['n_frames']:6d} {r['data_gb']:6.3f} {r['wall_s']:7.2f} "
                     f"{r['throughput_melem_s'] or float('nan'):8.1f} "
                     f"{r['throughput_mb_s'] or float('nan'):6.1f} {r['peak_rss_mb']:8.1f} "
                     f"{r.get('speedup_vs_seed', float('nan')):7.2f}  {r['equal_to_aiflat']}")
    n_video = result["video"]["frames"]
    for r in runs:
        if r["method"].startswith("ccdproc") and r["n_frames"] < n_video:
            factor = (n_video / r["n_frames"]) ** 2
            lines.append(f"ccdproc on {r['n_frames']} frames, extrapolated to {n_video} "
                         f"(time ~ n^2: every chunk re-reads every file): "
                         f"~{r['wall_s'] * factor:.0f} s")
    machine = result["machine"]
    lines.append(f"machine: {machine.get('cpu')}, {machine['cpus']} CPUs, "
                 f"{machine.get('ram_gb')} GB RAM, numpy {machine['numpy']}, "
                 f"SIMD {', '.join(machine.get('simd', []))}; load before runs "
                 f"{', '.join(str(r['load_1min_before']) for r in result['runs'])}")
    return lines


def _machine():
    info = {"python": platform.python_version(), "platform": platform.platform(),
            "cpus": len(os.sched_getaffinity(0)), "numpy": np.__version__,
            "load_average_before": os.getloadavg()}
    try:
        text = Path("/proc/cpuinfo").read_text()
        info["cpu"] = next(line.split(":", 1)[1].strip() for line in text.splitlines()
                           if line.startswith("model name"))
        flags = next(line for line in text.splitlines() if line.startswith("flags")).split()
        info["simd"] = [f for f in ("avx2", "avx512f", "avx512bw", "avx512_vbmi2") if f in flags]
        mem = Path("/proc/meminfo").read_text().split()
        info["ram_gb"] = round(int(mem[mem.index("MemTotal:") + 1]) / 1024**2, 1)
    except (OSError, StopIteration, ValueError):
        pass
    import astropy
    import ccdproc

    info["astropy"], info["ccdproc"] = astropy.__version__, ccdproc.__version__
    return info


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=229,
                        help="frames in the simulated video (default 229: 1.08 GB at 1936x1216)")
    parser.add_argument("--shape", type=int, nargs=2, default=(1216, 1936),
                        metavar=("HEIGHT", "WIDTH"), help="frame shape (default 1216 1936)")
    parser.add_argument("--ccdproc-frames", type=int, default=48,
                        help="frames given to ccdproc.combine (default 48)")
    parser.add_argument("--timeout", type=float, default=240, help="per-run timeout, s")
    parser.add_argument("--repeat", type=int, default=2,
                        help="runs of aiflat and seed (the fastest is tabulated; ccdproc runs once)")
    parser.add_argument("--workdir", help="folder for the video and outputs (default: a "
                                          "temporary folder, removed at the end)")
    parser.add_argument("--json", default=str(HERE / "results_median.json"),
                        help="where to write the results")
    parser.add_argument("--report", metavar="JSON",
                        help="only print the table of a previous run's results")
    args = parser.parse_args(argv)
    if args.report:
        print("\n".join(_table(json.loads(Path(args.report).read_text()))))
        return 0

    from aiflat_astro.combine import median_combine
    from aiflat_astro.datasets import make_dusty_video

    tmp = tempfile.TemporaryDirectory(prefix="aiflat-bench-") if not args.workdir else None
    work = Path(args.workdir or tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    video = work / "bench.ser"
    machine = _machine()
    print(f"machine: {machine.get('cpu')}, {machine['cpus']} CPUs, {machine.get('ram_gb')} GB, "
          f"numpy {machine['numpy']}, SIMD {machine.get('simd')}, load {machine['load_average_before']}")

    t0 = time.perf_counter()
    make_dusty_video(video, shape=tuple(args.shape), n_frames=args.frames, seed=1,
                     overwrite=True)
    size = video.stat().st_size
    print(f"simulated {video.name}: {args.frames} frames of {args.shape[1]}x{args.shape[0]} "
          f"uint16, {size / 1e9:.3f} GB, in {time.perf_counter() - t0:.1f} s")

    n_ccd = min(args.ccdproc_frames, args.frames)
    t0 = time.perf_counter()
    from aiflat_astro.io import SERReader
    from astropy.nddata import CCDData

    ccd_files = []
    with SERReader(video) as ser:
        for i in range(n_ccd):
            ccd_files.append(str(work / f"frame{i:04d}.fits"))
            CCDData(ser.read(i), unit="adu").write(ccd_files[-1], overwrite=True)
    print(f"wrote {n_ccd} per-frame FITS files for ccdproc in {time.perf_counter() - t0:.1f} s")

    me = [sys.executable, str(Path(__file__).resolve()), "--worker"]
    # what the `aiflat` console script runs, plus a report of the peak memory at exit
    aiflat = [sys.executable, "-c", "import sys, json; from aiflat_astro.cli import main; "
              f"rc = main(); sys.path.insert(0, {str(HERE)!r}); from bench_median import _vmhwm; "
              "print(json.dumps({'vmhwm': _vmhwm()})); sys.exit(rc)"]
    h, w = args.shape
    runs = []
    plan = []
    for n in (args.frames, args.frames - 1):
        plan.append(("aiflat median", n, aiflat + ["median", str(video), "-o",
                                                   str(work / f"aiflat{n}.fits"), "--overwrite",
                                                   "--max-frames", str(n)], f"aiflat{n}.fits"))
        plan.append(("seed (list -> np.array -> np.median)", n,
                     me + ["seed", str(video), str(n), str(work / f"seed{n}.npy")], f"seed{n}.npy"))
    for n in (n_ccd, n_ccd - 1):
        plan.append(("ccdproc.combine median (files)", n,
                     me + ["ccdproc", str(video), str(n), str(work / f"ccdproc{n}.npy")]
                     + ccd_files[:n], f"ccdproc{n}.npy"))

    references = {}
    for name, n, cmd, output, rep in [(*p, r) for r in range(args.repeat) for p in plan]:
        if rep and name.startswith("ccdproc"):
            continue  # slow: once is enough
        load = os.getloadavg()[0]
        wall, report, rc = _run(cmd, timeout=args.timeout)
        peak = report.get("vmhwm") or float("nan")
        if n not in references:
            references[n] = median_combine(video, max_frames=n).data
        equal = None
        if rc == 0:
            path = work / output
            if path.suffix == ".fits":
                from astropy.io import fits
                result = fits.getdata(path)
            else:
                result = np.load(path)
            equal = bool(np.array_equal(np.asarray(result, np.float32), references[n]))
        data_bytes = n * h * w * 2
        row = {"method": name, "n_frames": n, "data_gb": round(data_bytes / 1e9, 3),
               "wall_s": round(wall, 2), "peak_rss_mb": round(peak / 1e6, 1),
               "throughput_melem_s": round(n * h * w / wall / 1e6, 1) if rc == 0 else None,
               "throughput_mb_s": round(data_bytes / wall / 1e6, 1) if rc == 0 else None,
               "status": "ok" if rc == 0 else str(rc), "equal_to_aiflat": equal,
               "repeat": rep, "load_1min_before": round(load, 2)}
        if "inner_s" in report:
            row["inner_s"] = round(report["inner_s"], 2)
        runs.append(row)
        print(f"  {name:38s} n={n:4d} {row['wall_s']:8.2f} s {row['peak_rss_mb']:8.1f} MB "
              f"{row['status']} equal={equal}", flush=True)

    best = {}  # fastest repeat of each (method, n)
    for r in runs:
        key = (r["method"], r["n_frames"])
        if r["status"] == "ok" and (key not in best or r["wall_s"] < best[key]["wall_s"]):
            best[key] = r
    for r in runs:
        r["best"] = best.get((r["method"], r["n_frames"])) is r
    seed = {r["n_frames"]: r for r in best.values() if r["method"].startswith("seed")}
    for r in runs:
        base = seed.get(r["n_frames"])
        if base and base["status"] == "ok" and r["status"] == "ok":
            r["speedup_vs_seed"] = round(base["wall_s"] / r["wall_s"], 2)

    result = {"date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
              "machine": machine, "video": {"frames": args.frames, "shape": list(args.shape),
                                            "dtype": "uint16", "bytes": size},
              "mem_limit": "256MB", "runs": runs}
    Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    print()
    print("\n".join(_table(result)))
    print(f"\nresults written to {args.json}")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        _worker(sys.argv[2:])
    else:
        sys.exit(main())
