"""``aiflat demo``: simulate a dusty solar video, run everything on it, check against the truth."""

import time
import warnings
from pathlib import Path

__all__ = ["add_parser", "run", "DEMO_VIDEO", "DEMO_TRUTH"]

DEMO_VIDEO = "sun_dusty.ser"
DEMO_TRUTH = "sun_dusty_truth.fits"

#: The simulated video: a 640x512 solar field in the realistic 'solar' scenario (a sunspot, pores,
#: plage, filaments, granulation, the limb; dust drawn from the real distributions, about 100 small
#: specks per Mpx of the disc, f/40), 12-bit, seeing jitter.
DEMO_SIMULATION = {"shape": (512, 640), "n_frames": 100, "regime": "solar", "n_dust": None, "jitter": 1.0,
                   "bit_depth": 12, "seed": 2024}


def add_parser(subparsers):
    """Register the ``demo`` sub-command."""
    from .run import add_run_options

    p = subparsers.add_parser(
        "demo", help="simulate a dusty solar video and run everything on it (offline, ~1 minute)",
        description="The first thing to try: writes a simulated dusty solar SER video with its ground "
                    "truth into OUTDIR, runs `aiflat run` on it, compares the flat with the truth, and "
                    "prints where the products are and how to look at them.  Offline; reruns reuse what "
                    "is up to date.")
    p.add_argument("output", nargs="?", default="aiflat_demo", metavar="OUTDIR",
                   help="output folder (default: ./aiflat_demo)")
    add_run_options(p)
    p.set_defaults(func=run)
    return p


def _simulate(outdir, progress):
    from ..datasets import make_dusty_video, read_truth

    video, truth_path = outdir / DEMO_VIDEO, outdir / DEMO_TRUTH
    if video.exists() and truth_path.exists():
        try:
            truth = read_truth(truth_path)
            if truth.params.get("seed") == DEMO_SIMULATION["seed"] and \
                    truth.params.get("regime") == DEMO_SIMULATION["regime"] and \
                    "scene_features" in truth.params and \
                    tuple(truth.params.get("shape", ())) == DEMO_SIMULATION["shape"]:
                return video, truth, False
        except Exception:  # noqa: BLE001 - an unreadable truth is simply simulated again
            pass
    from ..utils.exceptions import AiflatUserWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AiflatUserWarning)  # "only k of n shadows fit": fine for a demo
        truth = make_dusty_video(video, truth_path=truth_path, overwrite=True, progress_bar=progress,
                                 **DEMO_SIMULATION)
    return video, truth, True


def run(args):
    """Simulate, run, evaluate, and say where everything is; return the exit status."""
    from ..flat import evaluate_flat
    from ..pipeline import run_pipeline
    from ._gemini import gemini_detector_options, gemini_inpaint_options
    from .run import print_products, region_options, write_report_of

    t0 = time.perf_counter()
    outdir = Path(args.output)
    outdir.mkdir(parents=True, exist_ok=True)
    video, truth, fresh = _simulate(outdir, args.progress)
    shape = DEMO_SIMULATION["shape"]
    print(f"{'simulated' if fresh else 'reusing'} {video} ({shape[1]}x{shape[0]}, "
          f"{DEMO_SIMULATION['n_frames']} frames, {len(truth.shadows)} dust shadows) and its truth "
          f"{outdir / DEMO_TRUTH}")
    result = run_pipeline(video, outdir, detector=args.detector, inpaint=args.inpaint, apply=args.apply,
                          f_ratio=args.f_ratio or truth.params.get("f_ratio"),
                          pixel_size=args.pixel_size or truth.params.get("pixel_size"),
                          max_frames=args.max_frames, step=args.step, mem_limit=args.mem_limit, floor=args.floor,
                          byte_order=args.byte_order, overwrite=args.overwrite, progress_bar=args.progress,
                          detector_options=region_options(args, gemini_detector_options(args, args.detector)),
                          inpaint_options=gemini_inpaint_options(args, args.inpaint) or None)
    write_report_of(args, result)
    print_products(result)
    ev = evaluate_flat(result["flat"], truth)
    if "residual_ratio" in ev:
        ok = "meets" if ev["residual_ratio"] <= 0.1 else "misses"
        print(f"check against the truth: dust left after calibration {100 * ev['residual_rms']:.2f} % rms inside "
              f"the shadows, was {100 * ev['uncorrected_rms']:.2f} % (ratio {ev['residual_ratio']:.3f}, "
              f"{ok} the 0.1 target); outside the dust {100 * ev['outside_exact']:.2f} % of the pixels "
              "are exactly 1.0")
    paths = result["paths"]
    print(f"\ndone in {time.perf_counter() - t0:.0f} s.  Look at the results:")
    if "report" in paths:
        print(f"  check every shadow:      open {paths['report']} in a browser (accept, reject, add, Export)")
    print(f"  the shadows found:       open {paths['preview']}")
    print(f"  in DS9:                  ds9 {paths['median']} -regions {paths['regions']}")
    print(f"  the flat and its DQ:     ds9 -multiframe {paths['flat']}")
    print(f"  the dust catalog:        {paths['catalog']}")
    if "calibrated" in paths:
        print(f"  the calibrated video:    {paths['calibrated']} (any SER player; compare with {video})")
    print(f"  in Python:               CCDData.read('{paths['flat']}') then "
          "ccdproc.flat_correct(frame, flat, norm_value=1)")
    print(f"  check it yourself:       aiflat evaluate {paths['flat']} {outdir / DEMO_TRUTH}")
    return 0
