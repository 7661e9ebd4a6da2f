"""Command-line options for the Gemini detector and inpainter, shared by several commands.

There is deliberately no option for the API key: a key on a command line ends
up in shell histories and process lists.  aiflat reads it from
``GEMINI_API_KEY``, ``GOOGLE_API_KEY`` or a ``.env`` file (``--gemini-env-file``).
"""

__all__ = ["add_gemini_options", "gemini_detector_options", "gemini_inpaint_options"]


def add_gemini_options(parser, *, consensus=True):
    """Add the ``--gemini-*`` options (and ``--disputed`` for the consensus detector)."""
    from .._constants import DEFAULT_GEMINI_MODEL

    group = parser.add_argument_group(
        "Gemini (used by --detector gemini|consensus and --inpaint gemini; the API key comes from "
        "GEMINI_API_KEY, GOOGLE_API_KEY or a .env file)")
    group.add_argument("--gemini-model", metavar="MODEL",
                       help=f"image model id (default: {DEFAULT_GEMINI_MODEL})")
    group.add_argument("--gemini-image-size", choices=("1K", "2K", "4K"),
                       help="output size asked of the model; larger frames are tiled (default: 2K)")
    group.add_argument("--gemini-base-url", metavar="URL",
                       help="API endpoint (default: Google's, or GOOGLE_GEMINI_BASE_URL when set)")
    group.add_argument("--gemini-timeout", type=float, metavar="SECONDS",
                       help="time allowed for one request (default: 300)")
    group.add_argument("--gemini-retries", type=int, metavar="N",
                       help="attempts per request, the first included; HTTP 408/429/5xx, "
                            "time-outs and connection errors are retried with exponential "
                            "backoff (default: 4)")
    group.add_argument("--gemini-cache-dir", metavar="DIR",
                       help="response cache folder (default: AIFLAT_CACHE_DIR or the user "
                            "cache folder)")
    group.add_argument("--no-gemini-cache", dest="gemini_cache", action="store_false",
                       help="always ask the model, never reuse a cached answer")
    group.add_argument("--gemini-env-file", metavar="FILE",
                       help=".env file holding the API key (default: ./.env)")
    if consensus:
        group.add_argument("--disputed", choices=("review", "include"),
                           help="consensus detector: shadows only one detector marks get the "
                                "REVIEW bit and are left uncorrected (review, default) or are "
                                "corrected too (include)")


def _common(args):
    options = {
        "model": getattr(args, "gemini_model", None),
        "image_size": getattr(args, "gemini_image_size", None),
        "base_url": getattr(args, "gemini_base_url", None),
        "timeout": getattr(args, "gemini_timeout", None),
        "retries": getattr(args, "gemini_retries", None),
        "cache_dir": getattr(args, "gemini_cache_dir", None),
        "env_file": getattr(args, "gemini_env_file", None),
    }
    options = {k: v for k, v in options.items() if v is not None}
    if getattr(args, "gemini_cache", True) is False:
        options["cache"] = False
    return options


def gemini_detector_options(args, detector):
    """Detector options from the command line (empty unless ``detector`` uses Gemini)."""
    if detector not in ("gemini", "consensus"):
        return {}
    options = _common(args)
    if detector == "consensus" and getattr(args, "disputed", None):
        options["disputed"] = args.disputed
    return options


def gemini_inpaint_options(args, inpaint):
    """Inpainter options from the command line (empty unless ``inpaint == 'gemini'``)."""
    return _common(args) if inpaint == "gemini" else {}
