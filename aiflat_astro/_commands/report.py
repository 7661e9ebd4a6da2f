"""``aiflat report``: the HTML review report of an output folder (the human check)."""

__all__ = ["add_parser", "run"]


def add_parser(subparsers):
    """Register the ``report`` sub-command."""
    p = subparsers.add_parser(
        "report", help="self-contained HTML review of an aiflat run folder: check, reject and add shadows",
        description="Write OUTDIR/report.html: the median with the mask layers (zoom, pan), every shadow "
                    "with its crops and radial profile (REVIEW ones first), accept/reject buttons, "
                    "'add a shadow' by clicking, and an Export button that saves review.reg for "
                    "`aiflat run ... --exclude-regions review.reg --include-regions review.reg`.  "
                    "Opens in any browser; no server, no network.")
    p.add_argument("outdir", metavar="OUTDIR", help="output folder of aiflat run (median.fits, mask.fits, ...)")
    p.add_argument("-o", "--output", metavar="REPORT.html", help="output file (default: OUTDIR/report.html)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an output file that is not an aiflat report (reports are always replaced)")
    p.set_defaults(func=run)
    return p


def run(args):
    """Write the report; return the exit status."""
    import time

    from ..report import write_report

    t0 = time.perf_counter()
    path = write_report(args.outdir, output=args.output, overwrite=args.overwrite)
    print(f"report: {path} ({path.stat().st_size / 1e6:.1f} MB, {time.perf_counter() - t0:.1f} s); "
          "open it in a browser")
    return 0
