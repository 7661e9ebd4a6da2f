"""``aiflat apply``: calibrate SER videos and FITS files with a dust flat."""

from pathlib import Path

__all__ = ["add_parser", "run"]


def add_parser(subparsers):
    """Register the ``apply`` sub-command."""
    p = subparsers.add_parser(
        "apply", help="calibrate SER videos / FITS files with a flat (ccdproc.flat_correct, norm_value=1)",
        description="Divide every frame by the flat, as ccdproc.flat_correct(frame, flat, norm_value=1).  "
                    "SER in -> SER out (same sample type, header and timestamps; corrected values rounded "
                    "and clipped to the sample range), FITS in -> FITS out.  Pixels where the flat is 1.0 "
                    "stay bit-identical; only the dust is recomputed, so this runs at file-copy speed.  "
                    "With several inputs, OUT is a folder and each output is named <stem>_aiflat<ext>.")
    p.add_argument("flat", metavar="FLAT.fits", help="the flat (aiflat flat); its checksums are verified")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="SER videos, FITS cubes or FITS images")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="output file (one input) or folder (several inputs, created if needed)")
    p.add_argument("--mem-limit", default="256MB", metavar="SIZE", help="working-memory limit (default: 256MB)")
    p.add_argument("--byte-order", choices=("auto", "<", ">"), default="auto",
                   help="byte order of 16-bit SER data (default: auto, checked on the data)")
    p.add_argument("--overwrite", action="store_true", help="replace outputs that exist")
    p.set_defaults(func=run)
    return p


def _targets(inputs, output):
    from ..apply import output_name
    from ..utils.exceptions import InputError

    out = Path(output)
    if len(inputs) == 1 and not out.is_dir():
        return [(Path(inputs[0]), out)]
    if out.exists() and not out.is_dir():
        raise InputError(f"with several inputs OUT must be a folder; {str(out)!r} is a file")
    out.mkdir(parents=True, exist_ok=True)
    targets = [(Path(i), out / output_name(i)) for i in inputs]
    names = [t.name for _, t in targets]
    if len(set(names)) != len(names):
        raise InputError("two inputs would give the same output name in the folder; calibrate them separately")
    return targets


def run(args):
    """Calibrate each input; return the exit status."""
    from ..apply import apply_to_file
    from ..io.fits import read_flat
    from ..utils._atomic import check_output_path

    flat = read_flat(args.flat)
    targets = _targets(args.inputs, args.output)
    for _, target in targets:  # refuse before writing anything
        check_output_path(target, overwrite=args.overwrite)
    for source, target in targets:
        stats = apply_to_file(flat, source, target, overwrite=args.overwrite, progress_bar=args.progress,
                              mem_limit=args.mem_limit, byte_order=args.byte_order)
        size = source.stat().st_size
        rate = size / max(stats["seconds"], 1e-9) / 1e6
        clipped = f", {stats['n_clipped']} sample(s) clipped" if stats["n_clipped"] else ""
        print(f"{source.name}: {stats['n_frames']} frame(s) -> {target} ({stats['seconds']:.2f} s, "
              f"{rate:.0f} MB/s{clipped})")
    return 0
