"""Atomic output files: write to a temporary file, then move it into place.

Two kinds of temporary files:

* **anonymous** (Linux ``O_TMPFILE``, used for the SER outputs of ``apply``,
  ``run`` and ``simulate``, the large ones): a file with no name in the output
  folder, reachable by the writer through ``/proc/self/fd/N``, given its final
  name by ``linkat`` only when complete.  A killed process cannot leave it
  behind: the kernel frees it with the process's descriptors.
* **named** (everything else, and where the OS or file system has no
  ``O_TMPFILE``): a hidden ``.<name>.aiflat-<pid>-XXXXXXXX.part`` next to the
  output, renamed on success and removed on an error.  After a SIGKILL it
  stays; `clean_stale_parts` (run by the command line at the start of each
  command in every output folder) removes the ones whose process is gone and
  that are older than the current run.

Standard library only at import (the ``aiflat apply`` command uses it before
astropy is loaded); `InputError` is imported when one is raised.
"""

import contextlib
import errno
import logging
import os
import re
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["atomic_output", "check_output_path", "clean_stale_parts", "output_name", "parse_size",
           "temporary_path", "TemporaryOutput", "output_error"]

log = logging.getLogger(__name__)

#: Our named temporary files: ``.<name>.aiflat-<pid>-<random>.part``.
PART_RE = re.compile(r"^\..+\.aiflat-(?P<pid>\d+)-[A-Za-z0-9_]+\.part$")
#: Named temporary files of aiflat versions before 0.x (no pid in the name).
LEGACY_PART_RE = re.compile(r"^\..+\.[a-z0-9_]{8}\.part$")
#: Legacy temporary files are removed only when older than this (their writer is unknown).
LEGACY_AGE = 24 * 3600
#: Start of this process (seconds since the epoch): a stale file is older than the run.
RUN_STARTED = time.time()


def _input_error(message):
    from .exceptions import InputError

    return InputError(message)


def check_output_path(path, *, overwrite=False):
    """Raise `InputError` unless a file can be written at ``path``.

    Refused: an existing file without ``overwrite``; a folder; a missing
    parent folder or one that is not a folder; a folder this process may not
    write into.  All before any computation, in the user's words.

    Examples
    --------
    >>> import tempfile
    >>> check_output_path(tempfile.mkdtemp())
    Traceback (most recent call last):
    ...
    aiflat_astro.utils.exceptions.InputError: output '...' is a folder, not a file
    """
    path = Path(path)
    if path.is_dir():
        raise _input_error(f"output {str(path)!r} is a folder, not a file")
    if path.exists() and not overwrite:
        raise _input_error(f"output file {str(path)!r} exists (use --overwrite to replace it)")
    parent = path.parent
    if not parent.exists():
        raise _input_error(f"output folder {str(parent)!r} does not exist")
    if not parent.is_dir():
        raise _input_error(f"cannot write {str(path)!r}: {str(parent)!r} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise _input_error(f"cannot write {str(path)!r}: the folder {str(parent)!r} is not writable")
    if path.exists() and not os.access(path, os.W_OK) and not os.access(parent, os.W_OK):
        raise _input_error(f"cannot replace {str(path)!r}: permission denied")
    return path


def output_error(exc, path):
    """One-line `InputError` for an `OSError` met while writing the user's file ``path``.

    The message names ``path`` (not the internal temporary file) and the
    cause once; errors that are not about writing are returned unchanged.

    Examples
    --------
    >>> import errno
    >>> err = OSError(errno.ENOSPC, "No space left on device", "/data/.median.fits.aiflat-1-x.part")
    >>> print(output_error(err, "/data/median.fits"))
    cannot write '/data/median.fits': no space left on device
    """
    if not isinstance(exc, OSError):
        return exc
    text = str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT) or "Not enough space on disk" in text:
        cause = "no space left on device" if exc.errno != errno.EDQUOT else "disk quota exceeded"
        m = re.search(r"requested (\d+), available (\d+)", text)
        if m:
            cause += f" (needs {int(m.group(1)):,} bytes, {int(m.group(2)):,} available)"
    elif exc.errno in (errno.EACCES, errno.EPERM):
        cause = "permission denied"
    elif exc.errno == errno.EROFS:
        cause = "read-only file system"
    elif exc.errno == errno.EFBIG:
        cause = "file too large for the file system"
    elif exc.errno == errno.EIO:
        cause = "input/output error"
    elif exc.errno == errno.EEXIST:
        return _input_error(f"output file {str(path)!r} exists (use --overwrite to replace it)")
    else:
        return exc
    return _input_error(f"cannot write {str(path)!r}: {cause}")


