"""``aiflat run``: every step, from a video to its calibrated copy."""

__all__ = ["add_parser", "run", "add_run_options", "print_products"]


def add_run_options(p):
    """Options shared by ``aiflat run`` and ``aiflat demo``."""
    from .._constants import BUILTIN_DETECTORS, BUILTIN_INPAINTERS
    from ._checks import positive_int

    p.add_argument("--detector", default="local", choices=BUILTIN_DETECTORS,
                   help="dust detector: local (default, offline), gemini or consensus")
    p.add_argument("--inpaint", default="local", choices=BUILTIN_INPAINTERS,
                   help="clean estimate inside the dust: local (default), measured, gemini")
    p.add_argument("--no-apply", dest="apply", action="store_false",
                   help="stop after the flat (do not write the calibrated video)")
    p.add_argument("--f-ratio", type=float, metavar="N", help="focal ratio (expected shadow size; dust distance)")
    p.add_argument("--pixel-size", type=float, metavar="UM", help="pixel size in micrometres")
    p.add_argument("--max-frames", type=positive_int, metavar="N", help="use at most N frames for the median")
    p.add_argument("--step", type=positive_int, default=1, metavar="K", help="use every K-th frame for the median")
    p.add_argument("--floor", type=float, default=0.05, help="lowest corrected transmission (default: 0.05)")
    p.add_argument("--mem-limit", default="256MB", metavar="SIZE", help="working-memory limit (default: 256MB)")
    p.add_argument("--byte-order", choices=("auto", "<", ">"), default="auto",
                   help="byte order of 16-bit SER data (default: auto)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace files in OUTDIR that aiflat run did not make (its own are reused or redone)")
    p.add_argument("--exclude-regions", metavar="FILE.reg",
                   help="DS9 regions: shadows whose centre falls inside are dropped (the report's review.reg)")
    p.add_argument("--include-regions", metavar="FILE.reg",
                   help="DS9 regions: each is added as a shadow (the report's review.reg)")
    p.add_argument("--no-report", dest="report", action="store_false",
                   help="do not write OUTDIR/report.html (the HTML review)")
    from ._gemini import add_gemini_options

    add_gemini_options(p)


def add_parser(subparsers):
    """Register the ``run`` sub-command."""
    p = subparsers.add_parser(
        "run", help="all steps: median, detection, flat, calibrated video (reuses up-to-date products)",
        description="Run the whole job on a video and write OUTDIR/median.fits, mask.fits, dust.ecsv, "
                    "dust.reg, preview.png, flat.fits and OUTDIR/<stem>_aiflat.ser.  Each product records "
                    "a hash of its inputs and parameters (RUNSHA); a rerun reuses the products that are "
                    "up to date and redoes the others.  Several videos are a night: one shared flat from "
                    "all of them, a dust-change check of each, each matching video calibrated, and "
                    "OUTDIR/manifest.json; --workers or --scheduler run it on dask.distributed.")
    p.add_argument("video", metavar="VIDEO", nargs="+", help="SER video(s) (or FITS cubes)")
    p.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="output folder (created if needed)")
    add_run_options(p)
    night = p.add_argument_group("a night of videos")
    where = night.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, metavar="N",
                       help="run on a local dask.distributed cluster of N worker processes (one thread each; "
                            "each may use --mem-limit plus 1 GB: its imports take about 145 MB, the "
                            "detection about 0.9 kB a pixel of a frame)")
    where.add_argument("--scheduler", metavar="ADDRESS",
                       help="run on an existing dask.distributed cluster, e.g. tcp://host:8786 (OUTDIR and "
                            "the videos must be on storage every worker sees at the same path)")
    night.add_argument("--force", action="store_true",
                       help="calibrate the videos whose dust does not match the shared flat too")
    p.set_defaults(func=run)
    return p


def print_products(result):
    """Print what was computed, what was reused, and where the products are."""
    paths = dict(result["paths"])
    computed = ", ".join(result["computed"]) or "nothing (everything was up to date)"
    reused = ", ".join(result["reused"]) or "nothing"
    print(f"computed: {computed}; reused: {reused}")
    print(f"dust shadows found: {result['n_dust']}")
    for entry in result.get("videos", ()):
        extra = f": {entry['message']}" if entry.get("message") else ""
        print(f"  {entry['status']:<13}  {entry['input']}{extra}")
    width = max(len(k) for k in paths)
    for name, path in paths.items():
        print(f"  {name:<{width}}  {path}")


def region_options(args, options):
    """Detector options with ``--exclude-regions``/``--include-regions`` added."""
    options = dict(options or {})
    for name in ("exclude_regions", "include_regions"):
        if getattr(args, name, None):
            options[name] = getattr(args, name)
    return options or None


def write_report_of(args, result):
    """``OUTDIR/report.html`` unless ``--no-report``; its path is added to the printed products."""
    if getattr(args, "report", True):
        from ..report import write_report

        result["paths"]["report"] = write_report(args.output)


def _client(args):
    """A context manager giving the distributed.Client of --workers / --scheduler, or None."""
    import contextlib

    if args.workers is None and args.scheduler is None:
        return contextlib.nullcontext(None)
    try:
        from distributed import Client
    except ImportError:
        from ..utils.exceptions import InputError

        raise InputError("--workers and --scheduler need dask.distributed: pip install distributed") from None

    @contextlib.contextmanager
    def connect():
        if args.scheduler is not None:
            from ..utils.exceptions import InputError

            try:
                client = Client(args.scheduler, timeout="10s")
            except (OSError, TimeoutError) as exc:
                raise InputError(f"cannot reach the scheduler {args.scheduler}: {exc}") from None
            with client:
                yield client
        else:
            from ..night import local_cluster

            with local_cluster(args.workers, mem_limit=args.mem_limit) as cluster, Client(cluster) as client:
                yield client

    return connect()


def run(args):
    """Run the pipeline; return the exit status."""
    from ..pipeline import run_pipeline

    from ._checks import check_run_inputs
    from ._gemini import gemini_detector_options, gemini_inpaint_options

    check_run_inputs(args)  # before any computation
    videos = args.video if len(args.video) > 1 else args.video[0]
    with _client(args) as client:
        result = run_pipeline(videos, args.output, detector=args.detector, inpaint=args.inpaint,
                              apply=args.apply, f_ratio=args.f_ratio, pixel_size=args.pixel_size,
                              max_frames=args.max_frames, step=args.step, mem_limit=args.mem_limit,
                              floor=args.floor, byte_order=args.byte_order,
                              detector_options=region_options(args, gemini_detector_options(args, args.detector)),
                              inpaint_options=gemini_inpaint_options(args, args.inpaint) or None,
                              overwrite=args.overwrite, progress_bar=args.progress, client=client,
                              force=args.force)
    write_report_of(args, result)
    print_products(result)
    failed = [v for v in result.get("videos", ()) if v["status"] == "failed"]
    return 1 if failed else 0
