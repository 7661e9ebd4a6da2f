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


@pytest.fixture(scope="session")
def xu2016():
    """The real ``xu2016`` H-alpha drift set (skips when ``shared/data/real`` is absent)."""
    from aiflat_astro.datasets.real import load_xu2016, real_data_dir

    if real_data_dir("xu2016") is None:
        pytest.skip("real data shared/data/real/xu2016 not found beside the project (set AIFLAT_REAL_DATA)")
    return load_xu2016()


@pytest.fixture(scope="session")
def real_star_field():
    """Path of the real dust-free star field ``ccdproc/a8280271.fits`` (skips when absent)."""
    from aiflat_astro.datasets.real import real_data_dir

    path = real_data_dir("ccdproc", "a8280271.fits")
    if path is None:
        pytest.skip("real data shared/data/real/ccdproc/a8280271.fits not found beside the project")
    return path
