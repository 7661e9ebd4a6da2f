"""The one place that talks to the Gemini API (through google-genai).

- `make_client`: a `google.genai.Client` with the key resolved by aiflat,
  ``api_version='v1beta'`` pinned, retries with exponential backoff on
  408/429/5xx and transport errors (`~google.genai.types.HttpRetryOptions`)
  and a timeout.  ``base_url`` is passed only when the caller configured one,
  so the SDK's own ``GOOGLE_GEMINI_BASE_URL`` keeps working.
- `generate_image`: one image-generation call (PNG images + a prompt in, one
  image out) with a content-addressed `ResponseCache` in front of it, and
  every failure turned into a one-line `GeminiError` that never contains
  the API key.
"""

import base64
import contextlib
import json
import logging
import os
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..provenance import sha256_array, sha256_bytes
from ..utils.exceptions import GeminiError
from .keys import resolve_api_key, scrub

__all__ = []

log = logging.getLogger(__name__)

#: API version pinned for every request (google-genai 3.x defaults to ``v1``).
API_VERSION = "v1beta"

#: Version of the cache entry layout and key recipe.
CACHE_FORMAT = 1

_OK_FINISH = {None, "STOP", "FINISH_REASON_UNSPECIFIED"}


def default_cache_dir():
    """Return the response cache folder: ``$AIFLAT_CACHE_DIR`` or the user cache folder.

    The user cache folder is ``$XDG_CACHE_HOME/aiflat_astro`` (default
    ``~/.cache/aiflat_astro``) on Linux, ``~/Library/Caches/aiflat_astro`` on
    macOS and ``%LOCALAPPDATA%\\aiflat_astro\\Cache`` on Windows.
    """
    env = os.environ.get("AIFLAT_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "aiflat_astro"
    if sys.platform.startswith("win"):
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / "aiflat_astro" / "Cache"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "aiflat_astro"


def make_client(*, api_key=None, env_file=None, base_url=None, timeout=300.0, retries=4,
                initial_delay=2.0, max_delay=30.0):
    """Return a configured `google.genai.Client` (the caller closes it).

    Parameters
    ----------
    api_key : str, optional
        Explicit key; otherwise ``GEMINI_API_KEY``, ``GOOGLE_API_KEY``, then a
        ``.env`` file (see ``env_file``).
    env_file : path-like, optional
        ``.env`` file to read; default ``./.env`` when it exists.
    base_url : str, optional
        API endpoint.  When None, the SDK decides (its default endpoint, or
        ``GOOGLE_GEMINI_BASE_URL`` when set).
    timeout : float, optional
        Seconds allowed for one request (the SDK takes milliseconds).
    retries : int, optional
        Attempts in total, the first included (1 = no retry).  Retried: HTTP
        408, 429, 500, 502, 503, 504, time-outs and connection errors.
    initial_delay, max_delay : float, optional
        Exponential backoff in seconds (doubling, random jitter of up to
        half the initial delay).
    """
    from google import genai
    from google.genai import types

    key, source = resolve_api_key(api_key, env_file=env_file)
    log.debug("Gemini API key taken from %s", source)
    if retries < 1:
        raise GeminiError(f"retries must be at least 1 (attempts in total), got {retries}")
    if timeout is not None and timeout <= 0:
        raise GeminiError(f"timeout must be positive (seconds), got {timeout}")
    retry = types.HttpRetryOptions(attempts=int(retries), initial_delay=float(initial_delay),
                                   max_delay=float(max_delay), exp_base=2.0,
                                   jitter=float(initial_delay) / 2.0)
    options = {"api_version": API_VERSION, "retry_options": retry}
    if timeout is not None:
        options["timeout"] = int(round(timeout * 1000))  # milliseconds
    if base_url:
        options["base_url"] = str(base_url)
    try:
        return genai.Client(api_key=key, http_options=types.HttpOptions(**options))
    except Exception as exc:  # the SDK validates options; never echo the key
        raise GeminiError(f"cannot create the Gemini client: {scrub(exc, key)}") from None


@dataclass
class ModelAnswer:
    """An image returned by the model, with what is recorded in provenance."""

    image: bytes
    mime_type: str = "image/png"
    text: str = ""
    response_id: str = ""
    model_version: str = ""
    finish_reason: str = ""
    usage: dict = field(default_factory=dict)
    cache_key: str = ""
    cached: bool = False

    @property
    def response_sha256(self):
        """SHA-256 of the raw image bytes returned (``RESPSHA``)."""
        return sha256_bytes(self.image)

    def record(self):
        """JSON-serialisable summary (no image bytes) for ``PROVJSON``."""
        out = {k: v for k, v in asdict(self).items() if k != "image"}
        out["response_sha256"] = self.response_sha256
        return out


class ResponseCache:
    """Content-addressed store of model answers: ``<dir>/gemini/<kk>/<key>.json``.

    The key is the SHA-256 of everything that determines the answer: model,
    prompt hash, the exact pixels sent, and the generation settings.  Entries
    hold the raw image bytes (base64) and the response metadata; they never
    hold the API key or any request header.  Writes are atomic.
    """

    def __init__(self, directory=None):
        self.directory = Path(directory).expanduser() if directory else default_cache_dir()

    @staticmethod
    def make_key(*, model, prompt_sha256, images, config):
        recipe = {
            "format": CACHE_FORMAT,
            "api_version": API_VERSION,
            "model": model,
            "prompt_sha256": prompt_sha256,
            "images": [sha256_array(np.asarray(im, dtype=np.uint8)) for im in images],
            "config": config,
        }
        return sha256_bytes(json.dumps(recipe, sort_keys=True, separators=(",", ":")))

    def _path(self, key):
        return self.directory / "gemini" / key[:2] / f"{key}.json"

    def get(self, key):
        path = self._path(key)
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
            image = base64.b64decode(entry.pop("image"), validate=True)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring unreadable cache entry %s (%s)", path, exc.__class__.__name__)
            return None
        if sha256_bytes(image) != entry.pop("response_sha256", None):
            log.warning("ignoring corrupted cache entry %s", path)
            return None
        known = {k: entry[k] for k in ModelAnswer.__dataclass_fields__
                 if k in entry and k != "image"}
        known.update(cache_key=key, cached=True)
        return ModelAnswer(image=image, **known)

    def put(self, key, answer):
        path = self._path(key)
        entry = answer.record()
        entry.pop("cached", None)
        entry["image"] = base64.b64encode(answer.image).decode("ascii")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{key[:8]}.", suffix=".part", dir=path.parent)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(entry, f, sort_keys=True)
            os.replace(tmp, path)
        except OSError as exc:
            with contextlib.suppress(Exception):
                os.unlink(tmp)
            log.warning("cannot write the Gemini response cache in %s (%s)", self.directory, exc)


def _enum_name(value):
    if value is None:
        return None
    return getattr(value, "value", None) or str(value)


def _usage(meta):
    if meta is None:
        return {}
    names = ("prompt_token_count", "candidates_token_count", "thoughts_token_count",
             "cached_content_token_count", "total_token_count")
    return {n: getattr(meta, n) for n in names if getattr(meta, n, None) is not None}


def parse_response(response):
    """Return a `ModelAnswer` from a ``GenerateContentResponse``; raise `GeminiError` if unusable.

    The last non-thought inline image is the answer (thinking models may send
    interim images first); text parts are kept for provenance.
    """
    feedback = getattr(response, "prompt_feedback", None)
    candidates = getattr(response, "candidates", None) or []
    if not candidates:
        reason = _enum_name(getattr(feedback, "block_reason", None))
        if reason:
            detail = getattr(feedback, "block_reason_message", None)
            raise GeminiError(f"Gemini blocked the request (block reason {reason}"
                              f"{': ' + detail if detail else ''})")
        raise GeminiError("Gemini returned no answer (no candidates and no block reason)")
    cand = candidates[0]
    parts = (cand.content.parts if cand.content is not None else None) or []
    images = [p for p in parts
              if p.inline_data is not None and p.inline_data.data and not p.thought]
    text = " ".join(p.text.strip() for p in parts if p.text and not p.thought).strip()
    finish = _enum_name(cand.finish_reason)
    if not images:
        if finish not in _OK_FINISH:
            detail = f": {cand.finish_message}" if getattr(cand, "finish_message", None) else ""
            raise GeminiError(f"Gemini returned no image (finish reason {finish}{detail})")
        if text:
            short = " ".join(text.split())[:200]
            raise GeminiError(f"Gemini answered with text only, no image: {short!r}")
        raise GeminiError("Gemini returned an empty answer (no image, no text)")
    part = images[-1]
    if finish not in _OK_FINISH:
        log.warning("Gemini returned an image with finish reason %s", finish)
    return ModelAnswer(
        image=bytes(part.inline_data.data),
        mime_type=part.inline_data.mime_type or "image/png",
        text=text,
        response_id=getattr(response, "response_id", None) or "",
        model_version=getattr(response, "model_version", None) or "",
        finish_reason=finish or "",
        usage=_usage(getattr(response, "usage_metadata", None)),
    )


def _api_error_message(exc):
    code = getattr(exc, "code", None)
    status = getattr(exc, "status", None) or ""
    message = " ".join(str(getattr(exc, "message", None) or "").split())[:300]
    hint = {
        400: "the request was rejected (check the model id, image_size and aspect ratio)",
        401: "the API key was refused",
        403: "the API key is not allowed to use this model",
        404: "unknown model id or endpoint",
        408: "the request timed out on the server side",
        429: "quota or rate limit exhausted; wait and retry, or check your plan",
    }.get(code, "server error; retry later" if code and code >= 500 else "")
    text = f"Gemini API error {code} {status}".rstrip()
    if message:
        text += f": {message}"
    if hint:
        text += f" ({hint})"
    return text


def generate_image(session, *, model, prompt, images, aspect_ratio, image_size, seed=0,
                   temperature=None, secret=None):
    """Send ``images`` (uint8 arrays, as greyscale PNG) and ``prompt``; return a `ModelAnswer`.

    ``session`` is a `Session` (its ``cache`` and lazily created ``client``).
    A previous answer to exactly the same request is returned from the cache
    without any network traffic.  ``secret`` (the API key) is scrubbed from
    every error message.
    """
    from google.genai import errors, types

    from .render import encode_png
    from .prompts import prompt_sha256

    config_record = {"aspect_ratio": aspect_ratio, "image_size": image_size, "seed": seed,
                     "temperature": temperature, "response_modalities": ["TEXT", "IMAGE"]}
    key = ResponseCache.make_key(model=model, prompt_sha256=prompt_sha256(prompt), images=images,
                                 config=config_record)
    cache = session.cache
    if cache is not None:
        hit = cache.get(key)
        if hit is not None:
            log.info("Gemini answer taken from the cache (%s)", key[:12])
            return hit
    client = session.client
    secret = secret or session._secret
    contents = [types.Part.from_bytes(data=encode_png(im), mime_type="image/png") for im in images]
    contents.append(prompt)
    config = types.GenerateContentConfig(
        response_modalities=["TEXT", "IMAGE"],
        image_config=types.ImageConfig(aspect_ratio=aspect_ratio, image_size=image_size),
        seed=seed,
        temperature=temperature,
    )
    log.info("calling Gemini model %s (%s, aspect ratio %s)", model, image_size, aspect_ratio)
    try:
        session.n_calls += 1
        response = client.models.generate_content(model=model, contents=contents, config=config)
    except errors.APIError as exc:
        raise GeminiError(scrub(_api_error_message(exc), secret)) from None
    except Exception as exc:  # transport errors (httpx), after the SDK's own retries
        kind = exc.__class__.__name__
        if "Timeout" in kind:
            raise GeminiError(f"the Gemini request timed out ({kind}); increase the timeout or "
                              "use a smaller image_size") from None
        if kind in ("ConnectError", "ConnectTimeout", "RemoteProtocolError", "ReadError",
                    "WriteError", "NetworkError", "ProxyError", "UnsupportedProtocol"):
            raise GeminiError(f"cannot reach the Gemini API ({kind}: {scrub(exc, secret)})"
                              ) from None
        raise
    try:
        answer = parse_response(response)
    except GeminiError as exc:
        raise GeminiError(scrub(exc, secret)) from None
    answer.cache_key = key
    if cache is not None:
        cache.put(key, answer)
    return answer


class Session:
    """A lazily opened client plus the response cache, used for one detection or inpainting.

    The client (and the API key) is needed only when an answer is not in the
    cache, so a fully cached rerun works offline and without a key.  A client
    passed in is used as is and left open; one created here is closed by
    `close` (or on leaving the ``with`` block).
    """

    def __init__(self, *, client=None, cache=True, cache_dir=None, **client_options):
        self._client = client
        self._own = client is None
        self._options = client_options
        self._secret = None
        self.cache = ResponseCache(cache_dir) if cache else None
        self.n_calls = 0

    @property
    def client(self):
        if self._client is None:
            key, _ = resolve_api_key(self._options.pop("api_key", None),
                                     env_file=self._options.pop("env_file", None))
            self._secret = key
            self._client = make_client(api_key=key, **self._options)
        return self._client

    def generate(self, **kwargs):
        """`generate_image` through this session's cache and (lazy) client."""
        return generate_image(self, secret=self._secret, **kwargs)

    def close(self):
        if self._own and self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