def _pid_alive(pid):
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_parts(folder, *, before=None):
    """Remove our own temporary files left in ``folder`` by killed runs; return their names.

    A file is removed only if its name is ours (``.<name>.aiflat-<pid>-XXXXXXXX.part``),
    its process is gone, and it was last modified before ``before`` (default:
    when this process started).  Files of the older pattern without a pid
    (``.<name>.XXXXXXXX.part``) are removed when more than a day old.
    Anything else is left alone; errors are ignored (a folder we may not read).

    Examples
    --------
    >>> import os, tempfile
    >>> d = tempfile.mkdtemp()
    >>> stale = os.path.join(d, ".out.ser.aiflat-999999999-abcdefgh.part")
    >>> open(stale, "wb").close(); os.utime(stale, (0, 0))
    >>> clean_stale_parts(d)
    ['.out.ser.aiflat-999999999-abcdefgh.part']
    """
    before = RUN_STARTED if before is None else before
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        name = entry.name
        if not name.endswith(".part") or not name.startswith("."):
            continue
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            mtime = entry.stat(follow_symlinks=False).st_mtime
        except OSError:
            continue
        m = PART_RE.match(name)
        if m:
            stale = mtime < before and not _pid_alive(int(m.group("pid")))
        else:
            stale = bool(LEGACY_PART_RE.match(name)) and now - mtime > LEGACY_AGE
        if stale:
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
                removed.append(name)
                log.info("removed %s, left by an interrupted run", entry.path)
    return removed


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
    """Return a new, unused temporary name next to ``path`` (hidden, ending in ``.part``).

    The name carries this process's id (``.<name>.aiflat-<pid>-XXXXXXXX.part``)
    so that `clean_stale_parts` can tell a leftover of a killed run from the
    file of a run still going on.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.aiflat-{os.getpid()}-", suffix=".part", dir=path.parent)
    os.close(fd)
    os.unlink(tmp)  # writers such as astropy refuse to overwrite an existing file
    return tmp


def _umask():
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


class TemporaryOutput:
    """A temporary file for ``path``, anonymous (``O_TMPFILE``) where the OS allows.

    ``tmp.path`` is a name the writer opens (``/proc/self/fd/N`` for an
    anonymous file: every open of it reaches the same unnamed file), `commit`
    gives the file its final name, `discard` drops it.  An anonymous file
    disappears with the process however it ends (SIGKILL included); elsewhere
    (no ``O_TMPFILE`` or no ``/proc``: other systems, some network file
    systems) a named ``.part`` file of `temporary_path` is used.

    Parameters
    ----------
    path : str or `os.PathLike`
        The final output file.
    anonymous : bool, optional
        Try ``O_TMPFILE`` first (default `True`).
    named : str, optional
        Adopt this named temporary file (from `temporary_path`) instead.

    Examples
    --------
    >>> import os, tempfile
    >>> d = tempfile.mkdtemp()
    >>> tmp = TemporaryOutput(os.path.join(d, "out.bin"))
    >>> with open(tmp.path, "wb") as f:
    ...     _ = f.write(b"data")
    >>> os.listdir(d) == ([] if tmp.anonymous else [os.path.basename(tmp.path)])
    True
    >>> tmp.commit()
    >>> os.listdir(d)
    ['out.bin']
    """

    def __init__(self, path, *, anonymous=True, named=None):
        self.target = Path(path)
        self.fd = None
        self.anonymous = False
        if named is None and anonymous and sys.platform.startswith("linux") and hasattr(os, "O_TMPFILE") \
                and os.path.isdir("/proc/self/fd"):
            try:
                self.fd = os.open(self.target.parent, os.O_TMPFILE | os.O_RDWR, 0o666 & ~_umask())
                self.anonymous = True
            except OSError:  # the file system does not support it: a named file
                self.fd = None
        self.path = (f"/proc/self/fd/{self.fd}" if self.anonymous else
                     named if named is not None else temporary_path(self.target))
        self.done = False

    def commit(self, *, overwrite=False):
        """Give the file its final name (atomically; replacing a file only with ``overwrite``)."""
        if self.done:
            return
        try:
            if not self.anonymous:
                os.replace(self.path, self.target)
                return
            dfd = os.open(self.target.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
            try:
                try:  # linkat(AT_SYMLINK_FOLLOW) of /proc/self/fd/N: the file gets a name
                    os.link(self.path, self.target.name, src_dir_fd=dfd, dst_dir_fd=dfd,
                            follow_symlinks=True)
                except FileExistsError:
                    if not overwrite:
                        raise
                    # link under a temporary name, then rename over the old file (atomic)
                    tmp_name = Path(temporary_path(self.target)).name
                    os.link(self.path, tmp_name, src_dir_fd=dfd, dst_dir_fd=dfd, follow_symlinks=True)
                    try:
                        os.replace(tmp_name, self.target.name, src_dir_fd=dfd, dst_dir_fd=dfd)
                    except BaseException:
                        with contextlib.suppress(OSError):
                            os.unlink(tmp_name, dir_fd=dfd)
                        raise
            finally:
                os.close(dfd)
        finally:
            self.done = True
            self._close()

    def discard(self):
        """Drop the file (nothing is left behind)."""
        if self.done:
            return
        self.done = True
        if self.anonymous:
            self._close()
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)

    def _close(self):
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None

    def __del__(self):
        if not getattr(self, "done", True):
            self.discard()


@contextlib.contextmanager
def atomic_output(path, *, overwrite=False, tmp=None, anonymous=False):
    """Yield a temporary path next to ``path``; move it to ``path`` on success.

    On any exception the temporary file is removed and ``path`` is left as it
    was, so a failed run never leaves a half-written product.  ``tmp`` adopts
    a temporary file the caller already writes to (a `TemporaryOutput`, or a
    name from `temporary_path`).  With ``anonymous=True`` the temporary file
    is a `TemporaryOutput` (``O_TMPFILE`` where the OS allows: nothing
    survives a kill); only writers that open the yielded path themselves
    (not those that refuse an existing file, as astropy does) may use it.
    An `OSError` while writing (a full disk ...) becomes one `InputError`
    line naming ``path``.

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
        tmp = TemporaryOutput(path, anonymous=anonymous)
    elif not isinstance(tmp, TemporaryOutput):
        tmp = TemporaryOutput(path, named=tmp)
    try:
        yield tmp.path
        tmp.commit(overwrite=overwrite)
    except BaseException as exc:
        tmp.discard()
        converted = output_error(exc, path) if isinstance(exc, OSError) else exc
        if converted is not exc:
            raise converted from None
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
