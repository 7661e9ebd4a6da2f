"""Exceptions and warnings raised by aiflat_astro.

All warnings derive from astropy's warning classes so that users filter them
the same way as astropy's own; library code emits them through `warn_user`,
which always sets a correct ``stacklevel``.
"""

import warnings

from astropy.utils.exceptions import AstropyDeprecationWarning, AstropyUserWarning, AstropyWarning

__all__ = [
    "AiflatError",
    "SERFormatError",
    "InputError",
    "DetectionError",
    "GeminiError",
    "ProvenanceError",
    "AiflatWarning",
    "AiflatUserWarning",
    "SERFormatWarning",
    "NoDustDetectedWarning",
    "DetectorFallbackWarning",
    "AiflatDeprecationWarning",
]


class AiflatError(Exception):
    """Base class of all aiflat_astro errors.

    The command-line tool prints ``str(error)`` as one line and exits
    non-zero; the message must therefore be complete and self-explanatory.
    """


class InputError(AiflatError, ValueError):
    """An input (file, array, option) cannot be used as given."""


class SERFormatError(InputError):
    """A file cannot be read as a SER video."""


class DetectionError(AiflatError):
    """Dust detection failed (for example an unusable AI answer)."""


class GeminiError(DetectionError):
    """A call to the Gemini API failed or returned something unusable."""


class ProvenanceError(AiflatError):
    """A product's provenance or checksums do not verify."""


class AiflatWarning(AstropyWarning):
    """Base class of aiflat_astro warnings that are not user-facing."""


class AiflatUserWarning(AstropyUserWarning):
    """Base class of user-facing aiflat_astro warnings."""


class SERFormatWarning(AiflatUserWarning):
    """A SER file deviates from the specification but can still be read."""


class NoDustDetectedWarning(AiflatUserWarning):
    """The detector found no dust; an empty mask is returned."""


class DetectorFallbackWarning(AiflatUserWarning):
    """A requested method could not be used and a fallback was taken."""


class AiflatDeprecationWarning(AstropyDeprecationWarning):
    """A keyword or name of aiflat_astro is deprecated; the message names its replacement."""


def warn_user(message, category=AiflatUserWarning, stacklevel=1):
    """Emit ``message`` as ``category``, attributed to the caller's caller.

    Parameters
    ----------
    message : str
        The warning text.
    category : type, optional
        A subclass of `AiflatUserWarning` or `AiflatWarning`.
    stacklevel : int, optional
        1 attributes the warning to the function calling `warn_user`'s caller.
    """
    warnings.warn(message, category, stacklevel=stacklevel + 2)


def renamed_keyword(function, old, new, value, *, given=None, stacklevel=1):
    """The value passed under a deprecated keyword name, with an `AiflatDeprecationWarning`.

    Parameters
    ----------
    function : str
        The public function's name, for the message.
    old, new : str
        The deprecated keyword and what replaces it (``'ignore'``, or an
        expression such as ``'ignore=~valid'``).
    value : object
        What to use in place of ``new`` (already converted when the meaning
        is inverted).
    given : object, optional
        The value passed under the new name: both at once is an `InputError`.
    stacklevel : int, optional
        1 attributes the warning to the caller of the function calling
        `renamed_keyword`.

    Returns
    -------
    object
        ``value``.

    Examples
    --------
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     renamed_keyword("f", "mask", "ignore", 3)
    3
    >>> caught[0].category.__name__
    'AiflatDeprecationWarning'
    """
    if given is not None:
        raise InputError(f"{function}: give {new.split('=')[0]} or the deprecated {old}, not both")
    warnings.warn(f"{function}({old}=...) is deprecated; use {new} instead", AiflatDeprecationWarning,
                  stacklevel=stacklevel + 2)
    return value
