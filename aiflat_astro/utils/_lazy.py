"""Names imported on first use: registry entries (``'module:attribute'`` strings) and PEP 562
module attributes.  Standard library only (``import aiflat_astro`` loads nothing heavier)."""

import importlib

__all__ = ["lazy_attributes", "resolve"]


def lazy_attributes(module_name, names, *, submodules=()):
    """Return ``(__getattr__, __dir__)`` for a module whose attributes are imported on first use.

    Parameters
    ----------
    module_name : str
        The module's ``__name__``.
    names : dict
        Attribute name -> submodule (relative to ``module_name``) that defines it.
    submodules : iterable of str, optional
        Submodules reachable as attributes (``aiflat_astro.io``).

    Examples
    --------
    >>> getattr_, dir_ = lazy_attributes("json", {"pi": "decoder"})
    >>> "pi" in dir_()
    True
    """
    module = importlib.import_module(module_name)
    submodules = frozenset(submodules)

    def __getattr__(name):
        where = names.get(name)
        if where is None:
            if name in submodules:
                return importlib.import_module(f".{name}", module_name)
            raise AttributeError(f"module {module_name!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f".{where}", module_name), name)
        setattr(module, name, value)  # later lookups skip __getattr__
        return value

    def __dir__():
        return sorted(set(vars(module)) | set(names) | submodules)

    return __getattr__, __dir__


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
    from .exceptions import InputError

    if not isinstance(entry, str):
        return entry
    module, _, attr = entry.partition(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise InputError(f"{what} is not available in this installation ({exc})") from None
