"""Dust shadows from geometric optics: sizes, depths, profiles, transmission maps.

A dust grain of size *a* at a distance Δz in front of the focal plane of a
beam of focal ratio *N* blocks part of the converging cone.  Seen from a
sensor pixel, the cone cuts the plane of the grain in a copy of the pupil of
diameter Δz/N (paraxial), so the shadow is the grain silhouette convolved with
the pupil footprint:

* diameter ``D = Δz / (N p)`` pixels (``p`` the pixel size),
* plateau depth ``(a / D)² / (1 − ε²)`` (saturating at 1), with ε the linear
  central obstruction,
* a disc, or with ε > 0 an annulus ("donut") whose clear hole has diameter
  ``εD − a``; the edges are soft over the grain size *a*.

Diameters and hole diameters in this module are measured at half depth (the
pupil footprint itself: ``D`` and ``εD``); the shadow reaches out to
``(D + a)/2`` and its clear hole to ``(εD − a)/2``.  See
``docs/simulate.rst`` for the derivation and the parameter ranges.
"""

import logging

import numpy as np
from astropy import units as u
from astropy.table import Table
from scipy import ndimage

from ..utils.exceptions import InputError, warn_user

__all__ = [
    "shadow_diameter",
    "shadow_depth",
    "shadow_profile",
    "make_dust_transmission",
    "measure_dust",
    "DUST_REGIMES",
    "LABEL_FRACTION",
]

log = logging.getLogger(__name__)

#: Nominal pixel size (µm) at which the regimes' diameter ranges are quoted.
NOMINAL_PIXEL_SIZE = 3.75

#: Dust populations per regime (scenario).
#:
#: ``'solar'`` (the default) is calibrated on a real dusty solar median
#: (``docs/simulate.rst``): ``diameter`` and ``depth`` are quantile knots
#: (probabilities ``quantiles``) of the pupil-footprint diameter D (px) and of
#: the plateau depth at the nominal optics, ``density`` the specks per Mpx,
#: ``fibre`` and ``clump`` the fractions of fibres and of clumps of touching
#: grains, ``axis_ratio`` the log-normal σ of the grains' axis ratio.
#:
#: ``'solar-soft'`` (the former default) and ``'deepsky'`` draw ``diameter``
#: (px) and ``depth`` log-uniformly in the given ranges; ``fit`` is the
#: largest diameter as a fraction of the smaller frame side, ``min_diameter``
#: a floor kept when the range is scaled down to fit a small frame.
#:
#: Every regime: other optics rescale sizes and depths as the physics says
#: (D ∝ 1/(N p), depth ∝ N²); ``vignetting`` is the sampled amplitude range.
DUST_REGIMES = {
    "solar": {
        "model": "specks", "f_ratio": 40.0, "obstruction": 0.0,
        "quantiles": (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0),
        "diameter": (2.2, 2.8, 5.0, 8.0, 9.8, 13.0, 30.0),
        "depth": (0.04, 0.07, 0.14, 0.19, 0.235, 0.52, 0.92),
        "density": 110.0, "fibre": 0.05, "clump": 0.06, "axis_ratio": 0.65,
        "fit": 0.25, "min_diameter": 2.2, "diffraction": True, "vignetting": (0.02, 0.05),
    },
    "solar-soft": {
        "model": "discs", "f_ratio": 30.0, "obstruction": 0.0, "diameter": (4.0, 60.0),
        "depth": (0.03, 0.40), "fit": 0.25, "min_diameter": 4.0, "diffraction": True,
        "vignetting": (0.02, 0.05),
    },
    "deepsky": {
        "model": "discs", "f_ratio": 5.0, "obstruction": 0.35, "diameter": (60.0, 300.0),
        "depth": (0.005, 0.05), "fit": 0.4, "min_diameter": 12.0, "diffraction": False,
        "vignetting": (0.04, 0.10),
    },
}

#: Number of shadows drawn by the 'solar-soft' and 'deepsky' regimes when ``n_dust`` is None.
DEFAULT_N_DUST = 10

#: A pixel belongs to a shadow's label when the shadow darkens it by more than
#: this fraction of the shadow's own depth.
LABEL_FRACTION = 0.02

#: Amplitude of the bright diffraction rim relative to the shadow depth, for a
#: grain with Fresnel number a²/(λΔz) → 0.
RIM_STRENGTH = 0.15


def shadow_diameter(distance, *, f_ratio, pixel_size):
    """Diameter in pixels of the shadow of dust at ``distance`` from the focal plane.

    ``D = Δz / (N p)`` (paraxial; the exact footprint diameter
    ``2Δz/√(4N² − 1)`` differs by less than 0.5 % for N ≥ 5).

    Parameters
    ----------
    distance : float or array-like
        Distance Δz of the dust in front of the focal plane, in mm.
    f_ratio : float
        Focal ratio N of the beam.
    pixel_size : float
        Pixel size p in µm.

    Returns
    -------
    float or `numpy.ndarray`
        Diameter at half depth, in pixels.

    Examples
    --------
    >>> round(float(shadow_diameter(3.0, f_ratio=10, pixel_size=3.75)), 1)
    80.0
    """
    return np.asarray(distance, dtype=float) * 1e3 / (f_ratio * pixel_size)


