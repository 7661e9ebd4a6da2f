"""``aiflat flat``: the synthetic dust flat from a median and a dust mask."""

import time

from ..utils._atomic import check_output_path
from ._checks import open_fraction

__all__ = ["add_parser", "run"]


def add_parser(subparsers):
    """Register the ``flat`` sub-command."""
    from .._constants import BUILTIN_INPAINTERS

    p = subparsers.add_parser(
        "flat", help="synthetic dust flat from a median and a dust mask (float32 FITS)",
        description="Make the synthetic flat: exactly 1.0 outside the dust mask, the estimated dust "
                    "transmission inside (median / clean estimate, soft-blended with the mask weight, "
                    "never clipped at 1.0, floored at --floor with the LOW_TRANS bit).  Writes flat.fits "
                    "(float32, BUNIT '', DQ, DQ_DEF, UNCERT with --video, PROVJSON, checksums).")
    p.add_argument("median", metavar="MEDIAN.fits", help="temporal median (aiflat median)")
    p.add_argument("--mask", required=True, metavar="MASK.fits", help="dust mask (aiflat detect)")
    p.add_argument("-o", "--output", required=True, metavar="FLAT.fits", help="output flat")
    p.add_argument("--inpaint", default="local", choices=BUILTIN_INPAINTERS,
                   help="clean estimate inside the dust: local interpolation (default, offline), measured "
                        "from the drift of the scene (needs --video), or gemini (generative)")
    p.add_argument("--video", metavar="VIDEO",
                   help="the frames the median was made from: needed by --inpaint measured, and gives the "
                        "flat an uncertainty (UNCERT) from their temporal scatter")
    p.add_argument("--drift-plot", metavar="DRIFT.png",
                   help="with --inpaint measured: PNG plot of the drift of the scene across the sensor")
    p.add_argument("--catalog", metavar="DUST.ecsv",
                   help="with --inpaint measured: the dust catalog with the method that set each shadow "
                        "(flat_method: measured or local) and the drift summary")
    p.add_argument("--floor", type=open_fraction, default=0.05,
                   help="lowest transmission corrected; below it the flat is set to the floor and flagged "
                        "LOW_TRANS (default: 0.05)")
    p.add_argument("--profile", choices=("auto", "radial", "none"), default="auto",
                   help="transmission model inside each shadow: robust radial profile (removes the scene's "
                        "texture), the plain ratio, or the clean-estimate method's choice (default: auto)")
    p.add_argument("--master-flat", metavar="MASTER.fits",
                   help="multiply the dust flat into this existing master flat and write the product "
                        "(calibrate the lights with the master flat before making the median)")
    p.add_argument("--tiff", metavar="FLAT.tif",
                   help="also write a TIFF (uint16, 65535 = 1.0; values above 1.0 are clipped)")
    p.add_argument("--tiff-float", action="store_true", help="write the TIFF as float32 (exact values)")
    p.add_argument("--asdf", metavar="FLAT.asdf",
                   help="also write an ASDF sidecar: flat, DQ, weight, catalog, provenance")
    p.add_argument("--mem-limit", default="256MB", metavar="SIZE",
                   help="memory limit for reading --video (default: 256MB)")
    p.add_argument("--full-flat", action="store_true",
                   help="the whole gain table (pixel response, vignetting and dust) from the shifted frames "
                        "of --video (KLL/Chae-style robust least squares): NOT 1.0 outside the dust "
                        "(FLATTYPE = 'FULL'); --mask keeps the dust out of the registration")
    p.add_argument("--overwrite", action="store_true", help="replace output files that exist")
    p.add_argument("--force", action="store_true",
                   help="use a mask made from another median (its INPSHA differs) anyway")
    from ._gemini import add_gemini_options

    add_gemini_options(p, consensus=False)
    p.set_defaults(func=run)
    return p


