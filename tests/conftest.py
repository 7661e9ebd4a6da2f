"""Shared fixtures for aiflat_astro tests."""

try:
    from pytest_astropy_header.display import PYTEST_HEADER_MODULES, TESTED_VERSIONS
except ImportError:  # pragma: no cover
    PYTEST_HEADER_MODULES, TESTED_VERSIONS = {}, {}

import aiflat_astro

PYTEST_HEADER_MODULES.clear()
PYTEST_HEADER_MODULES.update({
    "Numpy": "numpy", "Scipy": "scipy", "Astropy": "astropy", "ccdproc": "ccdproc",
    "photutils": "photutils", "google-genai": "google.genai",
})
TESTED_VERSIONS["aiflat_astro"] = aiflat_astro.__version__
