"""Shared fixtures for aiflat_astro tests."""

import pytest

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


@pytest.fixture
def offline_gemini(monkeypatch, tmp_path):
    """No real key, no endpoint override, a private response cache, no stray ``.env`` (Gemini tests)."""
    for name in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "GOOGLE_GEMINI_BASE_URL", "GOOGLE_GENAI_API_VERSION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AIFLAT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
