"""Atomic output files: write to a temporary name, then rename.

Standard library only at import (the ``aiflat apply`` command uses it before
astropy is loaded); `InputError` is imported when one is raised.
"""

import contextlib
import os
import tempfile
from pathlib import Path

__all__ = ["atomic_output", "check_output_path", "output_name", "parse_size", "temporary_path"]


def _input_error(message):
    from .exceptions import InputError

    return InputError(message)


def check_output_path(path, *, overwrite=False):
    """Raise `InputError` if ``path`` exists and ``overwrite`` is false."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise _input_error(f"output file {str(path)!r} exists (use --overwrite to replace it)")
    if not path.parent.exists():
        raise _input_error(f"output folder {str(path.parent)!r} does not exist")
    return path


def output_name(input_path, *, suffix="_aiflat"):
    """Default output name: ``<stem>_aiflat<ext>`` (a bare name, no folder).

    Examples
    --------
    >>> output_name("data/sun_0001.ser")
    'sun_0001_aiflat.ser'
    """
    p = Path(input_path)
    return f"{p.stem}{suffix}{p.suffix}"


def temporary_path(path):
    """Return a new, unused temporary name next to ``path`` (hidden, ending in ``.part``)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    os.unlink(tmp)  # writers such as astropy refuse to overwrite an existing file
    return tmp


@contextlib.contextmanager
def atomic_output(path, *, overwrite=False, tmp=None):
    """Yield a temporary path next to ``path``; rename it to ``path`` on success.

    On any exception the temporary file is removed and ``path`` is left as it
    was, so a failed run never leaves a half-written product.  ``tmp`` adopts
    a temporary name the caller already writes to (from `temporary_path`).

    Examples
    --------
    >>> import os, tempfile
    >>> d = tempfile.mkdtemp()
    >>> from pathlib import Path
    >>> with atomic_output(os.path.join(d, "x.txt")) as tmp:
    ...     _ = Path(tmp).write_text("hello")
    >>> Path(d, "x.txt").read_text()
    'hello'
    """
    path = check_output_path(path, overwrite=overwrite)
    if tmp is None:
        tmp = temporary_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


_SIZE_UNITS = {"": 1, "B": 1, "K": 1024, "KB": 1000, "KIB": 1024, "M": 1024**2, "MB": 1000**2,
               "MIB": 1024**2, "G": 1024**3, "GB": 1000**3, "GIB": 1024**3}


def parse_size(value):
    """Parse a memory size such as ``'256MB'``, ``'1GiB'`` or ``5e8`` into bytes.

    Examples
    --------
    >>> parse_size("256MB")
    256000000
    >>> parse_size("1GiB")
    1073741824
    >>> parse_size(1e6)
    1000000
    """
    if isinstance(value, (int, float)):
        size = int(value)
    else:
        text = str(value).strip().upper().replace(" ", "")
        number = text.rstrip("KMGIB")
        unit = text[len(number):]
        if unit not in _SIZE_UNITS or not number:
            raise _input_error(f"cannot read {value!r} as a memory size (examples: 512MB, 2GiB)")
        try:
            size = int(float(number) * _SIZE_UNITS[unit])
        except ValueError:
            raise _input_error(f"cannot read {value!r} as a memory size (examples: 512MB, 2GiB)") from None
    if size <= 0:
        raise _input_error(f"memory size must be positive, got {value!r}")
    return size
