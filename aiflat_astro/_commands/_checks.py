"""Checks made by the commands up front, before any computation.

Each check raises one `~aiflat_astro.utils.exceptions.InputError` whose
message names the user's file or option and the reason, or returns quietly.
They are shared so that every command refuses the same input the same way
(``--mem-limit``, ``--step``/``--max-frames``, medians, darks, masks, flats).
NumPy and astropy are imported only by the checks that need them.
"""

import argparse

__all__ = ["MIN_FRAMES", "MIN_MEM_LIMIT", "positive_int", "positive_float", "non_negative_float", "open_fraction",
           "check_mem_limit", "check_frame_selection", "check_image_values", "check_median", "check_mask_matches",
           "check_run_inputs"]

#: A temporal median of fewer frames than this is refused when --step/--max-frames caused it.
MIN_FRAMES = 3
#: Smallest --mem-limit accepted by every command (a limit below it cannot be honoured).
MIN_MEM_LIMIT = 1_000_000


def _error(message):
    from ..utils.exceptions import InputError

    return InputError(message)


def positive_int(text):
    """``argparse`` type: an integer >= 1 (a usage error otherwise).

    Examples
    --------
    >>> positive_int("3")
    3
    >>> positive_int("0")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: expected a positive integer, got '0'
    """
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _float_type(text, accept, expected):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if not accept(value):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def positive_float(text):
    """``argparse`` type: a number > 0.

    Examples
    --------
    >>> positive_float("2.5")
    2.5
    >>> positive_float("0")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: expected a positive number, got '0'
    """
    return _float_type(text, lambda v: v > 0, "a positive number")


def non_negative_float(text):
    """``argparse`` type: a number >= 0 (NaN refused)."""
    return _float_type(text, lambda v: v >= 0, "a number >= 0")


def open_fraction(text):
    """``argparse`` type: a number strictly between 0 and 1."""
    return _float_type(text, lambda v: 0 < v < 1, "a number between 0 and 1")


def check_mem_limit(value, *, option="--mem-limit"):
    """Parse a memory limit; refuse one that no command can honour.

    Returns the limit in bytes.

    Examples
    --------
    >>> check_mem_limit("256MB")
    256000000
    >>> check_mem_limit("1KB")
    Traceback (most recent call last):
    ...
    aiflat_astro.utils.exceptions.InputError: --mem-limit 1KB is too small: the minimum is 1 MB
    """
    from ..utils._atomic import parse_size

    size = parse_size(value)
    if size < MIN_MEM_LIMIT:
        raise _error(f"{option} {value} is too small: the minimum is {MIN_MEM_LIMIT // 1_000_000} MB")
    return size


def check_frame_selection(n_total, *, step=1, max_frames=None, name="the input"):
    """Refuse ``--step``/``--max-frames`` that leave fewer than `MIN_FRAMES` frames.

    An input that has fewer frames to begin with is not refused here (the
    options did not cause it).  Returns the number of frames selected.

    Examples
    --------
    >>> check_frame_selection(100, step=10)
    10
    >>> check_frame_selection(100, step=1000000, name="sun.ser")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    aiflat_astro.utils.exceptions.InputError: --step 1000000 leaves 1 of the 100 frames of sun.ser; ...
    """
    step = int(step or 1)
    if step < 1:
        raise _error(f"--step must be a positive integer, got {step}")
    if max_frames is not None and int(max_frames) < 1:
        raise _error(f"--max-frames must be a positive integer, got {max_frames}")
    n = len(range(0, int(n_total), step))
    if max_frames is not None:
        n = min(n, int(max_frames))
    if n < MIN_FRAMES and n < n_total:
        given = (f"--step {step}" if step > 1 else "",
                 f"--max-frames {max_frames}" if max_frames is not None else "")
        opts = " and ".join(o for o in given if o)
        fix = "a smaller --step" if step > 1 and (max_frames is None or max_frames >= MIN_FRAMES) \
            else "a larger --max-frames"
        verb = "leave" if " and " in opts else "leaves"
        raise _error(f"{opts} {verb} {n} of the {n_total} frames of {name}; a temporal median needs "
                     f"at least {MIN_FRAMES} (use {fix})")
    return n


