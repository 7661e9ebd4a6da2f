"""Utilities shared across aiflat_astro (exceptions, warnings, atomic output)."""

from .exceptions import *  # noqa: F401,F403
