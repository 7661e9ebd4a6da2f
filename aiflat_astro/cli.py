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
import importlib.abc
import importlib.util
import logging
import os
import re
import sys
import warnings
from pathlib import Path

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


#: Commands whose result *is* their standard output (kept with ``-q``).
_STDOUT_COMMANDS = ("info", "evaluate")
#: Commands whose ``-o`` is a folder.
_FOLDER_OUTPUT_COMMANDS = ("run", "demo")
#: Options naming output files or folders: their folders are cleaned of our stale temporary files.
_OUTPUT_OPTIONS = ("output", "catalog", "regions", "preview", "tiff", "asdf", "drift_plot", "truth",
                   "outdir")


class _AstropyLogHook(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Post-import hook on ``astropy.logger``: astropy must not take over `warnings.showwarning`.

    astropy's logger, when astropy is first imported (lazily, in the middle of
    a command), replaces `warnings.showwarning` and prints our warnings in its
    own format (``WARNING: ... [aiflat_astro...]``), past ``-q``.  Right after
    the module has run, before astropy initialises its logger, its
    ``log_warnings`` option is turned off (and, with ``-q``, its level raised).
    """

    def __init__(self, quiet):
        self.quiet = quiet
        self._spec = None

    def find_spec(self, name, path, target=None):
        if name != "astropy.logger" or self._spec is not None:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return None
        self._spec = spec
        self._loader = spec.loader
        spec.loader = self
        return spec

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        _quiet_astropy_conf(module.conf, self.quiet)
        if self in sys.meta_path:
            sys.meta_path.remove(self)


def _quiet_astropy_conf(conf, quiet):
    try:
        conf.log_warnings = False
        if quiet:
            conf.log_level = "ERROR"
    except Exception:  # pragma: no cover - an astropy without these options: leave it
        pass


def _tame_astropy(quiet):
    """Keep astropy's logger out of our warnings (see `_AstropyLogHook`).

    Returns a function that undoes it (for a caller that runs `main` in its
    own process with astropy already imported, as the tests do).
    """
    if "astropy.logger" not in sys.modules:
        hook = _AstropyLogHook(quiet)
        sys.meta_path.insert(0, hook)

        def undo():
            if hook in sys.meta_path:
                sys.meta_path.remove(hook)
        return undo
    import astropy

    log = getattr(astropy, "log", None)
    if log is None:
        return lambda: None
    level, disabled = log.level, False
    try:
        if log.warnings_logging_enabled():
            log.disable_warnings_logging()
            disabled = True
    except Exception:  # showwarning was overridden by someone else: ours is set anyway
        pass
    if quiet:
        log.setLevel("ERROR")

    def undo():
        log.setLevel(level)
        if disabled and not log.warnings_logging_enabled():
            try:
                log.enable_warnings_logging()
            except Exception:  # pragma: no cover
                pass
    return undo


def _progress_enabled(args):
    """Progress bars: not with ``-q``, only on a terminal at least 20 columns wide."""
    if args.quiet or not sys.stderr.isatty():
        return False
    try:
        columns = os.get_terminal_size(sys.stderr.fileno()).columns
    except (OSError, ValueError):
        return False
    return columns >= 20


def _clean_output_folders(args):
    """Remove our temporary files left by killed runs in the folders this command writes to."""
    from .utils._atomic import clean_stale_parts

    folders = set()
    for name in _OUTPUT_OPTIONS:
        value = getattr(args, name, None)
        if not isinstance(value, (str, os.PathLike)) or not str(value):
            continue
        p = Path(value)
        if p.is_dir():
            folders.add(p)
        elif not (name == "output" and args.command in _FOLDER_OUTPUT_COMMANDS):
            folders.add(p.parent)  # a file: its folder (an OUTDIR still to be made: nothing to clean)
    removed = []
    for folder in sorted(folders):
        if folder.is_dir():
            removed += [str(folder / n) for n in clean_stale_parts(folder)]
    return removed


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
    args.progress = _progress_enabled(args)
    undo = _tame_astropy(args.quiet) if not args.debug else (lambda: None)
    try:
        return _run_command(args)
    finally:
        undo()


def _run_command(args):
    quiet_stdout = args.quiet and args.command not in _STDOUT_COMMANDS
    with warnings.catch_warnings():
        if not args.debug:
            # Print each warning once as a plain line, whatever filters the caller set;
            # with -q, none (only errors).
            warnings.simplefilter("ignore" if args.quiet else "default")
            warnings.showwarning = _show_warning
        stdout = sys.stdout
        try:
            if getattr(args, "mem_limit", None) is not None:  # refused the same way by every command
                from ._commands._checks import check_mem_limit

                check_mem_limit(args.mem_limit)
            for path in _clean_output_folders(args):
                logging.getLogger(__name__).info("removed %s, left by an interrupted run", path)
            if quiet_stdout:
                sys.stdout = open(os.devnull, "w")
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
        finally:
            if sys.stdout is not stdout:
                sys.stdout.close()
                sys.stdout = stdout


_PART_NAME = re.compile(r"^\.(?P<name>.+)\.(?:aiflat-\d+-)?[A-Za-z0-9_]+\.part$")


def _user_path(filename):
    """The user's file for an internal temporary name (``.<name>.aiflat-<pid>-X.part`` → ``<name>``)."""
    text = os.fsdecode(filename)
    if text.startswith("/proc/self/fd/"):
        return None
    p = Path(text)
    m = _PART_NAME.match(p.name)
    return str(p.with_name(m.group("name"))) if m else text


def _dedupe_sentences(text):
    parts = re.split(r"(?<=[.!?])\s+", text)
    seen, out = set(), []
    for part in parts:
        key = part.strip().rstrip(".").lower()
        if key and key in seen:
            continue
        seen.add(key)
        out.append(part)
    return " ".join(out)


def _one_line(exc):
    """One line for the user: the cause once, the user's file (never our temporary name)."""
    text = str(exc) or exc.__class__.__name__
    if isinstance(exc, OSError) and exc.filename and exc.strerror:
        path = _user_path(exc.filename)
        from .utils._atomic import output_error

        converted = output_error(exc, path) if path else exc
        if converted is not exc:
            text = str(converted)
        else:
            text = f"{exc.strerror}: {path!r}" if path else exc.strerror
    elif isinstance(exc, OSError):
        text = re.sub(r"\[Errno \d+\]\s*", "", text)
    return _dedupe_sentences(" ".join(text.split()))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
