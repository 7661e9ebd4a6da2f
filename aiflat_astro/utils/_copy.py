"""A file copy by the kernel, in a background thread, that a caller can follow and cancel.

Standard library only: the ``aiflat apply`` command starts copying a video
with it before NumPy and astropy are imported (see ``_commands/apply.py``).
"""

import errno
import os
import shutil
import sys
import threading

__all__ = ["BackgroundCopy"]


class BackgroundCopy:
    """Copy ``src`` to ``dst`` in a background thread.

    On Linux the copy is ``os.sendfile`` in calls of the kernel's largest
    size, 2 GiB, as `shutil.copyfile` makes them (the kernel copies
    page-cache pages, nothing passes through Python; where the file system
    refuses it, 8 MiB reads and writes).  Smaller calls are slower: on a
    4.2 GB video 256 MiB calls took 3.5–6.8 s where 2 GiB calls took
    2.7–3.2 s and `shutil.copyfile` 2.2–4.9 s.  The output grows front to
    back, so the bytes below its current size are final and `wait_for` lets
    a caller patch the part already copied while the kernel copies the rest;
    `cancel` stops it after the current call (at most 2 GiB, about a second).
    Elsewhere the copy is `shutil.copyfile` in one call, and `wait_for` waits
    for all of it.

    Both files are opened before the thread starts, so the output exists
    (empty) on return and a caller that removes it after `cancel` leaves
    nothing behind.

    Parameters
    ----------
    src, dst : str or `os.PathLike`
        Input file (opened read-only) and output file (created or truncated).

    Examples
    --------
    >>> import os, tempfile
    >>> d = tempfile.mkdtemp()
    >>> with open(os.path.join(d, "a"), "wb") as f:
    ...     _ = f.write(b"x" * 100000)
    >>> copy = BackgroundCopy(os.path.join(d, "a"), os.path.join(d, "b"))
    >>> copy.finish()
    >>> os.path.getsize(os.path.join(d, "b"))
    100000
    """

    CHUNK = 0x7FFFF000  # the kernel's largest read/write size (MAX_RW_COUNT)
    _POLL = 0.002

    def __init__(self, src, dst):
        self.src, self.dst = os.fspath(src), os.fspath(dst)
        self.error = None
        self._cancelled = threading.Event()
        self.sequential = sys.platform.startswith("linux")
        self._fsrc = open(self.src, "rb")
        try:
            self.size = os.fstat(self._fsrc.fileno()).st_size
            self._fdst = open(self.dst, "wb")
        except BaseException:
            self._fsrc.close()
            raise
        self._thread = threading.Thread(target=self._run, name="aiflat-copy", daemon=True)
        self._thread.start()

    def _run(self):
        try:
            if self.sequential:
                self._sendfile()
            else:
                self._fdst.close()
                shutil.copyfile(self.src, self.dst)
        except BaseException as exc:  # re-raised in the caller's thread
            self.error = exc
        finally:
            self._fsrc.close()
            self._fdst.close()

    def _sendfile(self):
        infd, outfd = self._fsrc.fileno(), self._fdst.fileno()
        offset = 0
        while offset < self.size and not self._cancelled.is_set():
            try:
                sent = os.sendfile(outfd, infd, offset, min(self.CHUNK, self.size - offset))
            except (AttributeError, OSError) as exc:
                # as shutil does: a file system without sendfile gets a plain copy, other errors
                # (a full disk) are the caller's
                if offset == 0 and getattr(exc, "errno", errno.ENOSYS) not in (errno.ENOSPC, errno.EDQUOT):
                    self._readwrite()
                    return
                raise
            if sent == 0:  # the input shrank under us
                break
            offset += sent

    def _readwrite(self):
        buf = bytearray(8 << 20)
        view = memoryview(buf)
        while not self._cancelled.is_set():
            n = self._fsrc.readinto(buf)
            if not n:
                break
            self._fdst.write(view[:n])
        self._fdst.flush()

    def _copied(self):
        try:
            return os.path.getsize(self.dst)
        except OSError:
            return 0

    def wait_for(self, offset):
        """Block until the first ``offset`` bytes of the output are final; re-raise a copy error."""
        offset = min(offset, self.size)
        while self._thread.is_alive():
            if self.sequential and self._copied() >= offset:
                return
            self._thread.join(self._POLL)
        if self.error is not None:
            raise self.error
        if self._cancelled.is_set():
            raise OSError(f"{self.dst}: the copy was cancelled")
        if self._copied() < offset:
            raise OSError(f"{self.dst}: the copy stopped short ({self._copied()} of {self.size} bytes)")

    def finish(self):
        """Wait for the whole copy; re-raise a copy error."""
        self.wait_for(self.size)

    def cancel(self):
        """Stop the copy as soon as possible and wait for the thread; errors are ignored."""
        self._cancelled.set()
        self._thread.join()

    @property
    def done(self):
        """Whether the copy thread has ended."""
        return not self._thread.is_alive()