def shadow_depth(grain_size, distance, *, f_ratio, obstruction=0.0):
    """Plateau depth of the shadow of a grain: ``min(1, (a N / Δz)² / (1 − ε²))``.

    Parameters
    ----------
    grain_size : float or array-like
        Grain size a in µm.
    distance : float or array-like
        Distance Δz from the focal plane in mm.
    f_ratio : float
        Focal ratio N.
    obstruction : float, optional
        Linear central obstruction ε of the pupil (0 for a refractor).

    Returns
    -------
    float or `numpy.ndarray`
        Fraction of the light blocked on the plateau, 0..1.

    Examples
    --------
    The same grain is 16× darker at f/40 than at f/10:

    >>> round(float(shadow_depth(30, 3.0, f_ratio=10)), 4)
    0.01
    >>> round(float(shadow_depth(30, 3.0, f_ratio=40)), 4)
    0.16
    """
    d_um = np.asarray(distance, dtype=float) * 1e3 / f_ratio
    depth = (np.asarray(grain_size, dtype=float) / d_um) ** 2 / (1.0 - obstruction**2)
    return np.minimum(depth, 1.0)


def _disc_overlap(d, r1, r2):
    """Area of the intersection of two discs of radii r1, r2 at distance d."""
    d = np.abs(np.asarray(d, dtype=float))
    r1, r2 = float(r1), float(r2)
    out = np.zeros_like(d)
    if r1 <= 0 or r2 <= 0:
        return out
    inside = d <= abs(r1 - r2)
    out[inside] = np.pi * min(r1, r2) ** 2
    part = ~inside & (d < r1 + r2)
    if np.any(part):
        dp = d[part]
        c1 = np.clip((dp**2 + r1**2 - r2**2) / (2 * dp * r1), -1, 1)
        c2 = np.clip((dp**2 + r2**2 - r1**2) / (2 * dp * r2), -1, 1)
        k = (-dp + r1 + r2) * (dp + r1 - r2) * (dp - r1 + r2) * (dp + r1 + r2)
        out[part] = r1**2 * np.arccos(c1) + r2**2 * np.arccos(c2) - 0.5 * np.sqrt(np.maximum(k, 0))
    return out


def shadow_profile(r, *, diameter, grain_size, hole_diameter=0.0):
    """Fraction of the light blocked at radius ``r`` from a shadow's centre.

    Exact geometric optics for a round grain: the blocked fraction is the
    overlap of the grain silhouette (diameter ``grain_size``) with the pupil
    footprint (an annulus of outer diameter ``diameter`` and inner diameter
    ``hole_diameter``) centred on the pixel, divided by the footprint's area.
    The transmission is ``1 − shadow_profile(r, ...)``.

    Parameters
    ----------
    r : array-like
        Radii in pixels.
    diameter : float
        Pupil-footprint diameter D in pixels (`shadow_diameter`).
    grain_size : float
        Grain size a in pixels.
    hole_diameter : float, optional
        Footprint of the central obstruction, εD pixels.

    Returns
    -------
    `numpy.ndarray`
        Blocked fraction, 0 beyond ``(diameter + grain_size) / 2``.

    Examples
    --------
    >>> import numpy as np
    >>> p = shadow_profile(np.array([0.0, 5.0, 10.0, 12.5]), diameter=20, grain_size=4)
    >>> np.round(p, 2)  # plateau (a/D)² = 0.04, half depth at D/2, nothing beyond (D + a)/2
    array([0.04, 0.04, 0.02, 0.  ])
    """
    r = np.asarray(r, dtype=float)
    ro, ri, rg = diameter / 2.0, hole_diameter / 2.0, grain_size / 2.0
    area = np.pi * (ro**2 - ri**2)
    if area <= 0 or rg <= 0:
        return np.zeros_like(r)
    blocked = _disc_overlap(r, rg, ro) - _disc_overlap(r, rg, ri)
    return np.clip(blocked / area, 0.0, 1.0)


def _rim_profile(r, center, half_width, amplitude):
    """A compact cos² bump: ``amplitude`` at ``center``, exactly 0 beyond ± half_width."""
    x = (np.asarray(r, dtype=float) - center) / half_width
    return np.where(np.abs(x) < 1, amplitude * np.cos(0.5 * np.pi * x) ** 2, 0.0)


def _loguniform(rng, lo, hi, size=None):
    return np.exp(rng.uniform(np.log(lo), np.log(hi), size))


