"""``aiflat info``: describe a SER video or a stack of FITS frames."""

import json
import sys
import warnings

__all__ = ["add_parser", "run"]


def add_parser(subparsers):
    """Register the ``info`` sub-command."""
    p = subparsers.add_parser(
        "info", help="describe a SER video or FITS frames (header, byte order, depth, timestamps)",
        description="Describe a SER video (header, frame count, byte order decided, header and "
                    "measured bit depth, timestamps, deviations from the format) or a FITS "
                    "cube / list / folder of FITS frames (frame count, shape, dtype).")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="a SER video, a FITS cube, FITS files or a folder of them")
    p.add_argument("--json", action="store_true", help="print a JSON document instead of text")
    p.add_argument("--byte-order", choices=("auto", "<", ">"), default="auto",
                   help="byte order of 16-bit SER data (default: auto, checked on the data)")
    p.set_defaults(func=run)
    return p


def _source_info(src):
    from ..io.ser import SERReader

    if isinstance(src, SERReader):
        return src.info()
    kind = type(src).__name__
    fmt = {"FITSCubeSource": "FITS cube", "FITSFilesSource": "FITS files"}.get(kind, kind)
    return {
        "path": str(src.paths[0]) if len(src.paths) == 1 else src.name,
        "format": fmt,
        "paths": [str(p) for p in src.paths],
        "n_frames": src.n_frames,
        "frame_shape": list(src.frame_shape),
        "dtype": src.dtype.name,
        "meta": {k: v if isinstance(v, (str, int, float, bool)) else str(v)
                 for k, v in src.meta.items()},
    }


def _fmt_shape(shape):
    h, w = shape[:2]
    return f"{w} x {h} pixels" + (" x 3 (RGB)" if len(shape) == 3 else "")


def _ser_text(d):
    lines = [
        ("file", f"{d['path']} ({d['file_size']:,} bytes)"),
        ("format", f"SER, FileID {d['file_id']!r}"),
        ("frames", f"{d['n_frames']} (header FrameCount {d['header_frame_count']})"),
        ("frame size", _fmt_shape(d["frame_shape"])),
        ("color", f"{d['color']} (ColorID {d['color_id']})"
         + (", raw CFA mosaic" if d["bayer_pattern"] else "")),
        ("data type", d["dtype"]),
        ("byte order", (f"{d['byte_order']}-endian" if d["byte_order"] else "n/a")
         + f" (LittleEndian flag {d['little_endian_flag']})"),
        ("  decided", d["byte_order_reason"]
         + (" -- a guess: check the frames, or set --byte-order" if d.get("byte_order_inconclusive") else "")),
        ("bit depth", f"header {d['header_depth']}, measured {d['measured_depth']} "
                      f"(max value {d['max_value']} in "
                      f"{'frames' if d.get('sampled_fraction', 1) >= 1 else 'sampled rows of frames'} "
                      f"{', '.join(str(i) for i in d['depth_sample_frames'])})"
         + (f"; low {d['unused_low_bits']} bits unused (MSB-aligned?)"
            if d["unused_low_bits"] else "")),
        ("observer", d["observer"]),
        ("instrument", d["instrument"]),
        ("telescope", d["telescope"]),
    ]
    if d["capture_metadata"]:
        lines.append(("capture", ", ".join(f"{k}={v}" for k, v in d["capture_metadata"].items())))
    lines.append(("start local", d["start_time"] or "not set"))
    lines.append(("start UTC", d["start_time_utc"] or "not set"))
    ts = d["timestamps"]
    if ts:
        fps = f"{ts['fps']:.3f} fps" if ts["fps"] else "frame rate unknown"
        lines.append(("timestamps", f"{ts['first']} .. {ts['last']} UTC, {fps}"))
        lines.append(("  reference", ts["reason"]))
    else:
        lines.append(("timestamps", d["timestamps_reason"]))
    lines.append(("warnings", str(len(d["warnings"])) if d["warnings"] else "none"))
    lines.extend(("  -", w) for w in d["warnings"])
    return lines


def _fits_text(d):
    lines = [
        ("source", d["path"]),
        ("format", d["format"] + (f" ({len(d['paths'])} files)" if d["format"] == "FITS files"
                                  else "")),
        ("frames", str(d["n_frames"])),
        ("frame size", _fmt_shape(d["frame_shape"])),
        ("data type", d["dtype"]),
    ]
    lines.extend((k.lower(), str(v)) for k, v in d["meta"].items())
    return lines


def run(args):
    """Print the description of ``args.inputs``; return 0."""
    from ..utils.exceptions import SERFormatWarning

    with warnings.catch_warnings():
        # Deviations are part of the report (``warnings``); do not repeat them on stderr.
        warnings.simplefilter("ignore", SERFormatWarning)
        if len(args.inputs) == 1 and str(args.inputs[0]).lower().endswith(".ser"):
            # a SER video: its reader alone (no astropy.io.fits to import), a bounded
            # sample of the data whatever the frame size
            from ..io.ser import SERReader

            with SERReader(args.inputs[0], byte_order=args.byte_order) as src:
                info = src.info()
        else:
            from ..io.frames import open_frames

            with open_frames(args.inputs, byte_order=args.byte_order) as src:
                info = _source_info(src)
    if args.json:
        json.dump(info, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    lines = _ser_text(info) if info["format"] == "SER" else _fits_text(info)
    width = max(len(k) for k, _ in lines)
    for key, value in lines:
        print(f"{key:<{width}} : {value}" if not key.startswith("  ") else
              f"{key:<{width}}   {value}")
    return 0
