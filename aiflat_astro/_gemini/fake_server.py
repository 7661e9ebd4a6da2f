"""A local stand-in for the Gemini ``generateContent`` endpoint (offline tests and docs).

`FakeGeminiServer` listens on ``127.0.0.1`` (a free port), speaks the REST
wire format that the real google-genai SDK sends and parses, records every
request, and answers with a *responder*: a callable turning the decoded
request into a reply.  Scripted replies (HTTP errors, blocks, text-only
answers, delays) can be queued ahead of the responder to exercise faults.
No SDK code is mocked: point a real client at `FakeGeminiServer.url` with
``base_url=`` or the SDK's ``GOOGLE_GEMINI_BASE_URL`` variable.

Like a real image model, the server chooses the output size from the
requested ``image_size`` and aspect ratio, not from the input size, and
answers with 8-bit PNG.

Examples
--------
>>> import numpy as np
>>> from aiflat_astro._gemini.fake_server import FakeGeminiServer, echo
>>> with FakeGeminiServer(echo) as server:
...     server.url.startswith("http://127.0.0.1:")
True
"""

import base64
import json
import math
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

from .render import IMAGE_SIZES, decode_image, encode_png, ratio_value, resample

__all__ = []

_ROUTE = re.compile(r"^/(v1|v1beta|v1alpha)/models/([^:/]+):generateContent$")


def output_shape(aspect_ratio, image_size):
    """(height, width) a model would answer with: about ``side**2`` pixels at ``aspect_ratio``."""
    side = IMAGE_SIZES.get(image_size or "1K", 1024)
    r = ratio_value(aspect_ratio or "1:1")
    return int(round(side / math.sqrt(r) / 16) * 16), int(round(side * math.sqrt(r) / 16) * 16)


@dataclass
class FakeRequest:
    """One request as received: path parts, headers, decoded images, prompt and config."""

    model: str
    api_version: str
    headers: dict
    body: dict
    images: list  # float arrays 0..1, as decoded
    image_bytes: list
    text: str
    aspect_ratio: str = None
    image_size: str = None

    @property
    def images_u8(self):
        return [np.rint(im * 255).astype(np.uint8) for im in self.images]

    @property
    def output_shape(self):
        return output_shape(self.aspect_ratio, self.image_size)


@dataclass
class Reply:
    """An HTTP reply: status, JSON body, optional delay in seconds before answering."""

    status: int = 200
    body: dict = field(default_factory=dict)
    delay: float = 0.0


def image_reply(image, *, text="Here is the image.", response_id="fake-response", finish="STOP",
                thought_images=(), model_version="fake-model"):
    """A successful answer holding ``image`` (uint8 array, float array 0..1, or PNG bytes)."""
    def as_png(im):
        if isinstance(im, (bytes, bytearray)):
            return bytes(im)
        im = np.asarray(im)
        if im.dtype != np.uint8:
            im = np.clip(np.rint(im * 255), 0, 255).astype(np.uint8)
        return encode_png(im)

    def inline(im):
        return {"inlineData": {"mimeType": "image/png",
                               "data": base64.b64encode(as_png(im)).decode()}}

    parts = [{**inline(thought), "thought": True} for thought in thought_images]
    if text:
        parts.append({"text": text})
    parts.append(inline(image))
    return Reply(200, {
        "candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": finish,
                        "index": 0}],
        "usageMetadata": {"promptTokenCount": 300, "candidatesTokenCount": 1290,
                          "totalTokenCount": 1590},
        "modelVersion": model_version,
        "responseId": response_id,
    })


def text_reply(text="I cannot see any dust in this image.", finish="STOP"):
    """An answer with text only (no image)."""
    return Reply(200, {"candidates": [{"content": {"role": "model", "parts": [{"text": text}]},
                                       "finishReason": finish, "index": 0}],
                       "responseId": "fake-text"})


def finish_reply(reason="IMAGE_SAFETY", message=None):
    """An answer without content, ended by ``reason``."""
    cand = {"finishReason": reason, "index": 0}
    if message:
        cand["finishMessage"] = message
    return Reply(200, {"candidates": [cand], "responseId": "fake-finish"})


def blocked_reply(reason="SAFETY"):
    """A prompt blocked before generation (no candidates, ``promptFeedback.blockReason``)."""
    return Reply(200, {"promptFeedback": {"blockReason": reason}, "responseId": "fake-blocked"})


