"""Images for and from generative image models: rendering, geometry, resampling.

Everything here is deterministic array arithmetic with exactly invertible
steps, so that what goes to a model and what comes back can be mapped onto
the sensor grid pixel for pixel:

- `smooth_background` and `Stretch`: the median divided by its large-scale
  background and mapped to 8 bits with a known affine stretch (undone exactly
  on the answer, up to the 8-bit quantisation).
- `nearest_aspect_ratio` / `pad_to_ratio`: the frame is padded (centred, with a
  neutral value) to a ratio the model supports and cropped back afterwards.
- `tile_layout` / `blend_weights`: overlapping tiles for frames larger than the
  model's output, blended with linear ramps in the overlaps.
- `resample`: area-weighted (shrinking) or linear (enlarging) separable
  resampling between two grids spanning the same field.
"""

import io
import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage, sparse

from ..utils.exceptions import GeminiError, InputError, renamed_keyword

__all__ = []

#: Aspect ratios (width:height) that Gemini image models accept in ``ImageConfig``.
ASPECT_RATIOS = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")

#: Nominal output side (pixels, 1:1) for each ``image_size``.
IMAGE_SIZES = {"1K": 1024, "2K": 2048, "4K": 4096}


def ratio_value(ratio):
    """Return width / height of a ``'W:H'`` ratio string."""
    w, h = ratio.split(":")
    return int(w) / int(h)


def nearest_aspect_ratio(height, width):
    """Return the supported ratio closest to ``width:height`` (in log ratio).

    >>> [nearest_aspect_ratio(*shape) for shape in [(256, 320), (1080, 1920), (100, 100)]]
    ['5:4', '16:9', '1:1']
    """
    target = math.log(width / height)
    return min(ASPECT_RATIOS, key=lambda r: abs(math.log(ratio_value(r)) - target))


