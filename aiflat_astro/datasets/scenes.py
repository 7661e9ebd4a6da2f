"""Static scenes for the simulator: solar disc with dust look-alikes, deep-sky field, vignetting.

Scenes are float32 arrays in relative units (the photosphere at disc centre,
or the deep-sky background, is 1.0).  They contain everything that is *not*
dust but may look like it: pores, sunspots, filaments, the limb, star
residuals, gradients and vignetting.
"""

import numpy as np
from scipy import ndimage, special
from scipy.spatial import cKDTree

from ..utils.exceptions import InputError
from .dust import _check_shape

__all__ = ["make_solar_scene", "make_deepsky_scene", "make_vignetting"]

#: Linear limb-darkening coefficient u in I(μ)/I(1) = 1 − u (1 − μ) (visible continuum).
LIMB_DARKENING = 0.6

_SKY_LEVEL = 0.02          # off-disk scattered light next to the limb (fraction of disc centre)
_LIMB_SIGMA = 0.8          # limb softness (seeing), px
#: Pores per Mpx of the realistic scene (see docs/simulate.rst, 'False look-alikes').
PORES_PER_MPX = 3.0
#: Contrast of the penumbral fibrils of the realistic scene's sunspots (same section).
PENUMBRA_FIBRILS = 0.04
_MOTTLES = 0.04            # rms of the Hα-like mottles (3 px correlation) of the realistic scene


def _smoothstep(x):
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def _bbox(shape, yc, xc, rad):
    y0, y1 = max(0, int(yc - rad)), min(shape[0], int(yc + rad) + 2)
    x0, x1 = max(0, int(xc - rad)), min(shape[1], int(xc + rad) + 2)
    yy, xx = np.mgrid[y0:y1, x0:x1]
    return (slice(y0, y1), slice(x0, x1)), yy.astype(np.float32), xx.astype(np.float32)


def _granulation(shape, rng, granule_size, contrast):
    """Cellular texture: bright granules, dark intergranular lanes (Worley noise), zero mean."""
    h, w = shape
    n_cells = max(4, int(h * w / granule_size**2))
    pts = rng.uniform((0, 0), (h, w), size=(n_cells, 2))
    tree = cKDTree(pts)
    yy, xx = np.mgrid[0:h, 0:w]
    pixels = np.column_stack([yy.ravel(), xx.ravel()]).astype(np.float32)
    dist, idx = tree.query(pixels, k=2, workers=-1)
    lane = (dist[:, 1] - dist[:, 0]).reshape(shape)                 # 0 on cell borders
    strength = rng.uniform(0.7, 1.0, n_cells)[idx[:, 0]].reshape(shape)
    cell = strength * (1 - np.exp(-lane / (0.2 * granule_size)))  # bright centres, dark lanes
    cell = ndimage.gaussian_filter(cell.astype(np.float32), 0.12 * granule_size)
    cell -= cell.mean()
    return (contrast / max(cell.std(), 1e-6)) * cell


