"""``aiflat detect``: find the dust shadows in a median; write mask.fits (and catalog, regions, preview)."""

import time

from ..utils._atomic import check_output_path
from ._checks import non_negative_float, positive_float

__all__ = ["add_parser", "run"]


def add_parser(subparsers):
    """Register the ``detect`` sub-command."""
    from .._constants import BUILTIN_DETECTORS

    p = subparsers.add_parser(
        "detect", help="find sensor dust shadows in a median (DQ mask FITS, catalog, DS9 regions, preview)",
        description="Detect the dust shadows in a temporal median.  The local detector (default, offline) "
                    "tells dust from solar features that look like it by their shape and, with --frames, "
                    "by whether they stay fixed on the sensor while the scene moves.  Writes mask.fits "
                    "(uint8 DQ, DQ_DEF, WEIGHT, PROVJSON, checksums).  Review loop: --exclude-regions and "
                    "--include-regions take DS9 region files (image coordinates) to drop false shadows "
                    "or add missed ones; --user-mask replaces detection by your own mask.")
    p.add_argument("median", metavar="MEDIAN.fits", help="temporal median (aiflat median)")
    p.add_argument("-o", "--output", required=True, metavar="MASK.fits", help="output mask")
    p.add_argument("--detector", default="local", choices=BUILTIN_DETECTORS,
                   help="the eye: local (default, offline, deterministic), gemini or consensus")
    p.add_argument("--frames", metavar="VIDEO",
                   help="the frames the median was made from (SER, FITS cube or files): dust stays on "
                        "the sensor while the scene moves; strongly recommended for solar data")
    p.add_argument("--f-ratio", type=positive_float, metavar="N", help="focal ratio at the sensor")
    p.add_argument("--pixel-size", type=positive_float, metavar="UM",
                   help="pixel size in micrometres; with --f-ratio it sets the expected shadow sizes and "
                        "gives the dust distance from the sensor in the catalog")
    p.add_argument("--catalog", metavar="DUST.ecsv", help="also write the shadow catalog (ECSV)")
    p.add_argument("--regions", metavar="DUST.reg", help="also write the shadows as DS9 regions")
    p.add_argument("--preview", metavar="PREVIEW.png", help="also write a preview PNG with the outlines")
    p.add_argument("--exclude-regions", metavar="FILE.reg",
                   help="DS9 regions: shadows whose centre falls inside are dropped")
    p.add_argument("--include-regions", metavar="FILE.reg", help="DS9 regions: each is added as a shadow")
    p.add_argument("--user-mask", metavar="MASK.fits|png",
                   help="your own dust mask (FITS or PNG, nonzero = dust, same size as the median); "
                        "replaces the detector")
    p.add_argument("--dilate", type=non_negative_float, default=2.0, metavar="PX",
                   help="dilation of the dust mask before the soft edge, pixels (default: 2)")
    p.add_argument("--soft-edge", type=non_negative_float, default=1.5, metavar="PX",
                   help="Gaussian sigma of the weight's soft edge, pixels (default: 1.5)")
    p.add_argument("--overwrite", action="store_true", help="replace output files that exist")
    from ._gemini import add_gemini_options

    add_gemini_options(p)
    p.set_defaults(func=run)
    return p


def run(args):
    """Detect, write the products, print a summary; return the exit status."""
    from astropy.io import fits

    from ..detection import detect_dust, write_catalog, write_preview, write_regions
    from ..io.fits import write_mask
    from ..provenance import sha256_file
    from ..utils.exceptions import InputError
    from ._gemini import gemini_detector_options
    from ..io.fits import read_median

    outputs = [args.output] + [p for p in (args.catalog, args.regions, args.preview) if p]
    for path in outputs:  # fail before the work
        check_output_path(path, overwrite=args.overwrite)
    if len(set(map(str, outputs))) != len(outputs):
        raise InputError("two outputs have the same file name")
    t0 = time.perf_counter()
    median = read_median(args.median)
    from ._checks import check_median

    check_median(median, name=str(args.median))  # NaN/inf, a negative median: refused up front
    detection = detect_dust(median, detector=args.detector, frames=args.frames, f_ratio=args.f_ratio,
                            pixel_size=args.pixel_size, dilate=args.dilate, soft_edge=args.soft_edge,
                            exclude_regions=args.exclude_regions, include_regions=args.include_regions,
                            user_mask=args.user_mask, **gemini_detector_options(args, args.detector))
    inputs = [{"path": str(args.median), "sha256": sha256_file(args.median)}]
    if args.frames:
        inputs.append({"path": str(args.frames)})
    detection.provenance["inputs"] = inputs
    header = fits.Header()
    for card in ("OBSERVER", "INSTRUME", "TELESCOP", "DATE-OBS", "NCOMBINE"):
        if card in median.meta:
            header[card] = median.meta[card]
    write_mask(args.output, detection, overwrite=args.overwrite, header=header)
    if args.catalog:
        write_catalog(args.catalog, detection, overwrite=args.overwrite)
    if args.regions:
        write_regions(args.regions, detection, overwrite=args.overwrite)
    if args.preview:
        write_preview(args.preview, median, detection, overwrite=args.overwrite)
    cat = detection.catalog
    review = [int(i) for i, r in zip(cat["id"], cat["review"]) if r] if len(cat) else []
    print(f"{detection.detector}: {len(cat)} dust shadows ({len(review)} to review"
          + (f": {', '.join(map(str, review))}" if review else "") + f") -> {args.output} "
          f"({time.perf_counter() - t0:.1f} s)")
    if len(cat) and "distance_mm" in cat.colnames:
        for row in cat:
            print(f"  #{int(row['id'])}: x={row['x_centroid']:.1f} y={row['y_centroid']:.1f} "
                  f"D={row['equivalent_diameter']:.1f} px depth={row['depth']:.3f} "
                  f"distance={row['distance_mm']:.2f} mm")
    return 0