def pad_to_ratio(height, width, ratio):
    """Return ``((top, bottom), (left, right))`` padding that gives ``ratio``.

    The frame is padded along one axis only, centred, to the nearest integer
    size; the other axis is unchanged.

    >>> pad_to_ratio(256, 320, "1:1")
    ((32, 32), (0, 0))
    >>> pad_to_ratio(100, 150, "16:9")
    ((0, 0), (14, 14))
    """
    value = ratio_value(ratio)
    if width / height < value:
        total = max(0, round(height * value) - width)
        return (0, 0), (total // 2, total - total // 2)
    total = max(0, round(width / value) - height)
    return (total // 2, total - total // 2), (0, 0)


def smooth_background(image, *, ignore=None, scale=None, mask=None):
    """Return a smooth large-scale background of ``image`` (float32, same shape).

    A block median (pixels in ``ignore`` left out) followed by a median filter of
    width ``scale`` pixels rejects features smaller than about ``scale / 2``
    (dust shadows, spots, stars); a Gaussian smooths the result, which is
    interpolated bilinearly back onto the full grid.

    Parameters
    ----------
    image : 2-D array
    ignore : 2-D bool array, optional
        Pixels to ignore (e.g. known dust); filled from their surroundings.
    scale : int, optional
        Width of the median filter in pixels; default ``max(32, min(shape) // 5)``.
    mask : 2-D bool array, optional
        Deprecated name of ``ignore``.
    """
    image = np.asarray(image, dtype=np.float64)
    ny, nx = image.shape
    if scale is None:
        scale = max(32, min(ny, nx) // 5)
    block = max(1, int(scale) // 8)
    by, bx = -(-ny // block), -(-nx // block)
    padded = np.full((by * block, bx * block), np.nan)
    padded[:ny, :nx] = image
    if mask is not None:
        ignore = renamed_keyword("smooth_background", "mask", "ignore", mask, given=ignore)
    if ignore is not None:
        padded[:ny, :nx][np.asarray(ignore, dtype=bool)] = np.nan
    blocks = padded.reshape(by, block, bx, block).transpose(0, 2, 1, 3).reshape(by, bx, -1)
    with np.errstate(all="ignore"):
        finite = np.isfinite(blocks).any(axis=2)
        small = np.full((by, bx), np.nan)
        if finite.any():
            small[finite] = np.nanmedian(blocks[finite], axis=1)
    if not finite.any():
        return np.ones(image.shape, dtype=np.float32)
    if not finite.all():  # fill fully masked blocks from the nearest valid block
        idx = ndimage.distance_transform_edt(~finite, return_distances=False, return_indices=True)
        small = small[tuple(idx)]
    size = max(3, int(round(scale / block)) | 1)
    # A median filter is biased at the frame edges wherever the background is sloped or curved
    # (vignetting): filter the residual from a robust low-order surface instead, then add it back.
    # The surface is evaluated at every pixel; only the residual is interpolated from the blocks.
    centres_y = (np.arange(by) + 0.5) * block - 0.5
    centres_x = (np.arange(bx) + 0.5) * block - 0.5
    surface = _robust_surface(small, centres_y, centres_x)
    residual = small - surface(centres_y, centres_x)
    residual = ndimage.median_filter(residual, size=size, mode="nearest")
    residual = ndimage.gaussian_filter(residual, sigma=size / 4.0, mode="nearest")
    yy = (np.arange(ny) + 0.5) / block - 0.5
    xx = (np.arange(nx) + 0.5) / block - 0.5
    coords = np.meshgrid(yy, xx, indexing="ij")
    full = ndimage.map_coordinates(residual, coords, order=1, mode="nearest")
    full += surface(np.arange(ny, dtype=float), np.arange(nx, dtype=float))
    return full.astype(np.float32)


def _robust_surface(small, centres_y, centres_x, *, degree=3, n_iter=4, nsigma=3.0):
    """Robust 2-D polynomial of ``degree`` fitted to block values at the given centres.

    Returns a function ``f(y, x)`` evaluating it on the grid of the 1-D pixel
    coordinates ``y`` and ``x``.
    """
    ny, nx = small.shape
    if ny < degree + 2 or nx < degree + 2:
        level = float(np.median(small))
        return lambda y, x: np.full((len(y), len(x)), level)
    y0, y1 = centres_y[0], centres_y[-1]
    x0, x1 = centres_x[0], centres_x[-1]

    def terms(y, x):
        u = (2 * (np.asarray(y) - y0) / (y1 - y0) - 1)[:, None]
        v = (2 * (np.asarray(x) - x0) / (x1 - x0) - 1)[None, :]
        return [u ** i * v ** j for i in range(degree + 1) for j in range(degree + 1 - i)]

    a = np.stack([np.broadcast_to(t, small.shape).ravel() for t in terms(centres_y, centres_x)],
                 axis=1)
    b = small.ravel()
    good = np.ones(b.size, bool)
    coef = np.zeros(a.shape[1])
    for _ in range(n_iter):
        ag = a[good]
        coef = np.linalg.solve(ag.T @ ag + 1e-12 * np.eye(a.shape[1]), ag.T @ b[good])
        resid = b - a @ coef
        sigma = 1.4826 * np.median(np.abs(resid[good] - np.median(resid[good])))
        new = np.abs(resid) <= nsigma * max(sigma, 1e-12 * max(1.0, np.abs(b).max()))
        if new.sum() < a.shape[1] * 2 or np.array_equal(new, good):
            break
        good = new

    def evaluate(y, x):
        return sum(c * t for c, t in zip(coef, terms(y, x))) + np.zeros((len(y), len(x)))

    return evaluate


def normalise(image, background):
    """Return ``image / background`` (float64), guarding near-zero background."""
    image = np.asarray(image, dtype=np.float64)
    background = np.asarray(background, dtype=np.float64)
    floor = 1e-3 * max(float(np.nanpercentile(np.abs(background), 99)), np.finfo(np.float32).tiny)
    return image / np.where(np.abs(background) < floor, floor, background)


@dataclass(frozen=True)
class Stretch:
    """Affine map of a background-normalised ratio ``r`` to 8 bits and back.

    ``r = lo`` maps to 0, ``r = hi`` to 255; the inverse of a decoded value
    ``v`` in 0..1 is ``lo + v * (hi - lo)``: one 8-bit step is
    ``(hi - lo) / 255`` in ``r``.

    >>> s = Stretch.around_one(0.1)
    >>> s.forward([0.9, 0.95, 1.1])
    array([  0,  64, 255], dtype=uint8)
    >>> float(s.inverse(64 / 255))
    0.9501960784313725
    """

    lo: float
    hi: float

    @classmethod
    def around_one(cls, half_width):
        return cls(1.0 - half_width, 1.0 + half_width)

    @property
    def step(self):
        return (self.hi - self.lo) / 255.0

    def forward(self, ratio):
        scaled = (np.asarray(ratio, dtype=np.float64) - self.lo) / (self.hi - self.lo) * 255.0
        return np.clip(np.rint(np.nan_to_num(scaled, nan=127.5)), 0, 255).astype(np.uint8)

    def inverse(self, value):
        return self.lo + np.asarray(value, dtype=np.float64) * (self.hi - self.lo)

    def as_dict(self):
        return {"lo": self.lo, "hi": self.hi}


def encode_png(array):
    """Encode a 2-D uint8 array as a greyscale PNG (deterministic bytes)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8)).save(
        buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def decode_image(data):
    """Decode image bytes from a model into a float64 greyscale array in 0..1.

    Colour images are converted to luma; 16-bit images keep their precision.
    Raises `GeminiError` if the bytes are not a readable image.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(img, dtype=np.float64)
                top = 65535.0 if arr.max(initial=0) > 255 or img.mode.startswith("I;16") else 255.0
                return np.clip(arr / top, 0.0, 1.0)
            if img.mode == "F":
                return np.clip(np.asarray(img, dtype=np.float64) / 255.0, 0.0, 1.0)
            if img.mode in ("RGBA", "LA", "P", "PA"):
                img = img.convert("RGBA").convert("RGB")
            return np.asarray(img.convert("L"), dtype=np.float64) / 255.0
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise GeminiError("the model returned image data that cannot be decoded "
                          f"({exc.__class__.__name__})") from None


def _resample_matrix(n_out, n_in):
    """Sparse (n_out, n_in) matrix mapping a 1-D grid onto another spanning the same field."""
    if n_out == n_in:
        return sparse.identity(n_in, format="csr")
    if n_in > n_out:  # shrink: exact area overlap of pixel footprints
        edges_in = np.arange(n_in + 1) / n_in
        rows, cols, vals = [], [], []
        for j in range(n_out):
            a, b = j / n_out, (j + 1) / n_out
            i0 = int(math.floor(a * n_in))
            i1 = min(n_in, int(math.ceil(b * n_in)))
            for i in range(i0, i1):
                w = min(b, edges_in[i + 1]) - max(a, edges_in[i])
                if w > 0:
                    rows.append(j)
                    cols.append(i)
                    vals.append(w * n_out)
        return sparse.csr_matrix((vals, (rows, cols)), shape=(n_out, n_in))
    # enlarge: linear interpolation at output pixel centres
    x = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    i0 = np.floor(x).astype(int)
    i1 = np.minimum(i0 + 1, n_in - 1)
    f = x - i0
    rows = np.concatenate([np.arange(n_out), np.arange(n_out)])
    return sparse.csr_matrix((np.concatenate([1 - f, f]), (rows, np.concatenate([i0, i1]))),
                             shape=(n_out, n_in))


def resample(array, shape):
    """Resample a 2-D array onto a grid of ``shape`` covering the same field.

    Shrinking averages exactly over each output pixel's footprint (flux
    conserving, no aliasing); enlarging interpolates linearly.  Separable.

    >>> a = np.arange(16.0).reshape(4, 4)
    >>> resample(a, (2, 2))
    array([[ 2.5,  4.5],
           [10.5, 12.5]])
    """
    array = np.asarray(array, dtype=np.float64)
    my = _resample_matrix(shape[0], array.shape[0])
    mx = _resample_matrix(shape[1], array.shape[1])
    return np.asarray((my @ (mx @ array.T).T))


def tile_layout(shape, tile, overlap):
    """Return tiles ``(y0, x0, height, width)`` covering ``shape`` with overlap.

    Tiles are at most ``tile`` pixels on a side, overlap by at least
    ``overlap`` pixels, and are all the same size (the last one along an axis
    is aligned with the edge).

    >>> tile_layout((100, 250), 100, 20)
    [(0, 0, 100, 100), (0, 75, 100, 100), (0, 150, 100, 100)]
    """
    def starts(length):
        size = min(tile, length)
        if size >= length:
            return [0], size
        n = math.ceil((length - overlap) / (size - overlap))
        return sorted({int(round(s)) for s in np.linspace(0, length - size, n)}), size

    ys, th = starts(shape[0])
    xs, tw = starts(shape[1])
    return [(y, x, th, tw) for y in ys for x in xs]


def blend_weights(tile, shape, overlap):
    """Weights of one tile: 1 inside, linear ramps over ``overlap`` at inner edges."""
    y0, x0, th, tw = tile

    def ramp(n, start, length):
        w = np.ones(n)
        r = max(1, int(overlap))
        edge = (np.arange(n) + 0.5) / r
        if start > 0:
            w = np.minimum(w, edge)
        if start + n < length:
            w = np.minimum(w, edge[::-1])
        return np.clip(w, 1e-3, 1.0)

    return np.outer(ramp(th, y0, shape[0]), ramp(tw, x0, shape[1]))


@dataclass(frozen=True)
class Request:
    """Geometry of one model call: a tile of the sensor grid, padded to a supported ratio."""

    tile: tuple  # (y0, x0, height, width) on the sensor grid
    aspect_ratio: str
    pad: tuple  # ((top, bottom), (left, right))

    @property
    def slices(self):
        y0, x0, h, w = self.tile
        return slice(y0, y0 + h), slice(x0, x0 + w)

    @property
    def padded_shape(self):
        (top, bottom), (left, right) = self.pad
        return self.tile[2] + top + bottom, self.tile[3] + left + right

    def as_dict(self):
        return {"tile": list(self.tile), "aspect_ratio": self.aspect_ratio,
                "pad": [list(p) for p in self.pad]}


def tile_overlap(image_size, tile_size=None, overlap=None):
    """The tile overlap in pixels: ``overlap`` if given, else 1/8 of the tile side (at least 16)."""
    if overlap is not None:
        return int(overlap)
    return max(16, int(tile_size or IMAGE_SIZES[image_size]) // 8)


def plan_requests(shape, *, image_size="2K", tile_size=None, overlap=None):
    """Return the `Request` list covering a frame of ``shape``.

    Frames whose longer side exceeds the model's nominal output side (or
    ``tile_size``) are cut into overlapping tiles so that no detail is lost
    to the model's own downsampling; each tile is padded to its nearest
    supported aspect ratio.

    >>> [r.as_dict() for r in plan_requests((256, 320), image_size="1K")]
    [{'tile': [0, 0, 256, 320], 'aspect_ratio': '5:4', 'pad': [[0, 0], [0, 0]]}]
    >>> len(plan_requests((1500, 2500), image_size="1K"))
    6
    """
    if image_size not in IMAGE_SIZES:
        raise InputError(f"image_size must be one of {', '.join(IMAGE_SIZES)}, got {image_size!r}")
    side = int(tile_size or IMAGE_SIZES[image_size])
    overlap = tile_overlap(image_size, tile_size, overlap)
    if overlap >= side // 2:
        raise InputError(f"tile overlap ({overlap}) must be less than half the tile size ({side})")
    requests = []
    for tile in tile_layout(shape, side, overlap):
        ratio = nearest_aspect_ratio(tile[2], tile[3])
        pad = pad_to_ratio(tile[2], tile[3], ratio)
        requests.append(Request(tile=tile, aspect_ratio=ratio, pad=pad))
    return requests


def place(full, request, fill):
    """Cut ``request``'s tile out of a sensor-grid array and pad it with ``fill``."""
    tile = np.asarray(full)[request.slices]
    return np.pad(tile, request.pad, mode="constant", constant_values=fill)


def check_answer_shape(answer_shape, request, *, tolerance=0.03, min_side=32):
    """Raise `GeminiError` if an answer's shape does not fit ``request``'s aspect ratio."""
    h, w = answer_shape
    if min(h, w) < min_side:
        raise GeminiError(f"the model returned a {w}x{h} image, too small to use")
    want = ratio_value(request.aspect_ratio)
    if abs(math.log((w / h) / want)) > tolerance:
        raise GeminiError(f"the model returned a {w}x{h} image (aspect ratio {w / h:.3f}) but "
                          f"{request.aspect_ratio} ({want:.3f}) was requested; refusing to "
                          "stretch it")


def unplace(answer, request):
    """Resample an answer onto the padded tile grid and crop the padding off."""
    check_answer_shape(answer.shape, request)
    grid = resample(answer, request.padded_shape)
    (top, _), (left, _) = request.pad
    return grid[top:top + request.tile[2], left:left + request.tile[3]]
