"""``aiflat simulate``: write a dusty synthetic SER video and its ground truth."""

import argparse
import re
from pathlib import Path

__all__ = ["add_parser", "run"]


def _shape(text):
    match = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH such as 480x640, got {text!r}")
    return int(match[1]), int(match[2])


def add_parser(subparsers):
    """Register the ``simulate`` sub-command."""
    p = subparsers.add_parser(
        "simulate", help="write a dusty synthetic SER video and its ground truth",
        description="Write a simulated dusty video (SER) and its ground truth (FITS: dust "
                    "transmission, shadow labels and list, vignetting, scene, frame shifts). "
                    "Dust shadows follow geometric optics: diameter dz/(N p), depth "
                    "(a/D)^2/(1-eps^2), discs or donuts.")
    p.add_argument("-o", "--output", required=True, metavar="VIDEO.ser", help="output SER video")
    p.add_argument("--truth", metavar="TRUTH.fits",
                   help="ground-truth FITS file (default: <output stem>_truth.fits next to the "
                        "video)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--dust-seed", type=int, default=None, metavar="SEED",
                   help="draw the dust from this seed (scene, motion and noise still from --seed), "
                        "so that several videos share the same dust at the same place")
    p.add_argument("--regime", choices=("solar", "deepsky"), default="solar",
                   help="solar: disc with pores, spots, filaments, small deep shadows (f/30); "
                        "deepsky: stars, large faint donuts (f/5). Default: solar")
    p.add_argument("--frames", type=int, default=100, metavar="N",
                   help="number of frames (default: 100)")
    p.add_argument("--shape", type=_shape, default=(480, 640), metavar="HxW",
                   help="frame height x width in pixels (default: 480x640)")
    p.add_argument("--drift", type=float, default=0.0, metavar="PX",
                   help="peak-to-peak 2-D drift of the scene over the video, in pixels "
                        "(default: 0)")
    p.add_argument("--jitter", type=float, default=1.0, metavar="PX",
                   help="rms seeing jitter per frame and axis, in pixels (default: 1)")
    p.add_argument("--dust", type=int, default=10, metavar="N",
                   help="number of dust shadows (default: 10)")
    p.add_argument("--no-dust", action="store_true",
                   help="a dust-free control video (same scene, motion and noise)")
    p.add_argument("--f-ratio", type=float, metavar="N",
                   help="focal ratio (default: 30 solar, 5 deep-sky)")
    p.add_argument("--pixel-size", type=float, default=3.75, metavar="UM",
                   help="pixel size in micrometres (default: 3.75)")
    p.add_argument("--bit-depth", type=int, default=12, metavar="BITS",
                   help="sample depth, 8 to 16 (default: 12)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.set_defaults(func=run)
    return p


def run(args):
    """Run ``aiflat simulate``; return the exit status."""
    from ..utils.exceptions import InputError

    output = Path(args.output)
    if output.suffix.lower() != ".ser":
        raise InputError(f"the output video must be a .ser file, got {str(output)!r}")
    from ..datasets import make_dusty_video

    truth_path = Path(args.truth) if args.truth else output.with_name(f"{output.stem}_truth.fits")
    truth = make_dusty_video(
        output, shape=args.shape, n_frames=args.frames, regime=args.regime, f_ratio=args.f_ratio,
        pixel_size=args.pixel_size, n_dust=args.dust, drift=args.drift, jitter=args.jitter,
        bit_depth=args.bit_depth, dust_free=args.no_dust, seed=args.seed,
        dust_seed=args.dust_seed, truth_path=truth_path,
        overwrite=args.overwrite, progress_bar=args.progress)
    h, w = truth.transmission.shape
    print(f"wrote {output} ({truth.n_frames} frames, {w}x{h}, {args.bit_depth}-bit, {args.regime}, "
          f"{len(truth.shadows)} dust shadows)")
    print(f"wrote {truth_path} (ground truth)")
    return 0
