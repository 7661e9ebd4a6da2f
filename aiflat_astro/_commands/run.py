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
                    "up to date and redoes the others.")
    p.add_argument("video", metavar="VIDEO", help="SER video (or FITS cube)")
    p.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="output folder (created if needed)")
    add_run_options(p)
    p.set_defaults(func=run)
    return p


def print_products(result):
    """Print what was computed, what was reused, and where the products are."""
    paths = result["paths"]
    computed = ", ".join(result["computed"]) or "nothing (everything was up to date)"
    reused = ", ".join(result["reused"]) or "nothing"
    print(f"computed: {computed}; reused: {reused}")
    print(f"dust shadows found: {result['n_dust']}")
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


def run(args):
    """Run the pipeline; return the exit status."""
    from ..pipeline import run_pipeline

    from ._checks import check_run_inputs
    from ._gemini import gemini_detector_options, gemini_inpaint_options

    check_run_inputs(args)  # before any computation
    result = run_pipeline(args.video, args.output, detector=args.detector, inpaint=args.inpaint, apply=args.apply,
                          f_ratio=args.f_ratio, pixel_size=args.pixel_size, max_frames=args.max_frames,
                          step=args.step, mem_limit=args.mem_limit, floor=args.floor, byte_order=args.byte_order,
                          detector_options=region_options(args, gemini_detector_options(args, args.detector)),
                          inpaint_options=gemini_inpaint_options(args, args.inpaint) or None,
                          overwrite=args.overwrite, progress_bar=args.progress)
    write_report_of(args, result)
    print_products(result)
    return 0