def _granulation_grid(shape, rng, granule_size, contrast):
    """`_granulation` on a jittered grid of cells (one granule a cell): same look, much faster."""
    h, w = shape
    g = float(granule_size)
    ny, nx = int(np.ceil(h / g)) + 2, int(np.ceil(w / g)) + 2
    py = (((np.arange(ny)[:, None] - 1) + rng.uniform(0, 1, (ny, nx))) * g).astype(np.float32)
    px = (((np.arange(nx)[None, :] - 1) + rng.uniform(0, 1, (ny, nx))) * g).astype(np.float32)
    strength = rng.uniform(0.7, 1.0, (ny, nx)).astype(np.float32)
    yy = np.arange(h, dtype=np.float32)[:, None]
    xx = np.arange(w, dtype=np.float32)[None, :]
    cy = (np.arange(h) // g).astype(int) + 1
    cx = (np.arange(w) // g).astype(int) + 1
    d1 = np.full(shape, np.inf, np.float32)        # squared distances to the nearest two points
    d2 = np.full(shape, np.inf, np.float32)
    s1 = np.zeros(shape, np.float32)
    d, tmp = np.empty(shape, np.float32), np.empty(shape, np.float32)
    closer = np.empty(shape, bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            iy, ix = cy + dy, cx + dx
            np.subtract(py[iy].take(ix, axis=1), yy, out=d)
            np.square(d, out=d)
            np.subtract(px[iy].take(ix, axis=1), xx, out=tmp)
            np.square(tmp, out=tmp)
            d += tmp
            np.less(d, d1, out=closer)
            np.minimum(d2, d, out=d2)
            np.copyto(d2, d1, where=closer)
            np.copyto(s1, strength[iy].take(ix, axis=1), where=closer)
            np.copyto(d1, d, where=closer)
    np.sqrt(d1, out=d1)
    np.sqrt(d2, out=d2)
    d2 -= d1
    cell = s1 * (1 - np.exp(-d2 / np.float32(0.2 * g)))
    cell = ndimage.gaussian_filter(cell, 0.12 * g)
    cell -= cell.mean()
    return (contrast / max(float(cell.std()), 1e-6)) * cell


def _smooth_noise(rng, shape, sigma):
    """Gaussian-filtered white noise, correlation length ``sigma``, unit rms (coarse grid)."""
    step = max(1, int(sigma / 3))
    coarse = (int(np.ceil(shape[0] / step)) + 2, int(np.ceil(shape[1] / step)) + 2)
    field = ndimage.gaussian_filter(rng.standard_normal(coarse).astype(np.float32), sigma / step)
    if step > 1:
        field = ndimage.zoom(field, step, order=1)
    field = field[:shape[0], :shape[1]]
    return field / max(float(field.std()), 1e-6)


def _add_filament_fast(img, rng, yc, xc, length, width, depth):
    """`_add_filament` with distances from a distance transform (for long filaments)."""
    t = np.linspace(-0.5, 0.5, 400)
    phi = rng.uniform(0, np.pi)
    bend = rng.uniform(-0.15, 0.15) * length * (1 - 4 * t**2)
    bend += 0.03 * length * np.sin(2 * np.pi * (rng.uniform(1.5, 3) * t + rng.uniform()))
    py = yc + t * length * np.sin(phi) + bend * np.cos(phi)
    px = xc + t * length * np.cos(phi) - bend * np.sin(phi)
    box, yy, xx = _bbox(img.shape, yc, xc, 0.75 * length + 4 * width)
    y0, x0 = int(yy[0, 0]), int(xx[0, 0])
    iy, ix = np.rint(py - y0).astype(int), np.rint(px - x0).astype(int)
    ok = (iy >= 0) & (iy < yy.shape[0]) & (ix >= 0) & (ix < yy.shape[1])
    if not ok.any():
        return
    tmap = np.zeros(yy.shape, np.float32)
    line = np.ones(yy.shape, bool)
    line[iy[ok], ix[ok]] = False
    tmap[iy[ok], ix[ok]] = t[ok]
    d, (ny, nx) = ndimage.distance_transform_edt(line, return_indices=True)
    taper = np.clip(1.3 - np.abs(2 * tmap[ny, nx]) ** 2, 0, 1)
    prof = depth * taper * np.exp(-0.5 * (d / width) ** 2)
    img[box] *= (1 - prof).astype(np.float32)


def _large_scale(shape, rng, amplitude, n_waves=8):
    """Smooth large-scale brightness changes: a few random plane waves of 0.3–1.5 frame sizes."""
    h, w = shape
    yy, xx = np.arange(h), np.arange(w)
    out = np.zeros(shape, np.float32)
    for _ in range(n_waves):      # cos(a(x) + b(y)) = cos a cos b − sin a sin b: outer products
        lam, phi = rng.uniform(0.3, 1.5) * max(h, w), rng.uniform(0, np.pi)
        a = 2 * np.pi / lam * np.cos(phi) * xx + rng.uniform(0, 2 * np.pi)
        b = 2 * np.pi / lam * np.sin(phi) * yy
        out += np.outer(np.cos(b), np.cos(a)).astype(np.float32)
        out -= np.outer(np.sin(b), np.sin(a)).astype(np.float32)
    return amplitude * out / max(float(out.std()), 1e-6)


def _disc_geometry(shape, rng, limb):
    h, w = shape
    half_diag = 0.5 * np.hypot(h, w)
    radius = 3.0 * half_diag
    cy, cx = (h - 1) / 2, (w - 1) / 2
    if not limb:
        return cy, cx, 10.0 * radius       # the disc covers everything, no visible curvature
    theta = rng.uniform(0, 2 * np.pi)
    # the limb crosses the ray from the frame centre towards theta at 60-85 % of the way to the edge
    to_edge = min(h / 2 / max(abs(np.sin(theta)), 1e-9), w / 2 / max(abs(np.cos(theta)), 1e-9))
    reach = to_edge * rng.uniform(0.6, 0.85)
    return cy - (radius - reach) * np.sin(theta), cx - (radius - reach) * np.cos(theta), radius


def _on_disc_point(rng, shape, r_disc, inset):
    h, w = shape
    for _ in range(1000):
        y, x = rng.uniform(inset, h - inset), rng.uniform(inset, w - inset)
        if r_disc[min(int(y), h - 1), min(int(x), w - 1)] < -inset:
            return y, x
    return (h - 1) / 2, (w - 1) / 2


def _penumbral_fibrils(rng, r, ang, radial):
    """Relative brightness of the penumbra's fibrils.

    ``radial``: dark and bright streaks along the radius, gently bent, of
    `PENUMBRA_FIBRILS` contrast (what a temporal median keeps); otherwise the
    former scene's 8 % fibrils cut into 4 px cells along the radius.
    """
    n_fibrils = rng.integers(25, 45)
    if radial:
        return 1 + PENUMBRA_FIBRILS * np.cos(n_fibrils * ang + 2 * np.sin(3 * ang) + np.sin(r / 15.0))
    return 1 + 0.08 * np.cos(n_fibrils * ang + 2 * np.sin(3 * ang)) * np.cos(r / 1.3)


def _add_sunspot(img, rng, yc, xc, r_umbra, *, radial=False):
    r_pen = r_umbra * rng.uniform(1.9, 2.6)
    axis = rng.uniform(0.65, 1.0)                   # foreshortening
    phi = rng.uniform(0, np.pi)
    box, yy, xx = _bbox(img.shape, yc, xc, r_pen + 3)
    dy, dx = yy - yc, xx - xc
    u_ = dx * np.cos(phi) + dy * np.sin(phi)
    v_ = (-dx * np.sin(phi) + dy * np.cos(phi)) / axis
    r = np.hypot(u_, v_)
    ang = np.arctan2(v_, u_)
    fil = _penumbral_fibrils(rng, r, ang, radial)
    pen = rng.uniform(0.72, 0.85) * fil
    umb = rng.uniform(0.18, 0.32)
    in_pen = 1 - _smoothstep((r - r_pen + 1.5) / 3.0)
    in_umb = 1 - _smoothstep((r - r_umbra + 1.0) / 2.0)
    factor = 1 + in_pen * (pen - 1) + in_umb * (umb - pen)
    img[box] *= factor.astype(np.float32)


def _add_filament(img, rng, yc, xc, length, width, depth):
    """A dark, curved, elongated feature (Hα-like filament)."""
    t = np.linspace(-0.5, 0.5, 200)
    phi = rng.uniform(0, np.pi)
    bend = rng.uniform(-0.15, 0.15) * length * (1 - 4 * t**2)
    bend += 0.03 * length * np.sin(2 * np.pi * (rng.uniform(1.5, 3) * t + rng.uniform()))  # wiggle
    py = yc + t * length * np.sin(phi) + bend * np.cos(phi)
    px = xc + t * length * np.cos(phi) - bend * np.sin(phi)
    box, yy, xx = _bbox(img.shape, yc, xc, 0.75 * length + 4 * width)
    tree = cKDTree(np.column_stack([py, px]))
    d, nearest = tree.query(np.column_stack([yy.ravel(), xx.ravel()]))
    taper = np.clip(1.3 - np.abs(2 * t[nearest]) ** 2, 0, 1).reshape(yy.shape)   # fading ends
    prof = depth * taper * np.exp(-0.5 * (d.reshape(yy.shape) / width) ** 2)
    img[box] *= (1 - prof).astype(np.float32)


def _add_facula(img, rng, yc, xc, size, amplitude):
    box, yy, xx = _bbox(img.shape, yc, xc, 2.5 * size)
    field = rng.standard_normal(yy.shape).astype(np.float32)
    field = ndimage.gaussian_filter(field, 0.15 * size + 0.5)
    field = np.clip(field / max(field.std(), 1e-6), 0, None)
    env = np.exp(-0.5 * ((yy - yc) ** 2 + (xx - xc) ** 2) / size**2)
    img[box] *= (1 + amplitude * env * field / 2).astype(np.float32)


def _limb_darkened_disc(shape, rng, limb):
    """Disc geometry ``(cy, cx, radius)``, the distance ``r`` from its centre, and its limb darkening."""
    h, w = shape
    cy, cx, radius = _disc_geometry(shape, rng, limb)
    yy, xx = np.ogrid[0:h, 0:w]
    r = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2, dtype=np.float32)
    mu = np.sqrt(np.clip(1 - (r / radius) ** 2, 0, 1))
    return cy, cx, radius, r, 1 - LIMB_DARKENING * (1 - mu)


def _solar_scene(shape, rng, *, limb, features, granule_size, granulation):
    """The solar scene and the geometry of its disc (cy, cx, radius)."""
    h, w = shape
    cy, cx, radius, r, disc = _limb_darkened_disc(shape, rng, limb)
    img = (1 + _granulation(shape, rng, granule_size, granulation)).astype(np.float32) * disc
    r_disc = r - radius                                 # < 0 on the disc
    if features:
        scale = min(shape)
        for _ in range(max(1, round(h * w / 250_000))):                  # sunspots
            r_umbra = scale * rng.uniform(0.012, 0.03) + 1.0
            y, x = _on_disc_point(rng, shape, r_disc, 3 * r_umbra + 2)
            _add_sunspot(img, rng, y, x, r_umbra)
        for _ in range(max(3, round(h * w / 15_000))):                  # pores
            sigma = rng.uniform(0.7, 2.0) * granule_size / 6
            y, x = _on_disc_point(rng, shape, r_disc, 4 * sigma + 2)
            box, by, bx = _bbox(shape, y, x, 4 * sigma)
            g = rng.uniform(0.25, 0.6) * np.exp(-0.5 * ((by - y) ** 2 + (bx - x) ** 2) / sigma**2)
            img[box] *= (1 - g).astype(np.float32)
        for _ in range(max(1, round(h * w / 100_000))):                 # filaments
            length = scale * rng.uniform(0.15, 0.35)
            y, x = _on_disc_point(rng, shape, r_disc, 0.1 * length + 4)
            _add_filament(img, rng, y, x, length, rng.uniform(1.5, 3.0), rng.uniform(0.1, 0.3))
        for _ in range(max(2, round(h * w / 60_000))):                  # faculae
            size = scale * rng.uniform(0.03, 0.07)
            y, x = _on_disc_point(rng, shape, r_disc, 2)
            _add_facula(img, rng, y, x, size, rng.uniform(0.06, 0.14))
    # limb: a seeing-blurred edge onto faint scattered light
    on_disc = 0.5 * (1 + special.erf(-r_disc / (np.sqrt(2) * _LIMB_SIGMA)))
    sky = _SKY_LEVEL * np.exp(-np.clip(r_disc, 0, None) / (0.15 * np.hypot(h, w)))
    img = img * on_disc + sky * (1 - on_disc)
    return img.astype(np.float32), (float(cy), float(cx), float(radius))


def _add_plage(img, rng, yc, xc, size, amplitude):
    """A plage patch: bright curved ridges with dark lanes between them (Hα fibril-like)."""
    box, yy, xx = _bbox(img.shape, yc, xc, 2.5 * size)
    wavelength = rng.uniform(7.0, 14.0)                        # ridge spacing, px
    phi = rng.uniform(0, np.pi)
    warp = 12.0 * _smooth_noise(rng, yy.shape, 0.15 * size)    # ridges bend and break up
    u_ = (xx - xc) * np.cos(phi) + (yy - yc) * np.sin(phi)
    ridges = np.clip(np.cos(2 * np.pi * u_ / wavelength + warp), 0, None) ** 2
    blobs = np.clip(_smooth_noise(rng, yy.shape, 0.12 * size) + 0.3, 0, 1.5) / 1.5
    env = np.exp(-0.5 * ((yy - yc) ** 2 + (xx - xc) ** 2) / size**2)
    img[box] *= (1 + amplitude * env * blobs * (0.4 + ridges) / 1.4).astype(np.float32)


def _add_pore(img, rng, r_disc):
    """A pore: a small round Gaussian darkening on the disc; returns its feature entry."""
    sigma = rng.uniform(0.8, 2.5)
    y, x = _on_disc_point(rng, img.shape, r_disc, 4 * sigma + 2)
    box, by, bx = _bbox(img.shape, y, x, 4 * sigma)
    g = rng.uniform(0.2, 0.5) * np.exp(-0.5 * ((by - y) ** 2 + (bx - x) ** 2) / sigma**2)
    img[box] *= (1 - g).astype(np.float32)
    return {"kind": "pore", "y": y, "x": x, "size": 2.355 * sigma}


def _solar_scene_real(shape, rng, *, limb, granule_size=6.0, granulation=0.03, texture=1.0):
    """The realistic solar scene, its disc geometry and the list of its dust look-alikes.

    Features have sizes in pixels (not fractions of the frame), as on a real
    sensor: granulation (3 % rms) and Hα-like mottles (4 % rms, 3 px), a
    sunspot umbra of 60–220 px (a few times the largest dust) in its
    penumbra with plage around it, pores of 3–10 px (the dust's own size),
    plage ridges 7–14 px apart with dark lanes between them, filaments
    80–400 px long, faculae, smooth large-scale brightness changes (2 %
    rms), and the limb.  Sizes are capped so that
    they fit a small frame.  ``texture`` scales the granulation and the
    mottles (1: a single sharp frame; the temporal median of a video keeps
    less of them, `aiflat_astro.datasets.simulate.MEDIAN_TEXTURE`).
    """
    h, w = shape
    cy, cx, radius, r, disc = _limb_darkened_disc(shape, rng, limb)
    grain = _granulation_grid(shape, rng, granule_size, texture * granulation)
    img = (1 + grain).astype(np.float32) * disc
    img *= 1 + texture * _MOTTLES * _smooth_noise(rng, shape, 3.0)   # chromospheric mottles
    img *= 1 + _large_scale(shape, rng, 0.02)
    r_disc = r - radius
    scale, mpx = min(shape), h * w / 1e6
    feats = []

    def count(per_mpx, minimum):
        return max(minimum, int(rng.poisson(per_mpx * mpx)))

    spots = []
    for _ in range(count(0.4, 1)):                                   # sunspots, with plage around
        r_umbra = min(rng.uniform(30.0, 110.0), 0.1 * scale + 2.0)
        for _ in range(20):                                          # apart from the other spots
            y, x = _on_disc_point(rng, shape, r_disc, 2.6 * r_umbra + 2)
            if all(np.hypot(y - sy, x - sx) > 2.6 * (r_umbra + sr) for sy, sx, sr in spots):
                break
        spots.append((y, x, r_umbra))
        for _ in range(int(rng.integers(1, 4))):
            size = min(rng.uniform(1.5, 3.0) * r_umbra, 0.25 * scale)
            ang, dist = rng.uniform(0, 2 * np.pi), rng.uniform(2.5, 4.0) * r_umbra
            py, px = y + dist * np.sin(ang), x + dist * np.cos(ang)
            _add_plage(img, rng, py, px, size, rng.uniform(0.3, 0.6))
            feats.append({"kind": "plage", "y": py, "x": px, "size": 2 * size})
        _add_sunspot(img, rng, y, x, r_umbra, radial=True)
        feats.append({"kind": "umbra", "y": y, "x": x, "size": 2 * r_umbra})
    for _ in range(count(PORES_PER_MPX, 1)):                         # pores
        feats.append(_add_pore(img, rng, r_disc))
    for _ in range(count(1.5, 1)):                          # plage: bright ridges, dark lanes
        size = min(rng.uniform(40.0, 150.0), 0.2 * scale)
        y, x = _on_disc_point(rng, shape, r_disc, 2)
        _add_plage(img, rng, y, x, size, rng.uniform(0.2, 0.5))
        feats.append({"kind": "plage", "y": y, "x": x, "size": 2 * size})
    for _ in range(count(1.5, 1)):                                   # filaments
        length = min(rng.uniform(80.0, 400.0), 0.5 * scale)
        y, x = _on_disc_point(rng, shape, r_disc, 0.1 * length + 4)
        _add_filament_fast(img, rng, y, x, length, rng.uniform(1.5, 4.0), rng.uniform(0.15, 0.35))
        feats.append({"kind": "filament", "y": y, "x": x, "size": length})
    for _ in range(count(3.0, 1)):                                   # faculae
        size = min(rng.uniform(20.0, 60.0), 0.1 * scale)
        y, x = _on_disc_point(rng, shape, r_disc, 2)
        _add_facula(img, rng, y, x, size, rng.uniform(0.06, 0.14))
        feats.append({"kind": "facula", "y": y, "x": x, "size": 2 * size})
    on_disc = 0.5 * (1 + special.erf(-r_disc / (np.sqrt(2) * _LIMB_SIGMA)))
    sky = _SKY_LEVEL * np.exp(-np.clip(r_disc, 0, None) / (0.15 * np.hypot(h, w)))
    img = img * on_disc + sky * (1 - on_disc)
    if limb:
        feats.append({"kind": "limb", "y": float(cy), "x": float(cx), "size": 2 * float(radius)})
    for f in feats:
        f.update(y=float(f["y"]), x=float(f["x"]), size=float(f["size"]))
    return img.astype(np.float32), (float(cy), float(cx), float(radius)), feats


def make_solar_scene(shape, *, limb=True, features=True, granule_size=6.0, granulation=0.03,
                     style="realistic", seed=None):
    """A solar photosphere scene with features that look like dust.

    The disc is limb-darkened (`LIMB_DARKENING`) and textured with
    granulation.  Dust look-alikes are added at random on the disc: pores
    (small, round, Gaussian profile, no plateau), sunspots (dark umbra inside
    a filamentary penumbra), dark elongated filaments and bright faculae;
    the realistic style adds plage (bright ridges with dark lanes between
    them) and smooth large-scale brightness changes, with feature sizes in
    pixels as on a real sensor (umbra 60–220 px, pores 3–10 px).
    With ``limb=True`` the limb crosses a corner of the frame, with faint
    scattered light on the sky beyond it.

    Parameters
    ----------
    shape : tuple of int
        ``(height, width)``.
    limb : bool, optional
        Show the limb and the sky in part of the frame.
    features : bool, optional
        Add pores, sunspots, filaments and faculae.
    granule_size : float, optional
        Typical granule diameter in pixels.
    granulation : float, optional
        Relative rms contrast of the granulation.
    style : {'realistic', 'soft'}, optional
        ``'realistic'``: the scene of the default ``'solar'`` scenario;
        ``'soft'``: the former scene (feature sizes as fractions of the
        frame, no plage), used by the ``'solar-soft'`` scenario.
    seed : int or `numpy.random.Generator`, optional
        Random seed or generator.

    Returns
    -------
    `numpy.ndarray`
        float32 ``shape``; 1.0 is the (granulation-averaged) disc centre.

    Examples
    --------
    >>> scene = make_solar_scene((64, 96), seed=0)
    >>> scene.shape, scene.dtype.name
    ((64, 96), 'float32')
    >>> bool(0.5 < np.median(scene) < 1.2)
    True
    """
    shape = _check_shape(shape)
    if style not in ("realistic", "soft"):
        raise InputError(f"style must be 'realistic' or 'soft', got {style!r}")
    rng = np.random.default_rng(seed)
    if style == "realistic" and features:
        img, _, _ = _solar_scene_real(shape, rng, limb=limb, granule_size=float(granule_size),
                                      granulation=float(granulation))
    else:
        img, _ = _solar_scene(shape, rng, limb=limb, features=features,
                              granule_size=float(granule_size), granulation=float(granulation))
    return img


def make_deepsky_scene(shape, *, star_density=5e-4, gradient=0.05, seed=None):
    """A deep-sky field: sky background with a faint gradient, plus stars.

    Parameters
    ----------
    shape : tuple of int
        ``(height, width)``.
    star_density : float, optional
        Stars per pixel.
    gradient : float, optional
        Peak-to-peak amplitude of the linear sky gradient across the frame.
    seed : int or `numpy.random.Generator`, optional
        Random seed or generator.

    Returns
    -------
    `numpy.ndarray`
        float32 ``shape``; the sky background is ≈ 1.0.

    Examples
    --------
    >>> sky = make_deepsky_scene((64, 64), seed=0)
    >>> bool(abs(np.median(sky) - 1) < 0.05)
    True
    """
    shape = _check_shape(shape)
    rng = np.random.default_rng(seed)
    h, w = shape
    theta = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    proj = ((yy - h / 2) * np.sin(theta) + (xx - w / 2) * np.cos(theta)) / (0.5 * np.hypot(h, w))
    img = (1.0 + 0.5 * gradient * proj).astype(np.float32)
    n_stars = rng.poisson(star_density * h * w)
    # peak brightness over the sky: a power law, most stars faint, a few saturating
    peaks = 0.03 * (1 - rng.uniform(0, 1, n_stars)) ** (-1 / 0.7)
    peaks = np.minimum(peaks, 50.0)
    sigmas = rng.uniform(0.9, 1.3, n_stars)
    ys, xs = rng.uniform(0, h, n_stars), rng.uniform(0, w, n_stars)
    for y, x, a, s in zip(ys, xs, peaks, sigmas):
        box, by, bx = _bbox(shape, y, x, 5 * s)
        img[box] += (a * np.exp(-0.5 * ((by - y) ** 2 + (bx - x) ** 2) / s**2)).astype(np.float32)
    return img


def make_vignetting(shape, *, amplitude=0.04, seed=None):
    """Smooth radial vignetting: ``1 − amplitude · (r / r_corner)²``, maximum 1.

    The optical centre is offset from the frame centre by up to 10 % of the
    frame size.  Vignetting is not dust: it is kept apart from the
    transmission map in the simulator's ground truth.

    Parameters
    ----------
    shape : tuple of int
        ``(height, width)``.
    amplitude : float, optional
        Fractional light loss at the farthest corner.
    seed : int or `numpy.random.Generator`, optional
        Random seed or generator (for the centre offset).

    Returns
    -------
    `numpy.ndarray`
        float32 ``shape``, 1.0 at the optical centre.

    Examples
    --------
    >>> v = make_vignetting((32, 48), amplitude=0.05, seed=0)
    >>> round(float(v.max()), 3), round(float(v.min()), 2)
    (1.0, 0.95)
    """
    shape = _check_shape(shape)
    rng = np.random.default_rng(seed)
    h, w = shape
    cy = (h - 1) / 2 + rng.uniform(-0.1, 0.1) * h
    cx = (w - 1) / 2 + rng.uniform(-0.1, 0.1) * w
    yy, xx = np.ogrid[0:h, 0:w]
    r2 = (yy - cy) ** 2 + (xx - cx) ** 2
    return (1 - amplitude * r2 / r2.max()).astype(np.float32)
