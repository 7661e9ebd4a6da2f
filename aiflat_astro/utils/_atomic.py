"""Atomic output files: write to a temporary name, then rename."""

import contextlib
import os
import tempfile
from pathlib import Path

from .exceptions import InputError

__all__ = ["atomic_output", "check_output_path", "parse_size"]


def check_output_path(path, *, overwrite=False):
    """Raise `InputError` if ``path`` exists and ``overwrite`` is false."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise InputError(f"output file {str(path)!r} exists (use --overwrite to replace it)")
    if not path.parent.exists():
        raise InputError(f"output folder {str(path.parent)!r} does not exist")
    return path


@contextlib.contextmanager
def atomic_output(path, *, overwrite=False):
    """Yield a temporary path next to ``path``; rename it to ``path`` on success.

    On any exception the temporary file is removed and ``path`` is left as it
    was, so a failed run never leaves a half-written product.

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
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    os.unlink(tmp)  # writers such as astropy refuse to overwrite an existing file
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
            raise InputError(f"cannot read {value!r} as a memory size (examples: 512MB, 2GiB)")
        try:
            size = int(float(number) * _SIZE_UNITS[unit])
        except ValueError:
            raise InputError(f"cannot read {value!r} as a memory size (examples: 512MB, 2GiB)") from None
    if size <= 0:
        raise InputError(f"memory size must be positive, got {value!r}")
    return size
