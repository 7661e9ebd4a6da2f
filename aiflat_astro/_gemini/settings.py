"""`GeminiSettings`: how to reach the model and how to tile a frame, shared by the eye and the hand.

The detector (`~aiflat_astro.detection.GeminiDustDetector`) and the clean
estimate (`~aiflat_astro.flat.estimators.gemini.inpaint_gemini`) take the same thirteen
connection and tiling options; they are checked once here, plan the same
requests, open the same kind of `~aiflat_astro._gemini.client.Session` and
summarise the answers into the same provenance fields.
"""

from dataclasses import dataclass, field, fields

from .._constants import DEFAULT_GEMINI_MODEL
from ..provenance import sha256_bytes
from ..utils.exceptions import InputError
from .client import Session
from .render import IMAGE_SIZES, plan_requests, tile_overlap

__all__ = ["GeminiSettings", "summarise_answers"]


@dataclass(frozen=True)
class GeminiSettings:
    """Connection, cache and tiling options of a Gemini round trip.

    Parameters
    ----------
    model : str, optional
        Model id; default ``'gemini-3-pro-image-preview'``.
    image_size : {'1K', '2K', '4K'}, optional
        Output size asked of the model (default ``'2K'``); larger frames are tiled.
    client : `google.genai.Client`, optional
        A ready client (left open); otherwise one is made on the first
        request that the cache cannot answer.
    api_key, env_file, base_url, timeout, retries, initial_delay, max_delay : optional
        How to make that client (see `~aiflat_astro.detection.GeminiDustDetector`).
    cache : bool, optional
        Use the response cache (default True).
    cache_dir : path-like, optional
        Cache folder (default `~aiflat_astro.detection.gemini_cache_dir`).
    tile_size, tile_overlap : int, optional
        Tile side and overlap in sensor pixels (default: the output side and 1/8 of it).
    max_tiles : int, optional
        Refuse frames needing more requests than this (default 16).
    seed : int, optional
        Generation seed (default 0).
    temperature : float, optional
        Sampling temperature (default: the model's own).

    Examples
    --------
    >>> s = GeminiSettings(image_size="1K")
    >>> len(s.plan((1000, 3000))), s.overlap
    (4, 128)
    >>> GeminiSettings(max_tiles=0)
    Traceback (most recent call last):
    ...
    aiflat_astro.utils.exceptions.InputError: max_tiles must be at least 1, got 0
    """

    model: str = DEFAULT_GEMINI_MODEL
    image_size: str = "2K"
    client: object = field(default=None, repr=False)
    api_key: str = field(default=None, repr=False)
    env_file: object = None
    base_url: str = None
    timeout: float = 300.0
    retries: int = 4
    initial_delay: float = 2.0
    max_delay: float = 30.0
    cache: bool = True
    cache_dir: object = None
    tile_size: int = None
    tile_overlap: int = None
    max_tiles: int = 16
    seed: int = 0
    temperature: float = None

    def __post_init__(self):
        if not isinstance(self.model, str) or not self.model.strip():
            raise InputError("the Gemini model id must be a non-empty string")
        if self.image_size not in IMAGE_SIZES:
            raise InputError(f"image_size must be one of {', '.join(IMAGE_SIZES)}, got {self.image_size!r}")
        if int(self.max_tiles) < 1:
            raise InputError(f"max_tiles must be at least 1, got {self.max_tiles}")

    @classmethod
    def names(cls):
        """The option names (the keywords the detector and `inpaint_gemini` accept for them)."""
        return tuple(f.name for f in fields(cls))

    @property
    def overlap(self):
        """Tile overlap in sensor pixels."""
        return tile_overlap(self.image_size, self.tile_size, self.tile_overlap)

    def plan(self, shape):
        """The requests that cover a frame of ``shape`` (`~aiflat_astro._gemini.render.Request` list)."""
        requests = plan_requests(shape, image_size=self.image_size, tile_size=self.tile_size,
                                 overlap=self.tile_overlap)
        if len(requests) > self.max_tiles:
            raise InputError(f"a {shape[1]}x{shape[0]} frame needs {len(requests)} Gemini requests "
                             f"at image_size={self.image_size!r}, more than max_tiles={self.max_tiles}; use a "
                             "larger image_size or raise max_tiles")
        return requests

    def session(self):
        """A `~aiflat_astro._gemini.client.Session` with these options (use it in a ``with`` block)."""
        return Session(client=self.client, cache=self.cache, cache_dir=self.cache_dir, api_key=self.api_key,
                       env_file=self.env_file, base_url=self.base_url, timeout=self.timeout,
                       retries=self.retries, initial_delay=self.initial_delay, max_delay=self.max_delay)

    def generation(self, prompt):
        """Keywords of `Session.generate` for one prompt (model, size, seed, temperature)."""
        return {"model": self.model, "prompt": prompt, "image_size": self.image_size, "seed": self.seed,
                "temperature": self.temperature}


def summarise_answers(answers):
    """``(response_sha256, params)``: the provenance fields shared by detection and inpainting."""
    shas = [a.response_sha256 for a in answers]
    response_sha = shas[0] if len(shas) == 1 else sha256_bytes(",".join(shas))
    ids = [a.response_id for a in answers if a.response_id]
    tokens = sum(int(a.usage.get("total_token_count", 0)) for a in answers)
    params = {"AITILES": len(answers), "AITOKENS": tokens,
              "AICACHED": bool(answers) and all(a.cached for a in answers)}
    if len(ids) == 1:
        params["AIRESPID"] = ids[0][:60]
    return response_sha, params
