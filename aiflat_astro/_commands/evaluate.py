"""``aiflat evaluate``: score a mask or flat against the ground truth of a simulated video."""

import json

__all__ = ["add_parser", "run"]


def add_parser(subparsers):
    """Register the ``evaluate`` sub-command."""
    p = subparsers.add_parser(
        "evaluate", help="accuracy of a mask.fits or flat.fits against simulated ground truth",
        description="Compare an aiflat product with the truth of `aiflat simulate --truth`.  A mask: "
                    "object recall (of shadows deeper than --min-depth-snr times the median's noise), "
                    "object precision, false shadows per megapixel, pixel IoU.  A flat: the flat's error "
                    "and the dust left after calibration inside the true shadows.")
    p.add_argument("product", metavar="PRODUCT.fits", help="mask.fits (aiflat detect) or flat.fits (aiflat flat)")
    p.add_argument("truth", metavar="TRUTH.fits", help="ground truth (aiflat simulate --truth)")
    p.add_argument("--min-depth-snr", type=float, default=5.0, metavar="X",
                   help="masks: true shadows shallower than X times the noise are not required (default: 5)")
    p.add_argument("--json", action="store_true", help="print all figures as JSON")
    p.set_defaults(func=run)
    return p


def _fmt(value):
    if value is None:
        return "n/a"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def run(args):
    """Evaluate and print; return the exit status."""
    from ..evaluate import evaluate_file

    result = evaluate_file(args.product, args.truth, min_depth_snr=args.min_depth_snr)
    if args.json:
        print(json.dumps(result, indent=1, sort_keys=True, default=str))
        return 0
    if result["product"] == "mask":
        print(f"mask: recall {_fmt(result['recall'])} ({result['n_found']}/{result['n_required']} shadows "
              f"deeper than {args.min_depth_snr:g}x noise; all: {_fmt(result['recall_all'])}), "
              f"precision {_fmt(result['precision'])}, {result['n_false']} false "
              f"({result['false_per_mpix']:.2f}/Mpx), pixel IoU {_fmt(result['pixel_iou'])}")
    else:
        keys = [k for k in ("residual_ratio", "residual_rms", "flat_error_rms", "bias", "outside_rms",
                            "outside_exact") if k in result]
        print("flat: " + ", ".join(f"{k} {_fmt(result[k])}" for k in keys))
    return 0
