"""Command-line interface: ``aiflat <command> ...``.

A thin argparse front end over the library.  Each sub-command lives in its own
private module under ``aiflat_astro/_commands/`` exposing ``add_parser(subparsers)``
(which registers the sub-command and sets ``func``) and the command function
``run(args) -> int``.  Only this layer prints.

Rules (see DESIGN.md): exit 0 on success; on bad input print one clear line on
stderr and exit non-zero (a traceback only with ``--debug``); never modify an
input; write outputs atomically; refuse to overwrite without ``--overwrite``.
"""

import argparse
import importlib
import logging
import sys
import warnings

from . import __version__

__all__ = ["main"]

#: Sub-command modules, in the order ``aiflat --help`` lists them.
COMMANDS = ("info", "median", "detect", "flat", "apply", "run", "report", "simulate", "evaluate", "demo")

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2


def _build_parser():
    parser = argparse.ArgumentParser(
        prog="aiflat",
        description="Synthetic dust flats for solar, planetary and deep-sky data "
                    "(SER videos, FITS cubes, FITS frames).",
    )
    parser.add_argument("--version", action="version", version=f"aiflat_astro {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logging")
    parser.add_argument("-v", "--verbose", action="store_true", help="show informational log messages")
    parser.add_argument("-q", "--quiet", action="store_true", help="only errors; no progress bars")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"._commands.{name}", __package__)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.endswith(f"_commands.{name}"):
                continue  # command not (yet) available in this build
            raise
        module.add_parser(sub)
    return parser


def _setup_logging(args):
    level = logging.DEBUG if args.debug else logging.INFO if args.verbose else logging.WARNING
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s" if not args.debug
                                           else "%(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("aiflat_astro")
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"warning: {message}", file=sys.stderr)


def main(argv=None):
    """Run the ``aiflat`` command line; return the exit status.

    Parameters
    ----------
    argv : list of str, optional
        Arguments without the program name; ``sys.argv[1:]`` by default.

    Returns
    -------
    int
        0 on success, 1 on an error, 2 on a usage error.
    """
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help, --version and usage errors
        return int(exc.code or 0)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    _setup_logging(args)
    args.progress = not args.quiet and sys.stderr.isatty()
    with warnings.catch_warnings():
        if not args.debug:
            # Print each warning once as a plain line, whatever filters the caller set.
            warnings.simplefilter("default")
            warnings.showwarning = _show_warning
        try:
            return int(args.func(args) or EXIT_OK)
        except KeyboardInterrupt:
            print("aiflat: interrupted", file=sys.stderr)
            return 130
        except Exception as exc:
            # imported here: the command line starts without astropy (see _commands/apply.py)
            from .utils.exceptions import AiflatError

            if args.debug or not isinstance(exc, (AiflatError, OSError, ValueError)):
                raise
            print(f"aiflat {args.command}: error: {_one_line(exc)}", file=sys.stderr)
            return EXIT_ERROR


def _one_line(exc):
    text = str(exc) or exc.__class__.__name__
    if isinstance(exc, OSError) and exc.filename and exc.strerror:
        text = f"{exc.strerror}: {exc.filename!r}"
    return " ".join(text.split())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
