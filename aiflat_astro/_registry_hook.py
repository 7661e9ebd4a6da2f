"""Register the ``'ser'`` format with `~astropy.nddata.CCDData` without importing astropy.nddata.

``CCDData.read(path, format='ser')`` must work once aiflat_astro is imported
(the contract), but importing `astropy.nddata` costs about 0.3 s (it pulls in
`astropy.wcs` and `astropy.coordinates`), which the ``aiflat`` command does
not need to copy a video.  So the registration is done when
`astropy.nddata` is imported: at once if it already is, otherwise by a
post-import hook, a `sys.meta_path` finder that lets the normal import run and
registers the reader right after the package has been executed.

This module imports only the standard library.  The registered functions
import `aiflat_astro.io.ser` when they are first called.
"""

import importlib.abc
import importlib.util
import sys
import threading

__all__ = []

_TARGET = "astropy.nddata"
_lock = threading.Lock()
_registered = False


def _ser_reader(filename, *args, **kwargs):
    from .io.ser import _ccddata_ser_reader

    return _ccddata_ser_reader(filename, *args, **kwargs)


def _ser_identifier(origin, filepath, fileobj, *args, **kwargs):
    from .io.ser import _identify_ser

    return _identify_ser(origin, filepath, fileobj, *args, **kwargs)


def _register(nddata):
    """Register the SER reader and identifier with ``nddata.CCDData`` (once)."""
    global _registered
    with _lock:
        if _registered:
            return
        _registered = True
    from astropy.io import registry

    registry.register_reader("ser", nddata.CCDData, _ser_reader, force=True)
    registry.register_identifier("ser", nddata.CCDData, _ser_identifier, force=True)


class _AfterImport(importlib.abc.MetaPathFinder):
    """Find ``astropy.nddata`` with the other finders and register once its module has run."""

    def __init__(self):
        self._busy = threading.local()

    def find_spec(self, fullname, path=None, target=None):
        if fullname != _TARGET or getattr(self._busy, "on", False):
            return None
        self._busy.on = True
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self._busy.on = False
        loader = getattr(spec, "loader", None)
        if loader is None or not hasattr(loader, "exec_module"):
            return None
        exec_module = loader.exec_module

        def exec_and_register(module):
            exec_module(module)
            _uninstall()
            _register(module)

        # the loader object is this module's own (one per spec); wrapping its method keeps
        # ``module.__loader__`` the real loader (resources, reloads and tracebacks unchanged)
        loader.exec_module = exec_and_register
        return spec


_finder = None


def _uninstall():
    global _finder
    with _lock:
        if _finder is not None and _finder in sys.meta_path:
            sys.meta_path.remove(_finder)
        _finder = None


def install():
    """Register now if `astropy.nddata` is imported, else when it is (idempotent)."""
    global _finder
    module = sys.modules.get(_TARGET)
    if module is not None and hasattr(module, "CCDData"):
        _register(module)
        return
    with _lock:
        if _registered or _finder is not None:
            return
        _finder = _AfterImport()
        sys.meta_path.insert(0, _finder)
