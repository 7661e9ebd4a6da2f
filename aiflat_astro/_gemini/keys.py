"""Gemini API key resolution, done by aiflat rather than by the SDK.

Order: an explicit key, then the environment variables ``GEMINI_API_KEY`` and
``GOOGLE_API_KEY``, then the same names in a ``.env`` file (read with
`dotenv.dotenv_values`, never loaded into ``os.environ``).  The key is handed
to the SDK as ``api_key=`` and nowhere else: it is never logged, cached,
written to a product or put in an error message.
"""

import os
from pathlib import Path

from ..utils.exceptions import GeminiError

__all__ = []

#: Names looked up, in order, in the environment and then in the ``.env`` file.
KEY_VARIABLES = ("GEMINI_API_KEY", "GOOGLE_API_KEY")

_MISSING = (
    "no Gemini API key: set GEMINI_API_KEY (or GOOGLE_API_KEY) in the environment or in a "
    ".env file in the current folder; get a key at https://aistudio.google.com/apikey"
)


def resolve_api_key(api_key=None, *, env_file=None):
    """Return the Gemini API key to use and a description of where it came from.

    Parameters
    ----------
    api_key : str, optional
        An explicit key; wins over everything else.
    env_file : path-like, optional
        A ``.env`` file to read when the environment has no key.  Default:
        ``.env`` in the current folder, if it exists.  An explicitly given file
        that does not exist is an error.

    Returns
    -------
    key : str
        The key, stripped of surrounding white space.
    source : str
        ``'argument'``, the variable name, or ``'<name> in <file>'``; safe to
        log (it never contains the key).

    Raises
    ------
    GeminiError
        If no key is found.
    """
    if api_key is not None:
        key = str(api_key).strip()
        if not key:
            raise GeminiError("the Gemini API key given is empty")
        return key, "argument"
    for name in KEY_VARIABLES:
        key = os.environ.get(name, "").strip()
        if key:
            return key, name
    if env_file is None:
        path = Path.cwd() / ".env"
        if not path.is_file():
            raise GeminiError(_MISSING)
    else:
        path = Path(env_file)
        if not path.is_file():
            raise GeminiError(f"the .env file {str(path)!r} does not exist")
    from dotenv import dotenv_values

    values = dotenv_values(path)
    for name in KEY_VARIABLES:
        key = (values.get(name) or "").strip()
        if key:
            return key, f"{name} in {path.name}"
    raise GeminiError(_MISSING)


def scrub(text, secret):
    """Return ``text`` with every occurrence of ``secret`` replaced by ``'***'``."""
    text = str(text)
    if secret and len(secret) >= 4:
        text = text.replace(secret, "***")
    return text
