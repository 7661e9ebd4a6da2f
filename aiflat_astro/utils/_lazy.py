"""Registries whose entries may be ``'module:attribute'`` strings, imported on first use."""

import importlib

from .exceptions import InputError

__all__ = ["resolve"]


def resolve(entry, *, what):
    """Return ``entry``, importing it first when it is a ``'module:attribute'`` string.

    Parameters
    ----------
    entry : object or str
        A registered object, or where to import it from.
    what : str
        What the entry is, for the error (``"detector 'gemini'"``).

    Raises
    ------
    `~aiflat_astro.utils.exceptions.InputError`
        When the module or attribute cannot be imported (an optional
        dependency missing from this installation).

    Examples
    --------
    >>> resolve("math:pi", what="pi") > 3
    True
    """
    if not isinstance(entry, str):
        return entry
    module, _, attr = entry.partition(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise InputError(f"{what} is not available in this installation ({exc})") from None
