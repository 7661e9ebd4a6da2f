"""Gemini API key resolution and client construction (no network)."""

import os

import pytest

from aiflat_astro._gemini.client import API_VERSION, default_cache_dir, make_client
from aiflat_astro._gemini.keys import resolve_api_key, scrub
from aiflat_astro.utils.exceptions import GeminiError


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for name in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "GOOGLE_GEMINI_BASE_URL", "AIFLAT_CACHE_DIR",
                 "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def test_explicit_key_wins(monkeypatch):
    monkeypatch.setenv("GEMINI_API_KEY", "env-key")
    assert resolve_api_key("  given-key \n") == ("given-key", "argument")


def test_environment_order(monkeypatch):
    monkeypatch.setenv("GOOGLE_API_KEY", "google")
    assert resolve_api_key() == ("google", "GOOGLE_API_KEY")
    monkeypatch.setenv("GEMINI_API_KEY", "gemini")
    assert resolve_api_key() == ("gemini", "GEMINI_API_KEY")
    monkeypatch.setenv("GEMINI_API_KEY", "   ")  # blank counts as unset
    assert resolve_api_key() == ("google", "GOOGLE_API_KEY")


def test_dotenv_is_read_but_not_loaded(tmp_path):
    (tmp_path / ".env").write_text("# my keys\nOTHER=1\nGOOGLE_API_KEY='from-dotenv'\n")
    assert resolve_api_key() == ("from-dotenv", "GOOGLE_API_KEY in .env")
    assert "GOOGLE_API_KEY" not in os.environ and "OTHER" not in os.environ


def test_environment_beats_dotenv(monkeypatch, tmp_path):
    (tmp_path / ".env").write_text("GEMINI_API_KEY=from-dotenv\n")
    monkeypatch.setenv("GOOGLE_API_KEY", "from-env")
    assert resolve_api_key()[0] == "from-env"


def test_explicit_env_file(tmp_path):
    other = tmp_path / "secrets" / "gemini.env"
    other.parent.mkdir()
    other.write_text("GEMINI_API_KEY=abc123\n")
    assert resolve_api_key(env_file=other) == ("abc123", "GEMINI_API_KEY in gemini.env")
    with pytest.raises(GeminiError, match="does not exist"):
        resolve_api_key(env_file=tmp_path / "missing.env")


def test_missing_key_message(tmp_path):
    (tmp_path / ".env").write_text("UNRELATED=1\n")
    with pytest.raises(GeminiError) as info:
        resolve_api_key()
    message = str(info.value)
    assert "GEMINI_API_KEY" in message and "GOOGLE_API_KEY" in message and ".env" in message
    assert "\n" not in message


def test_empty_explicit_key():
    with pytest.raises(GeminiError, match="empty"):
        resolve_api_key("")


def test_scrub():
    assert scrub("bad key AIza-123456 given", "AIza-123456") == "bad key *** given"
    assert scrub("nothing", None) == "nothing"


def test_client_options(monkeypatch):
    """The client gets the key explicitly, api_version pinned, timeout in ms, retries."""
    client = make_client(api_key="k-123456", timeout=2.5, retries=3, initial_delay=0.5, max_delay=4)
    try:
        options = client._api_client._http_options
        assert options.api_version == API_VERSION == "v1beta"
        assert options.timeout == 2500
        assert options.retry_options.attempts == 3
        assert options.retry_options.initial_delay == 0.5 and options.retry_options.max_delay == 4
        assert options.headers["x-goog-api-key"] == "k-123456"
        assert options.base_url.startswith("https://generativelanguage.googleapis.com")
    finally:
        client.close()


def test_base_url_only_when_configured(monkeypatch):
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", "http://127.0.0.1:5")
    client = make_client(api_key="k")
    try:
        assert client._api_client._http_options.base_url.startswith("http://127.0.0.1:5")
    finally:
        client.close()
    client = make_client(api_key="k", base_url="http://127.0.0.1:6")
    try:
        assert client._api_client._http_options.base_url.startswith("http://127.0.0.1:6")
    finally:
        client.close()


def test_bad_client_options():
    with pytest.raises(GeminiError, match="retries"):
        make_client(api_key="k", retries=0)
    with pytest.raises(GeminiError, match="timeout"):
        make_client(api_key="k", timeout=-1)


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("AIFLAT_CACHE_DIR", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("AIFLAT_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    if os.name == "posix" and os.uname().sysname == "Linux":
        assert default_cache_dir() == tmp_path / "xdg" / "aiflat_astro"