_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
           404: "NOT_FOUND", 408: "DEADLINE_EXCEEDED", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL",
           502: "UNAVAILABLE", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}


def error_reply(code, message=None):
    """An API error in Google's JSON error format."""
    status = _STATUS.get(code, "UNKNOWN")
    message = message or f"fake {status.lower()} error"
    return Reply(code, {"error": {"code": code, "message": message, "status": status}})


def _to_output(array01, request):
    return np.clip(resample(array01, request.output_shape), 0.0, 1.0)


def echo(request):
    """Responder: return the first image, resampled to the model's output size."""
    return image_reply(_to_output(request.images[0], request))


def dark_pixel_mask(level=0.4):
    """Responder: a mask marking the first image's pixels darker than ``level`` (0..1) as white.

    For a frame rendered by aiflat (background-normalised and stretched),
    this is an oracle that knows nothing of aiflat's geometry: it only sees
    the pixels it was sent.
    """
    def responder(request):
        dark = (request.images[0] < level).astype(float)
        return image_reply((_to_output(dark, request) >= 0.5).astype(float), text="A dust mask.")
    return responder


class FakeGeminiServer:
    """A threaded HTTP server on 127.0.0.1 speaking the ``generateContent`` wire format.

    Parameters
    ----------
    responder : callable, optional
        ``responder(FakeRequest) -> Reply | dict | ndarray``; default `echo`.

    Attributes
    ----------
    url : str
        Base URL to give the SDK (``http://127.0.0.1:PORT``).
    requests : list of FakeRequest
        Every request received, in order.
    """

    def __init__(self, responder=None):
        self.responder = responder or echo
        self.requests = []
        self._script = []
        self._lock = threading.Lock()
        self._server = None
        self._thread = None

    def queue(self, *replies):
        """Answer the next requests with ``replies`` (in order) before using the responder."""
        with self._lock:
            self._script.extend(replies)

    @property
    def url(self):
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                path = self.path.split("?", 1)[0]
                match = _ROUTE.match(path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                if not match:
                    return self._send(error_reply(404, f"no route {path}"))
                try:
                    body = json.loads(raw or b"{}")
                    request = fake._decode(match, dict(self.headers.items()), body)
                except Exception as exc:  # malformed request: a 400 like the real API
                    return self._send(error_reply(400, f"bad request: {exc}"))
                with fake._lock:
                    fake.requests.append(request)
                    scripted = fake._script.pop(0) if fake._script else None
                reply = scripted if scripted is not None else fake.responder(request)
                if isinstance(reply, dict):
                    reply = Reply(200, reply)
                elif not isinstance(reply, Reply):
                    reply = image_reply(reply)
                self._send(reply)

            def _send(self, reply):
                if reply.delay:
                    time.sleep(reply.delay)
                data = json.dumps(reply.body).encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json; charset=UTF-8")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
                    self.close_connection = True

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-gemini",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self):
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=10)
            self._server = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @staticmethod
    def _decode(match, headers, body):
        images, image_bytes, texts = [], [], []
        for content in body.get("contents", []):
            for part in content.get("parts", []):
                inline = part.get("inlineData") or part.get("inline_data")
                if inline:
                    # the SDK sends URL-safe base64; the real API accepts both alphabets
                    data = base64.b64decode(inline["data"].replace("-", "+").replace("_", "/"))
                    image_bytes.append(data)
                    images.append(decode_image(data))
                elif "text" in part:
                    texts.append(part["text"])
        gen = body.get("generationConfig", {})
        image_config = gen.get("imageConfig", {})
        return FakeRequest(model=match.group(2), api_version=match.group(1),
                           headers={k.lower(): v for k, v in headers.items()}, body=body,
                           images=images, image_bytes=image_bytes, text="\n".join(texts),
                           aspect_ratio=image_config.get("aspectRatio"),
                           image_size=image_config.get("imageSize"))


def lookup_responder(answers, *, text="Here it is."):
    """Responder answering a known first image with a prepared answer.

    ``answers`` maps the bytes of a sent uint8 image (``array.tobytes()``,
    the exact pixels aiflat sends) to the answer in the sent geometry (float
    0..1), which is resampled to the model's output size and 8-bit encoded.
    An unknown image gets an HTTP 400.
    """
    def responder(request):
        key = request.images_u8[0].tobytes()
        if key not in answers:
            return error_reply(400, "unexpected image")
        return image_reply(_to_output(np.asarray(answers[key], dtype=float), request), text=text)
    return responder
