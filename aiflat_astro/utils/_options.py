"""Option objects: one frozen dataclass per public function with many options, keywords kept.

A public function with more than about eight options takes them as one
object (``options=``) and, for compatibility, as keywords of the same names
(a keyword given as well overrides the object), as
`~aiflat_astro.flat.make_flat` does with `~aiflat_astro.flat.FlatOptions`.
"""

from dataclasses import fields, replace

from .exceptions import InputError

__all__ = ["merged_options", "option_names"]


def option_names(cls):
    """The field names of an option dataclass, as a frozenset."""
    return frozenset(f.name for f in fields(cls))


def merged_options(cls, options, keywords, caller):
    """``options`` (an instance of ``cls`` or None) with ``keywords`` applied over it.

    Parameters
    ----------
    cls : type
        A dataclass (usually frozen).
    options : ``cls`` or None
        The caller's object; None means the defaults.
    keywords : dict
        Keyword options of the same names; they win over ``options``.
    caller : str
        The public function's name, for the error message.

    Raises
    ------
    InputError
        ``options`` is not a ``cls``, or a keyword is no field of ``cls``.

    Examples
    --------
    >>> from dataclasses import dataclass
    >>> @dataclass(frozen=True)
    ... class Opts:
    ...     a: int = 1
    ...     b: int = 2
    >>> merged_options(Opts, Opts(a=5), {"b": 3}, "f")
    Opts(a=5, b=3)
    """
    if options is not None and not isinstance(options, cls):
        raise InputError(f"{caller}: options must be a {cls.__name__}, got {type(options).__name__}")
    unknown = set(keywords) - option_names(cls)
    if unknown:
        raise InputError(f"{caller} got unknown option(s) {', '.join(sorted(unknown))}")
    return replace(options or cls(), **keywords)
