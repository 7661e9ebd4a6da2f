"""``aiflat apply``: calibrate SER videos and FITS files with a dust flat.

The command is a byte copy of each video plus a recomputation of the dust
boxes.  So that the copy does not wait for the interpreter to load NumPy and
astropy (about 0.3 s, as long as copying a 1 GB video from the page cache),
the copy of the first SER input starts before those imports, from the standard
library only, after the checks that need nothing else (the input is a file, the
output may be written); the flat and the video header are checked while it
runs, and on any error it is cancelled and its temporary output removed.
"""

import os
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
    from ..utils._atomic import output_name

    out = Path(output)
    if len(inputs) == 1 and not out.is_dir():
        return [(Path(inputs[0]), out)]
    if out.exists() and not out.is_dir():
        from ..utils.exceptions import InputError

        raise InputError(f"with several inputs OUT must be a folder; {str(out)!r} is a file")
    out.mkdir(parents=True, exist_ok=True)
    targets = [(Path(i), out / output_name(i)) for i in inputs]
    names = [t.name for _, t in targets]
    if len(set(names)) != len(names):
        from ..utils.exceptions import InputError

        raise InputError("two inputs would give the same output name in the folder; calibrate them separately")
    return targets


def _start_copy(source, target, overwrite):
    """Start copying a SER input to a temporary name next to its output, or return None.

    Standard library only.  Nothing starts when a check fails: the error is
    then raised by the full checks, in their words."""
    from ..utils._atomic import TemporaryOutput
    from ..utils._copy import BackgroundCopy

    try:
        if source.suffix.lower() != ".ser" or not source.is_file() or not target.parent.is_dir():
            return None
        if target.exists() and (not overwrite or os.path.samefile(source, target)):
            return None
        tmp = TemporaryOutput(target)  # anonymous (O_TMPFILE) where the OS allows
        try:
            copy = BackgroundCopy(source, tmp.path)
        except BaseException:
            tmp.discard()
            raise
        copy.tmp = tmp
        return copy
    except OSError:
        return None


def run(args):
    """Calibrate each input; return the exit status."""
    import time

    from ..utils._atomic import check_output_path

    t0 = time.perf_counter()
    targets = _targets(args.inputs, args.output)
    for _, target in targets:  # refuse before writing anything
        check_output_path(target, overwrite=args.overwrite)
    started = _start_copy(*targets[0], args.overwrite)
    try:
        from ..apply import _apply_to_file, _FlatParts, _read_flat_data

        flat, header = _read_flat_data(args.flat)
    except BaseException:
        _drop(started)
        raise
    flat_name = Path(args.flat).name
    for k, (source, target) in enumerate(targets):
        stats = _apply_to_file(_FlatParts(flat, header, flat_name), source, target, overwrite=args.overwrite,
                               progress_bar=args.progress, mem_limit=args.mem_limit, byte_order=args.byte_order,
                               started=started if k == 0 else None, t0=t0 if k == 0 else None)
        size = source.stat().st_size
        rate = size / max(stats["seconds"], 1e-9) / 1e6
        clipped = f", {stats['n_clipped']} sample(s) clipped" if stats["n_clipped"] else ""
        print(f"{source.name}: {stats['n_frames']} frame(s) -> {target} ({stats['seconds']:.2f} s, "
              f"{rate:.0f} MB/s{clipped})")
    return 0


def _drop(started):
    if started is not None:
        started.cancel()
        started.tmp.discard()