def run(args):
    """Make the flat and write it; return the exit status."""
    from astropy.nddata import CCDData

    from ..flat import make_flat, multiply_master_flat
    from ..io.export import write_flat_asdf, write_flat_tiff
    from ..io.fits import read_mask, read_median, write_flat
    from ..provenance import sha256_file

    outputs = [args.output] + [p for p in (args.tiff, args.asdf, args.drift_plot, args.catalog) if p]
    if (args.drift_plot or args.catalog) and args.inpaint != "measured" and not args.full_flat:
        from ..utils.exceptions import InputError

        raise InputError("--drift-plot and --catalog go with --inpaint measured")
    for path in outputs:  # fail before the work
        check_output_path(path, overwrite=args.overwrite)
    t0 = time.perf_counter()
    median = read_median(args.median)
    detection = read_mask(args.mask)
    from ._checks import check_mask_matches, check_median

    check_median(median, name=str(args.median))  # up front: NaN/inf, negative, another video's mask
    check_mask_matches(detection, median, mask_name=str(args.mask), median_name=str(args.median),
                       force=args.force)
    from ._gemini import gemini_inpaint_options

    if getattr(args, "full_flat", False):
        return _run_full(args, median, detection, t0)
    options = gemini_inpaint_options(args, args.inpaint) or {}
    if args.inpaint == "measured":
        options["progress_bar"] = args.progress
        if args.drift_plot:
            options.update(drift_plot=args.drift_plot, overwrite=args.overwrite)
    flat = make_flat(median, detection, inpaint=args.inpaint, frames=args.video, floor=args.floor,
                     profile=args.profile, mem_limit=args.mem_limit, progress_bar=args.progress,
                     inpaint_options=options or None)
    if args.inpaint == "measured":
        _report_measured(args, flat, detection)
    product = flat
    if args.master_flat:
        master = CCDData.read(args.master_flat, unit=None if _has_bunit(args.master_flat) else "adu")
        product = multiply_master_flat(flat, master)
        product.meta["MASTFLAT"] = (str(args.master_flat)[-68:], "master flat the dust flat was multiplied into")
        product.meta["MASTSHA"] = sha256_file(args.master_flat)
    write_flat(args.output, product, overwrite=args.overwrite)
    if args.tiff:
        # clipped values: write_flat_tiff's warning says it, once
        write_flat_tiff(args.tiff, product, dtype="float32" if args.tiff_float else "uint16",
                        overwrite=args.overwrite)
    if args.asdf:
        write_flat_asdf(args.asdf, product, detection=detection, overwrite=args.overwrite)
    n_in = int((flat.data != 1.0).sum())
    print(f"flat ({args.inpaint}, profile {flat.meta['PROFILE']}): {n_in} px corrected, "
          f"transmission {float(flat.data.min()):.3f}..{float(flat.data.max()):.3f}"
          + (f", multiplied into {args.master_flat}" if args.master_flat else "")
          + f" -> {args.output} ({time.perf_counter() - t0:.1f} s)")
    return 0


def _run_full(args, median, detection, t0):
    """``--full-flat``: the whole gain table from the shifted frames of ``--video``."""
    import json

    from ..flat import make_flat
    from ..io.export import write_flat_asdf, write_flat_tiff
    from ..io.fits import write_flat
    from ..utils.exceptions import InputError

    if not args.video:
        raise InputError("--full-flat needs the shifted frames: --video VIDEO (SER, FITS cube or files)")
    if args.inpaint != "local" or args.master_flat or args.catalog:
        raise InputError("--full-flat does not combine with --inpaint, --master-flat or --catalog")
    flat = make_flat(median, detection, frames=args.video, full=True, progress_bar=args.progress,
                     inpaint_options={"mem_limit": args.mem_limit} if args.mem_limit != "256MB" else None)
    write_flat(args.output, flat, overwrite=args.overwrite)
    if args.drift_plot:
        from ..registration import DriftPath, plot_drift

        d = json.loads(flat.meta["PROVJSON"])["inpaint_info"]["drift"]
        import numpy as np

        drift = DriftPath(frame_index=np.array(d["frame_index"]), shifts=np.c_[d["dy"], d["dx"]],
                          peak=np.array(d["peak"]), n_frames=d["summary"]["n_frames"])
        plot_drift(drift, args.drift_plot, overwrite=args.overwrite)
    if args.tiff:
        write_flat_tiff(args.tiff, flat, dtype="float32", overwrite=args.overwrite)
    if args.asdf:
        write_flat_asdf(args.asdf, flat, detection=detection, overwrite=args.overwrite)
    info = json.loads(flat.meta["PROVJSON"])["inpaint_info"]
    n_kll = info["pixel_methods"]["kll"]
    print(f"full flat (KLL, {info['params']['n_frames_used']} frames, bin {info['params']['bin']}): "
          f"{n_kll} px constrained, gain {float(flat.data.min()):.3f}..{float(flat.data.max()):.3f}; "
          f"NOT 1.0 outside the dust -> {args.output} ({time.perf_counter() - t0:.1f} s)")
    return 0


def _report_measured(args, flat, detection):
    import json

    from ..flat.estimators.measured import write_measured_catalog

    info = json.loads(flat.meta["PROVJSON"]).get("inpaint_info", {})
    drift = info.get("drift", {}).get("summary", {})
    print(f"measured: {info.get('n_measured', 0)} shadow(s) from the drift, {info.get('n_local', 0)} by "
          f"local interpolation; drift {drift.get('extent_major_px', 0):.1f} x "
          f"{drift.get('extent_minor_px', 0):.1f} px over {drift.get('n_registered', 0)} frames")
    if info.get("static_features"):
        print(f"measured: {len(info['static_features'])} static dark feature(s) outside the mask "
              "(possible undetected dust) kept out of the measurement: see PROVJSON")
    if args.catalog:
        write_measured_catalog(args.catalog, detection, info, overwrite=args.overwrite)


def _has_bunit(path):
    from astropy.io import fits

    return "BUNIT" in fits.getheader(path)