def _sample_shadows(rng, n_dust, frame_shape, *, regime, optics):
    """Draw (distance, grain size) pairs; return dicts of derived quantities in pixels."""
    cfg = DUST_REGIMES[regime]
    n0, f_ratio, pixel_size = cfg["f_ratio"], optics["f_ratio"], optics["pixel_size"]
    scale_optics = (n0 / f_ratio) * (NOMINAL_PIXEL_SIZE / pixel_size)   # D ∝ 1/(N p)
    d_lo, d_hi = (d * scale_optics for d in cfg["diameter"])
    scale_frame = min(1.0, cfg["fit"] * min(frame_shape) / d_hi)
    lo = max(d_lo * scale_frame, min(d_lo, cfg["min_diameter"]))
    hi = max(d_hi * scale_frame, lo)
    shadows = []
    for _ in range(n_dust):
        diameter = float(_loguniform(rng, lo, hi))
        depth0 = float(_loguniform(rng, *cfg["depth"]))            # plateau depth at f/n0
        depth = min(1.0, depth0 * (f_ratio / n0) ** 2)             # depth ∝ N² for a given grain
        distance = diameter * f_ratio * pixel_size * 1e-3          # mm, inverse of shadow_diameter
        grain = diameter * pixel_size * np.sqrt(depth * (1 - optics["obstruction"] ** 2))   # µm
        shadows.append(_derive(diameter, grain, distance, optics))
    return shadows


def _derive(diameter, grain, distance, optics):
    """Geometry of one shadow in pixels, including the optional diffraction rim."""
    eps, pixel_size = optics["obstruction"], optics["pixel_size"]
    a_px = grain / pixel_size
    hole = eps * diameter
    s = {"diameter": diameter, "grain_px": a_px, "grain_size": grain, "distance": distance,
         "hole": hole, "kind": "annulus" if hole > a_px else "disc",
         "plateau": min(1.0, (a_px / diameter) ** 2 / (1 - eps**2)),
         "rim_amplitude": 0.0, "rim_width": 0.0}
    if optics["diffraction"]:
        lam_dz = optics["wavelength"] * 1e-3 * distance * 1e3      # λΔz in µm²
        fresnel = grain**2 / lam_dz
        if fresnel < 1.0:
            s["rim_amplitude"] = RIM_STRENGTH * s["plateau"] * (1.0 - fresnel)
            s["rim_width"] = float(np.clip(0.5 * np.sqrt(lam_dz) / pixel_size, 0.75, diameter / 6))
    s["radius"] = (diameter + a_px) / 2.0 + 2.0 * s["rim_width"]   # outer edge of all values != 1
    return s


def _render(s, yc, xc, frame_shape, supersample):
    """Blocked fraction (≥ 0) and rim (≥ 0) of one shadow on its bounding box."""
    h, w = frame_shape
    rad = s["radius"] + 1.0
    y0, y1 = max(0, int(np.floor(yc - rad))), min(h, int(np.ceil(yc + rad)) + 1)
    x0, x1 = max(0, int(np.floor(xc - rad))), min(w, int(np.ceil(xc + rad)) + 1)
    k = supersample
    sub = (np.arange(k) + 0.5) / k - 0.5
    yy = (np.arange(y0, y1)[:, None] + sub[None, :]).reshape(-1)
    xx = (np.arange(x0, x1)[:, None] + sub[None, :]).reshape(-1)
    r = np.hypot(yy[:, None] - yc, xx[None, :] - xc)
    blocked = shadow_profile(r, diameter=s["diameter"], grain_size=s["grain_px"],
                             hole_diameter=s["hole"])
    rim = np.zeros_like(r)
    if s["rim_amplitude"] > 0:
        hw = s["rim_width"]
        rim += _rim_profile(r, (s["diameter"] + s["grain_px"]) / 2 + hw, hw, s["rim_amplitude"])
        inner = (s["hole"] - s["grain_px"]) / 2 - hw
        if s["kind"] == "annulus" and inner >= hw:
            rim += _rim_profile(r, inner, hw, s["rim_amplitude"])
    ny, nx = y1 - y0, x1 - x0
    blocked = blocked.reshape(ny, k, nx, k).mean(axis=(1, 3))
    rim = rim.reshape(ny, k, nx, k).mean(axis=(1, 3))
    return (slice(y0, y1), slice(x0, x1)), blocked, rim


def _place(rng, shadows, frame_shape, allowed, margin, optics, max_tries=200):
    """Non-overlapping centres fully inside ``allowed``; shrink or drop what does not fit."""
    padded = np.pad(np.asarray(allowed, dtype=bool), 1, constant_values=False)
    room = ndimage.distance_transform_edt(padded)[1:-1, 1:-1]
    if shadows and shadows[0].get("speck"):
        return _place_specks(rng, shadows, frame_shape, room, margin, optics, max_tries)
    placed = []
    for s in sorted(shadows, key=lambda s: -s["radius"]):
        for _attempt in range(6):
            need = s["radius"] + margin + 1.0
            candidates = np.flatnonzero(room >= need)
            ok = False
            if candidates.size:
                for _ in range(max_tries):
                    idx = candidates[rng.integers(candidates.size)]
                    yc, xc = np.unravel_index(idx, frame_shape)
                    yc, xc = yc + rng.uniform(-0.5, 0.5), xc + rng.uniform(-0.5, 0.5)
                    if all(np.hypot(yc - p["y"], xc - p["x"]) > s["radius"] + p["radius"] + margin
                           for p in placed):
                        ok = True
                        break
            if ok:
                s["y"], s["x"] = float(yc), float(xc)
                placed.append(s)
                break
            s.update(_shrunk_speck(s, optics) if s.get("speck") else _shrunk(s, optics))
        else:
            log.debug("no room for a %.1f px shadow; dropped", s["diameter"])
    return placed


