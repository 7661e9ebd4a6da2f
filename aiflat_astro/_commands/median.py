"""``aiflat median``: exact temporal median of a video or stack of frames."""

import time

from ..utils._atomic import atomic_output, check_output_path, parse_size
from ._checks import positive_int

__all__ = ["add_parser", "run"]


def add_parser(subparsers):
    """Register the ``median`` sub-command."""
    p = subparsers.add_parser(
        "median", help="exact temporal median of a SER video or FITS frames (float32 FITS)",
        description="Exact per-pixel median over the frames of a SER video, a FITS cube, or "
                    "FITS files (a list or a folder), computed in strips of rows within a "
                    "memory limit, however long the video.  Writes a float32 FITS image "
                    "(unit adu) with NCOMBINE, the frame range, and the SHA-256 of the input.")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="a SER video, a FITS cube, FITS files or a folder of them")
    p.add_argument("-o", "--output", required=True, metavar="MEDIAN.fits",
                   help="output FITS file")
    p.add_argument("--max-frames", type=positive_int, metavar="N",
                   help="use at most N frames (the first N, after --step)")
    p.add_argument("--step", type=positive_int, default=1, metavar="K",
                   help="use every K-th frame, starting with the first (default: 1)")
    p.add_argument("--mem-limit", default="256MB", metavar="SIZE",
                   help="working-memory limit, e.g. 256MB, 1GiB (default: 256MB)")
    p.add_argument("--bias", metavar="FILE", help="master bias (FITS, adu) to subtract")
    p.add_argument("--dark", metavar="FILE",
                   help="master dark (FITS, adu, same exposure time) to subtract")
    p.add_argument("--byte-order", choices=("auto", "<", ">"), default="auto",
                   help="byte order of 16-bit SER data (default: auto, checked on the data)")
    p.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    p.set_defaults(func=run)
    return p


def _check_inputs(args, source):
    """--step/--max-frames that leave too few frames; NaN/inf in --bias/--dark: refused up front."""
    from ._checks import check_frame_selection, check_image_values

    check_frame_selection(source.n_frames, step=args.step, max_frames=args.max_frames, name=source.name)
    for option, path in (("bias", args.bias), ("dark", args.dark)):
        if path:
            from astropy.io import fits

            from ..utils.exceptions import InputError

            try:
                data = fits.getdata(path)
            except (OSError, IndexError, TypeError) as exc:
                raise InputError(f"cannot read the --{option} {str(path)!r} as FITS: {exc}") from None
            check_image_values(data, what=option, name=str(path))


def run(args):
    """Compute the median and write it; return the exit status."""
    from ..combine import median_combine
    from ..io.frames import open_frames

    check_output_path(args.output, overwrite=args.overwrite)  # fail before the long part
    parse_size(args.mem_limit)
    t0 = time.perf_counter()
    inputs = args.inputs[0] if len(args.inputs) == 1 else args.inputs
    with open_frames(inputs, byte_order=args.byte_order) as source:
        _check_inputs(args, source)  # before the long part
        median = median_combine(source, max_frames=args.max_frames, step=args.step,
                                mem_limit=args.mem_limit, progress_bar=args.progress,
                                bias=args.bias, dark=args.dark)
        n_total = source.n_frames
    hdul = median.to_hdu(hdu_mask=None, hdu_uncertainty=None, hdu_flags=None)
    with atomic_output(args.output, overwrite=args.overwrite) as tmp:
        hdul.writeto(tmp, checksum=True)
    header = median.header
    shape = f"{median.shape[1]} x {median.shape[0]}" + (" x 3" if median.ndim == 3 else "")
    print(f"median of {header['NCOMBINE']} of {n_total} frames (frames {header['FRAME0']}.."
          f"{header['FRAME1']} step {header['FRAMESTP']}) -> {args.output} "
          f"({shape} float32, {time.perf_counter() - t0:.1f} s)")
    return 0