def check_image_values(data, *, what, name, allow_negative=True):
    """Refuse an image with NaN or infinite pixels (and negative ones unless allowed).

    Parameters
    ----------
    data : array-like
        The image.
    what : str
        What it is, for the message (``'median'``, ``'dark'``, ``'flat'``).
    name : str
        The user's file.
    allow_negative : bool, optional
        Negative values are fine (a dark or a bias-subtracted image).

    Examples
    --------
    >>> import numpy as np
    >>> img = np.ones((4, 4)); img[1, :] = np.nan
    >>> check_image_values(img, what="dark", name="dark.fits")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    aiflat_astro.utils.exceptions.InputError: dark.fits: the dark has 4 NaN or infinite pixel(s) (25.00 %); ...
    """
    import numpy as np

    a = np.asarray(data)
    if a.dtype.kind == "f":
        bad = int(a.size - np.count_nonzero(np.isfinite(a)))
        if bad:
            raise _error(f"{name}: the {what} has {bad} NaN or infinite pixel(s) ({100 * bad / a.size:.2f} %); "
                         f"it cannot be used (re-make it, or replace those pixels)")
    if not allow_negative and a.size:
        neg = int(np.count_nonzero(a < 0))
        if neg:
            raise _error(f"{name}: the {what} has {neg} negative pixel(s) (minimum {float(a.min()):.6g}); "
                         f"a {what} must be positive")


def check_median(median, *, name):
    """Refuse a median that cannot be a temporal median of light frames.

    NaN or infinite pixels, or a median that is zero or negative over most of
    the image (a bias or dark subtracted twice, a wrong file), are refused.  A
    few negative pixels (noise after dark subtraction) are accepted.

    Examples
    --------
    >>> import numpy as np
    >>> check_median(np.full((8, 8), -5.0), name="median.fits")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    aiflat_astro.utils.exceptions.InputError: median.fits: the median is zero or negative ... value is -5); ...
    """
    import numpy as np

    data = np.asarray(getattr(median, "data", median))
    check_image_values(data, what="median", name=name)
    level = float(np.median(data)) if data.size else 0.0
    if level <= 0:
        raise _error(f"{name}: the median is zero or negative over most of the image (its median value is "
                     f"{level:.6g}); not the temporal median of light frames (bias or dark subtracted twice?)")


def check_mask_matches(detection, median, *, mask_name, median_name, force=False):
    """Refuse a mask made from another median (its ``INPSHA``), unless ``force``.

    The shape must always agree.  The mask records the SHA-256 of the median
    it was detected on (``INPSHA``): a different hash means the mask belongs
    to another video (or another median of it), and the flat would put dust
    where there is none.  With ``force`` the mask is used, with a warning.
    """
    import numpy as np

    from ..utils.exceptions import AiflatUserWarning, warn_user

    data = np.asarray(getattr(median, "data", median))
    if tuple(detection.dq.shape) != tuple(data.shape[:2]):
        raise _error(f"{mask_name} has shape {tuple(detection.dq.shape)} but {median_name} has shape "
                     f"{tuple(data.shape[:2])}: the mask was made from another median")
    recorded = (detection.provenance or {}).get("input_sha256")
    if not recorded:
        return
    from ..detection._high_level import _as_image
    from ..provenance import sha256_array

    image = median if hasattr(median, "meta") else data
    actual = sha256_array(_as_image(image)[0])
    if actual == recorded:
        return
    message = (f"{mask_name} was made from another median than {median_name} (its INPSHA {recorded[:12]}... "
               f"differs from the median's {actual[:12]}...)")
    if not force:
        raise _error(message + "; make the mask from this median, or pass --force to use it anyway")
    warn_user(message + "; used anyway (--force)", AiflatUserWarning)


def check_run_inputs(args):
    """``aiflat run``: OUTDIR usable and the frame selection of the video, before any computation."""
    import os
    from pathlib import Path

    from ..io.frames import open_frames

    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise _error(f"OUTDIR {str(out)!r} is a file, not a folder")
    existing = out if out.is_dir() else next((p for p in out.parents if p.exists()), None)
    if existing is not None and (not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK)):
        raise _error(f"cannot write into {str(out)!r}: {str(existing)!r} is not a writable folder")

    videos = args.video if isinstance(args.video, (list, tuple)) else [args.video]
    for video in videos:  # each video of a night is selected from on its own
        with open_frames(video, byte_order=getattr(args, "byte_order", "auto")) as source:
            check_frame_selection(source.n_frames, step=getattr(args, "step", 1),
                                  max_frames=getattr(args, "max_frames", None), name=source.name)