def _place_specks(rng, shadows, frame_shape, room, margin, optics, max_tries):
    """`_place` for many small specks: rejection sampling on a grid of placed centres."""
    base = np.flatnonzero(room >= margin + 2.0)
    cell = 64.0
    grid = {}
    placed = []
    for s in sorted(shadows, key=lambda s: -s["radius"]):
        for _attempt in range(6):
            need, ok = s["radius"] + margin + 1.0, False
            for _ in range(max_tries if base.size else 0):
                idx = base[rng.integers(base.size)]
                if room.flat[idx] < need:
                    continue
                yc, xc = np.unravel_index(idx, frame_shape)
                yc, xc = yc + rng.uniform(-0.5, 0.5), xc + rng.uniform(-0.5, 0.5)
                gy, gx = int(yc // cell), int(xc // cell)
                reach = int(np.ceil((2 * s["radius"] + margin) / cell))
                cells = range(-reach - 1, reach + 2)
                near = [p for dy in cells for dx in cells
                        for p in grid.get((gy + dy, gx + dx), ())]
                if all(np.hypot(yc - p["y"], xc - p["x"]) > s["radius"] + p["radius"] + margin
                       for p in near):
                    ok = True
                    break
            if ok:
                s["y"], s["x"] = float(yc), float(xc)
                placed.append(s)
                grid.setdefault((int(yc // cell), int(xc // cell)), []).append(s)
                break
            s.update(_shrunk_speck(s, optics))
        else:
            log.debug("no room for a %.1f px speck; dropped", s["diameter"])
    return placed


def _shrunk(s, optics, factor=0.8):
    """The same grain moved closer to the focal plane: D and a scale together, depth kept."""
    return _derive(s["diameter"] * factor, s["grain_size"] * factor, s["distance"] * factor, optics)


# --- realistic specks ('solar' regime): any grain silhouette convolved with the pupil footprint ---
def _quantile_draw(rng, probs, knots, size=None):
    """Draw from the distribution of quantiles ``knots`` at ``probs`` (log-linear between)."""
    return np.exp(np.interp(rng.uniform(0.0, 1.0, size), probs, np.log(knots)))


def _sample_specks(rng, n_dust, frame_shape, *, cfg, optics):
    """Draw realistic specks: round-ish grains, fibres and clumps; return dicts in pixels.

    Footprint diameters D0 and depths are drawn at the nominal optics; the
    grains (silhouettes, in µm) follow from them and then stay fixed, while
    D scales as 1/(N p): other optics see the same grains.
    """
    n0, f_ratio, pixel_size = cfg["f_ratio"], optics["f_ratio"], optics["pixel_size"]
    scale = (n0 / f_ratio) * (NOMINAL_PIXEL_SIZE / pixel_size)          # D ∝ 1/(N p)
    to_px = NOMINAL_PIXEL_SIZE / pixel_size                             # nominal px → px
    d_cap = max(cfg["min_diameter"], cfg["fit"] * min(frame_shape))
    specks = []
    for _ in range(n_dust):
        d0 = float(_quantile_draw(rng, cfg["quantiles"], cfg["diameter"]))
        d0 = min(d0, d_cap / scale)
        depth0 = float(min(0.98, _quantile_draw(rng, cfg["quantiles"], cfg["depth"])))
        u_kind = rng.uniform()
        if u_kind < cfg["fibre"]:
            grains, kind = _fibre_grains(rng, d0, depth0), "fibre"
        elif u_kind < cfg["fibre"] + cfg["clump"]:
            grains, kind = _clump_grains(rng, d0, depth0, cfg), "clump"
        else:
            grains = [_ellipse_grain(rng, 0.0, 0.0, d0 * np.sqrt(depth0), cfg["axis_ratio"])]
            kind = "disc"
        grains = _scaled_grains(grains, to_px)
        diameter = d0 * scale
        distance = diameter * f_ratio * pixel_size * 1e-3                # mm (inverse of D)
        s = _derive_speck(kind, diameter, grains, distance, optics)
        while 2 * s["radius"] > max(8.0, cfg["fit"] * min(frame_shape)):   # small frames
            s = _shrunk_speck(s, optics)
        specks.append(s)
    return specks


def _scaled_grains(grains, factor):
    out = []
    for g in grains:
        if g[0] == "ellipse":
            out.append((g[0], g[1] * factor, g[2] * factor, g[3] * factor, g[4] * factor, g[5]))
        else:
            out.append((g[0], g[1] * factor, g[2] * factor, g[3] * factor))
    return out


def _ellipse_grain(rng, y, x, size, sigma_q):
    """A grain of equivalent diameter ``size`` px: (y, x, semi-axis a, semi-axis b, angle)."""
    q = float(np.exp(abs(rng.normal(0.0, sigma_q))))
    return ("ellipse", y, x, 0.5 * size * np.sqrt(q), 0.5 * size / np.sqrt(q),
            float(rng.uniform(0, np.pi)))


def _fibre_grains(rng, diameter, depth):
    """A fibre: a curved thread 0.7–2.5 footprints long; its width sets the plateau ``depth``."""
    length = diameter * rng.uniform(0.7, 2.5)
    width = max(0.4, depth * np.pi * diameter / 4.0)       # blocked ≈ w D / (π D² / 4)
    phi, bend = rng.uniform(0, np.pi), rng.uniform(-0.25, 0.25) * length
    t = np.linspace(-0.5, 0.5, 24)
    off = bend * (1 - 4 * t**2)
    ys = t * length * np.sin(phi) + off * np.cos(phi)
    xs = t * length * np.cos(phi) - off * np.sin(phi)
    return [("thread", ys - ys.mean(), xs - xs.mean(), 0.5 * width)]


def _clump_grains(rng, diameter, depth, cfg):
    """2–5 touching grains at the same distance (one footprint), their shadows merged."""
    n = int(rng.integers(2, 6))
    grains, y, x = [], 0.0, 0.0
    for _ in range(n):
        d_i = float(min(0.95, depth * np.exp(np.clip(rng.normal(0, 0.4), -1.0, 1.0))))
        grains.append(_ellipse_grain(rng, y, x, diameter * np.sqrt(d_i), cfg["axis_ratio"]))
        step, ang = diameter * rng.uniform(0.4, 0.8), rng.uniform(0, 2 * np.pi)
        y, x = y + step * np.sin(ang), x + step * np.cos(ang)
    cy, cx = np.mean([g[1] for g in grains]), np.mean([g[2] for g in grains])
    return [(g[0], g[1] - cy, g[2] - cx) + g[3:] for g in grains]


def _grain_extent(grains):
    """Largest distance of any grain point from the speck centre, px."""
    ext = 0.0
    for g in grains:
        if g[0] == "ellipse":
            ext = max(ext, np.hypot(g[1], g[2]) + g[3])
        else:
            ext = max(ext, float(np.max(np.hypot(g[1], g[2]))) + g[3])
    return ext


def _grain_area(grains):
    area = 0.0
    for g in grains:
        if g[0] == "ellipse":
            area += np.pi * g[3] * g[4]
        else:
            area += 2 * g[3] * float(np.sum(np.hypot(np.diff(g[1]), np.diff(g[2]))))
    return area


def _derive_speck(kind, diameter, grains, distance, optics):
    """Geometry of one speck in pixels, including its Fresnel ring."""
    pixel_size = optics["pixel_size"]
    a_eq = 2.0 * np.sqrt(_grain_area(grains) / np.pi)                   # equivalent grain size, px
    a_min = min(2 * g[4] if g[0] == "ellipse" else 2 * g[3] for g in grains)   # narrowest part, px
    s = {"diameter": diameter, "grains": grains, "distance": distance, "kind": kind,
         "grain_px": a_eq, "grain_size": a_eq * pixel_size, "hole": 0.0,
         "rim_amplitude": 0.0, "rim_width": 0.0, "speck": True}
    s["plateau"] = min(1.0, _grain_area(grains) / (np.pi * diameter**2 / 4))
    if optics["diffraction"]:
        lam_dz = optics["wavelength"] * 1e-3 * distance * 1e3           # λΔz in µm²
        fresnel = (a_min * pixel_size) ** 2 / lam_dz
        if fresnel < 1.0:
            s["rim_amplitude"] = RIM_STRENGTH * min(s["plateau"], 0.5) * (1.0 - fresnel)
            s["rim_width"] = float(np.clip(0.5 * np.sqrt(lam_dz) / pixel_size, 0.75,
                                           max(0.75, diameter / 6)))
    s["radius"] = _grain_extent(grains) + diameter / 2.0 + 2.5 * s["rim_width"] + 1.0
    return s


def _shrunk_speck(s, optics, factor=0.8):
    """The same speck moved closer to the focal plane: every length scales, depth kept."""
    grains = _scaled_grains(s["grains"], factor)
    return _derive_speck(s["kind"], s["diameter"] * factor, grains, s["distance"] * factor, optics)


def _convolve_same(image, kernel):
    """Linear convolution by FFT, cropped to ``image`` (centred odd kernel)."""
    from scipy import fft

    shape = [fft.next_fast_len(a + b - 1, real=True) for a, b in zip(image.shape, kernel.shape)]
    out = fft.irfft2(fft.rfft2(image, shape) * fft.rfft2(kernel, shape), shape)
    oy, ox = kernel.shape[0] // 2, kernel.shape[1] // 2
    return out[oy:oy + image.shape[0], ox:ox + image.shape[1]]


def _render_speck(s, yc, xc, frame_shape, k=4):
    """Blocked fraction and Fresnel ring of one speck on its bounding box (k× supersampled)."""
    h, w = frame_shape
    rad = s["radius"] + 1.0
    y0, y1 = max(0, int(np.floor(yc - rad))), min(h, int(np.ceil(yc + rad)) + 1)
    x0, x1 = max(0, int(np.floor(xc - rad))), min(w, int(np.ceil(xc + rad)) + 1)
    sub = (np.arange(k) + 0.5) / k - 0.5
    yy = (np.arange(y0, y1)[:, None] + sub[None, :]).reshape(-1)[:, None] - yc
    xx = (np.arange(x0, x1)[:, None] + sub[None, :]).reshape(-1)[None, :] - xc
    grain = np.zeros((yy.size, xx.size), dtype=bool)
    for g in s["grains"]:
        if g[0] == "ellipse":
            _, gy, gx, a, b, phi = g
            u_ = (xx - gx) * np.cos(phi) + (yy - gy) * np.sin(phi)
            v_ = -(xx - gx) * np.sin(phi) + (yy - gy) * np.cos(phi)
            grain |= (u_ / a) ** 2 + (v_ / b) ** 2 <= 1.0
        else:
            _, gys, gxs, half = g
            pts = np.column_stack([np.broadcast_to(yy, grain.shape).ravel(),
                                   np.broadcast_to(xx, grain.shape).ravel()])
            from scipy.spatial import cKDTree

            dense = np.linspace(0, 1, 8 * len(gys))
            line = np.column_stack([np.interp(dense, np.linspace(0, 1, len(gys)), gys),
                                    np.interp(dense, np.linspace(0, 1, len(gxs)), gxs)])
            dist, _ = cKDTree(line).query(pts)
            grain |= dist.reshape(grain.shape) <= half
    r_k = 0.5 * s["diameter"] * k
    n = int(np.ceil(r_k))
    ky, kx = np.mgrid[-n:n + 1, -n:n + 1]
    pupil = (np.hypot(ky, kx) <= r_k).astype(float)
    blocked = np.clip(_convolve_same(grain.astype(float), pupil / pupil.sum()), 0, 1)
    ny, nx = y1 - y0, x1 - x0
    rim = np.zeros_like(blocked)
    if s["rim_amplitude"] > 0:
        ring = np.clip(ndimage.gaussian_filter(blocked, s["rim_width"] * k, truncate=2.5)
                       - blocked, 0, None)
        if ring.max() > 0:
            rim = ring * (s["rim_amplitude"] / ring.max())
    blocked = blocked.reshape(ny, k, nx, k).mean(axis=(1, 3))
    rim = rim.reshape(ny, k, nx, k).mean(axis=(1, 3))
    blocked[blocked < 1e-6] = 0.0
    rim[rim < 0.01 * max(float(rim.max()), 1e-6)] = 0.0        # a compact ring: no faint tails
    return (slice(y0, y1), slice(x0, x1)), blocked, rim


def measure_dust(transmission, *, threshold=0.2, opening=3, region=None):
    """Measure dust shadows in a transmission map as the real-dust notes do.

    The reference mask is, for each connected patch of darkening
    ``1 − T > 0.001``, the pixels darker than ``threshold`` times the patch's
    peak darkness, cleaned by a ``opening × opening`` binary opening.  Each
    connected component of the mask is one shadow (touching specks form one
    clump, as in a mask drawn on a real image).

    Parameters
    ----------
    transmission : array-like
        2-D transmission map (1 outside the dust).
    threshold : float, optional
        Fraction of each patch's peak darkness that defines the mask.
    opening : int, optional
        Size of the square structuring element of the opening (0 or 1: none).
    region : array-like of bool, optional
        Area (e.g. the solar disc) over which ``density`` is counted; the
        whole frame by default.

    Returns
    -------
    `~astropy.table.Table`
        One row a shadow: ``area`` (px), ``equivalent_diameter`` (2√(area/π),
        px), ``depth`` (95th percentile of 1 − T inside), ``elongation`` (√ of
        the ratio of the eigenvalues of the pixel-coordinate covariance),
        ``x_centroid``, ``y_centroid``; ``meta['density']`` is shadows per Mpx
        of ``region``.

    Examples
    --------
    >>> t, _, _ = make_dust_transmission((128, 128), n_dust=4, seed=2)
    >>> m = measure_dust(t)
    >>> len(m) >= 1, bool(np.all(m["elongation"] >= 1))
    (True, True)
    """
    t = np.asarray(transmission, dtype=float)
    if t.ndim != 2:
        raise InputError(f"transmission must be a 2-D map, got shape {t.shape}")
    dark = np.clip(1.0 - t, 0.0, None)
    patches, n_patch = ndimage.label(dark > 1e-3, structure=np.ones((3, 3)))
    mask = np.zeros(t.shape, dtype=bool)
    if n_patch:
        peak = ndimage.maximum(dark, patches, index=np.arange(1, n_patch + 1))
        level = np.concatenate([[np.inf], threshold * np.asarray(peak)])
        mask = dark > level[patches]
    if opening and opening > 1:
        mask = ndimage.binary_opening(mask, structure=np.ones((opening, opening), bool))
    comps, n = ndimage.label(mask, structure=np.ones((3, 3)))
    rows = []
    for i, sl in enumerate(ndimage.find_objects(comps), start=1):
        sel = comps[sl] == i
        ys, xs = np.nonzero(sel)
        area = ys.size
        cov = np.cov(np.vstack([ys, xs]).astype(float)) if area > 2 else np.eye(2)
        ev = np.sort(np.linalg.eigvalsh(cov))
        elong = float(np.sqrt(ev[1] / ev[0])) if ev[0] > 0 else np.inf
        rows.append((area, 2 * np.sqrt(area / np.pi), float(np.percentile(dark[sl][sel], 95)),
                     elong, float(xs.mean() + sl[1].start), float(ys.mean() + sl[0].start)))
    table = Table(rows=rows or None, names=("area", "equivalent_diameter", "depth", "elongation",
                                            "x_centroid", "y_centroid"),
                  dtype=("i8", "f8", "f8", "f8", "f8", "f8"))
    n_px = t.size if region is None else int(np.count_nonzero(region))
    table.meta["density"] = len(table) / max(n_px, 1) * 1e6
    return table


def make_dust_transmission(shape, *, regime="solar", f_ratio=None, pixel_size=NOMINAL_PIXEL_SIZE,
                           obstruction=None, n_dust=None, diffraction=None, wavelength=656.3,
                           allowed=None, margin=2.0, seed=None):
    """Transmission map, labels and catalogue of randomly drawn dust shadows.

    Shadow diameters and depths are drawn per regime (`DUST_REGIMES`) and
    converted to a distance Δz and a grain size a with `shadow_diameter` and
    `shadow_depth`, so that the optics (``f_ratio``, ``pixel_size``,
    ``obstruction``) act as the physics says.  Shadows never overlap and lie
    entirely inside the frame (and inside ``allowed``); a shadow that does not
    fit is moved closer to the focal plane (smaller, same depth) or dropped.

    Parameters
    ----------
    shape : tuple of int
        Frame shape ``(height, width)``.
    regime : {'solar', 'solar-soft', 'deepsky'}, optional
        ``'solar'`` (default): realistic specks calibrated on a real dusty
        solar median: pupil-footprint diameter and depth drawn from the real
        quantiles (about 3–40 px, 7–56 % deep at f/40), about 100 per Mpx of
        ``allowed``, 5 % fibres (threads 0.7–2.5 footprints long) and 6 % clumps
        of 2–5 touching grains; every shadow is its grain silhouette
        convolved with the pupil footprint, with a Fresnel ring.
        ``'solar-soft'``: the former solar population (f/30: round soft
        discs, 4–60 px, 3–40 %).  ``'deepsky'`` (f/4–f/7: large faint
        donuts, 60–300 px, 0.5–5 %).  Sizes are quoted at the regime's
        nominal f-ratio and 3.75 µm pixels and capped on small frames.
    f_ratio : float, optional
        Focal ratio N; 40 (solar), 30 (solar-soft) or 5 (deep-sky) by default.
    pixel_size : float, optional
        Pixel size in µm.
    obstruction : float, optional
        Linear central obstruction ε; 0 (solar: refractor) or 0.35 (deep-sky:
        Schmidt-Cassegrain) by default.  With ε > 0 shadows are donuts.
    n_dust : int, optional
        Number of shadows to draw; by default Poisson with 100 per Mpx of
        ``allowed`` (``'solar'``) or `DEFAULT_N_DUST` (10).
    diffraction : bool, optional
        Add a faint bright Fresnel rim (transmission > 1) just outside the
        edge of grains with Fresnel number a²/(λΔz) < 1.  Default: on for the
        solar regime (monochromatic light, small Δz), off for deep-sky.
    wavelength : float, optional
        Wavelength in nm for the Fresnel number (Hα by default).
    allowed : array-like of bool, optional
        Where shadows may lie (for example on the solar disc); everywhere by default.
    margin : float, optional
        Minimum gap in pixels between shadows and from the edge of ``allowed``.
    seed : int or `numpy.random.Generator`, optional
        Random seed or generator.

    Returns
    -------
    transmission : `numpy.ndarray`
        float32 ``shape``; exactly 1.0 outside the shadows.
    labels : `numpy.ndarray`
        int32 ``shape``; shadow id where the shadow darkens the pixel by more
        than `LABEL_FRACTION` (2 %) of its own depth, 0 elsewhere.
    shadows : `~astropy.table.Table`
        One row a shadow: ``id``, ``x_centroid``, ``y_centroid`` (0-based
        pixels), ``diameter`` and ``hole_diameter`` (px, at half depth),
        ``depth`` (1 − minimum transmission on the pixel grid), ``kind``
        (``'disc'``, ``'annulus'``, ``'fibre'`` or ``'clump'``), ``distance_mm``,
        ``grain_size`` (µm),
        ``rim_amplitude`` (peak transmission − 1 of the diffraction rim).

    Examples
    --------
    >>> trans, labels, shadows = make_dust_transmission((128, 128), n_dust=3, seed=1)
    >>> bool(trans.max() > 1.0)  # the bright Fresnel ring
    True
    >>> len(shadows), int(labels.max())
    (3, 3)
    >>> bool(np.all(trans[:, 0] == 1.0))  # exactly 1 outside the shadows
    True
    """
    shape = _check_shape(shape)
    if regime not in DUST_REGIMES:
        raise InputError(f"regime must be one of {', '.join(DUST_REGIMES)}, got {regime!r}")
    cfg = DUST_REGIMES[regime]
    optics = _checked_optics(cfg, f_ratio=f_ratio, pixel_size=pixel_size, obstruction=obstruction,
                             diffraction=diffraction, wavelength=wavelength)
    if n_dust is not None and (isinstance(n_dust, bool) or int(n_dust) != n_dust or n_dust < 0):
        raise InputError(f"n_dust must be a non-negative integer or None, got {n_dust!r}")
    if allowed is None:
        allowed = np.ones(shape, dtype=bool)
    elif np.shape(allowed) != shape:
        raise InputError(f"allowed has shape {np.shape(allowed)}, expected {shape}")
    rng = np.random.default_rng(seed)

    specks = cfg["model"] == "specks"
    if n_dust is None:
        n_dust = (rng.poisson(cfg["density"] * np.count_nonzero(allowed) / 1e6) if specks
                  else DEFAULT_N_DUST)
    if specks:
        drawn = _sample_specks(rng, int(n_dust), shape, cfg=cfg, optics=optics)
    else:
        drawn = _sample_shadows(rng, int(n_dust), shape, regime=regime, optics=optics)
    placed = _place(rng, drawn, shape, allowed, float(margin), optics)
    if len(placed) < len(drawn):
        warn_user(f"only {len(placed)} of {len(drawn)} dust shadows fit in a {shape[0]}x{shape[1]} "
                  "frame without overlapping")
    placed.sort(key=lambda s: (s["y"], s["x"]))
    return _rendered(placed, shape, specks)


def _checked_optics(cfg, *, f_ratio, pixel_size, obstruction, diffraction, wavelength):
    """The optics of `make_dust_transmission` (the regime's defaults filled in), checked."""
    f_ratio = float(cfg["f_ratio"] if f_ratio is None else f_ratio)
    obstruction = float(cfg["obstruction"] if obstruction is None else obstruction)
    diffraction = cfg["diffraction"] if diffraction is None else bool(diffraction)
    if not f_ratio > 0:
        raise InputError(f"f_ratio must be positive, got {f_ratio}")
    if not pixel_size > 0:
        raise InputError(f"pixel_size must be positive, got {pixel_size}")
    if not 0 <= obstruction < 1:
        raise InputError(f"obstruction must be in [0, 1), got {obstruction}")
    return {"f_ratio": f_ratio, "pixel_size": float(pixel_size), "obstruction": obstruction,
            "diffraction": diffraction, "wavelength": float(wavelength)}


def _rendered(placed, shape, specks):
    """The transmission, labels and shadow table of the placed shadows."""
    transmission = np.ones(shape, dtype=np.float64)
    labels = np.zeros(shape, dtype=np.int32)
    rows = []
    for i, s in enumerate(placed, start=1):
        if specks:
            box, blocked, rim = _render_speck(s, s["y"], s["x"], shape)
        else:
            box, blocked, rim = _render(s, s["y"], s["x"], shape, 4 if s["diameter"] < 40 else 2)
        transmission[box] += rim - blocked
        depth = float(blocked.max())
        labels[box][blocked > LABEL_FRACTION * depth] = i
        rim_peak = float(max(0.0, (rim - blocked).max())) if specks else s["rim_amplitude"]
        rows.append((i, s["x"], s["y"], s["diameter"], s["hole"] if s["kind"] == "annulus" else 0.0,
                     depth, s["kind"], s["distance"], s["grain_size"], rim_peak))
    return transmission.astype(np.float32), labels, _shadow_table(rows)


def _shadow_table(rows):
    names = ("id", "x_centroid", "y_centroid", "diameter", "hole_diameter", "depth", "kind",
             "distance_mm", "grain_size", "rim_amplitude")
    dtypes = ("i4", "f8", "f8", "f8", "f8", "f8", "U7", "f8", "f8", "f8")
    table = Table(rows=rows or None, names=names, dtype=dtypes)
    for name, unit in (("x_centroid", u.pix), ("y_centroid", u.pix), ("diameter", u.pix),
                       ("hole_diameter", u.pix), ("distance_mm", u.mm), ("grain_size", u.um)):
        table[name].unit = unit
    table["depth"].description = "1 - minimum transmission"
    table["diameter"].description = "pupil-footprint diameter (at half depth)"
    table["rim_amplitude"].description = "peak transmission - 1 of the bright diffraction rim"
    return table


def _check_shape(shape):
    try:
        shape = tuple(int(n) for n in shape)
    except (TypeError, ValueError):
        raise InputError(f"shape must be (height, width), got {shape!r}") from None
    if len(shape) != 2 or min(shape) < 16:
        raise InputError(f"shape must be (height, width), both at least 16 pixels, got {shape!r}")
    return shape
