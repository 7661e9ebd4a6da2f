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
    "DUST_REGIMES",
    "LABEL_FRACTION",
]

log = logging.getLogger(__name__)

#: Nominal pixel size (µm) at which the regimes' diameter ranges are quoted.
NOMINAL_PIXEL_SIZE = 3.75

#: Dust populations per regime.  ``diameter`` (px) and ``depth`` (plateau
#: depth) are the ranges sampled at the nominal optics (``f_ratio`` and
#: `NOMINAL_PIXEL_SIZE`); other optics rescale them as the physics says
#: (D ∝ 1/(N p), depth ∝ N²).  ``fit`` is the largest diameter as a fraction of
#: the smaller frame side, ``min_diameter`` a floor kept when the range is
#: scaled down to fit a small frame, ``vignetting`` the sampled amplitude range.
DUST_REGIMES = {
    "solar": {
        "f_ratio": 30.0, "obstruction": 0.0, "diameter": (4.0, 60.0), "depth": (0.03, 0.40),
        "fit": 0.25, "min_diameter": 4.0, "diffraction": True, "vignetting": (0.02, 0.05),
    },
    "deepsky": {
        "f_ratio": 5.0, "obstruction": 0.35, "diameter": (60.0, 300.0), "depth": (0.005, 0.05),
        "fit": 0.4, "min_diameter": 12.0, "diffraction": False, "vignetting": (0.04, 0.10),
    },
}

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
            s.update(_shrunk(s, optics))
        else:
            log.debug("no room for a %.1f px shadow; dropped", s["diameter"])
    return placed


def _shrunk(s, optics, factor=0.8):
    """The same grain moved closer to the focal plane: D and a scale together, depth kept."""
    return _derive(s["diameter"] * factor, s["grain_size"] * factor, s["distance"] * factor, optics)


def make_dust_transmission(shape, *, regime="solar", f_ratio=None, pixel_size=NOMINAL_PIXEL_SIZE,
                           obstruction=None, n_dust=10, diffraction=None, wavelength=656.3,
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
    regime : {'solar', 'deepsky'}, optional
        Solar/planetary (f/20–f/40: small, deep, 4–60 px, 3–40 %) or deep-sky
        (f/4–f/7: large faint donuts, 60–300 px, 0.5–5 %).  Ranges are quoted
        at the regime's nominal f-ratio and 3.75 µm pixels and scaled down on
        frames too small to hold them.
    f_ratio : float, optional
        Focal ratio N; 30 (solar) or 5 (deep-sky) by default.
    pixel_size : float, optional
        Pixel size in µm.
    obstruction : float, optional
        Linear central obstruction ε; 0 (solar: refractor) or 0.35 (deep-sky:
        Schmidt-Cassegrain) by default.  With ε > 0 shadows are donuts.
    n_dust : int, optional
        Number of shadows to draw.
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
        (``'disc'`` or ``'annulus'``), ``distance_mm``, ``grain_size`` (µm),
        ``rim_amplitude`` (peak transmission − 1 of the diffraction rim).

    Examples
    --------
    >>> trans, labels, shadows = make_dust_transmission((128, 128), n_dust=3, seed=1)
    >>> len(shadows), int(labels.max())
    (3, 3)
    >>> bool(np.all(trans[:, 0] == 1.0))  # exactly 1 outside the shadows
    True
    """
    shape = _check_shape(shape)
    if regime not in DUST_REGIMES:
        raise InputError(f"regime must be one of {', '.join(DUST_REGIMES)}, got {regime!r}")
    cfg = DUST_REGIMES[regime]
    f_ratio = float(cfg["f_ratio"] if f_ratio is None else f_ratio)
    obstruction = float(cfg["obstruction"] if obstruction is None else obstruction)
    diffraction = cfg["diffraction"] if diffraction is None else bool(diffraction)
    if not f_ratio > 0:
        raise InputError(f"f_ratio must be positive, got {f_ratio}")
    if not pixel_size > 0:
        raise InputError(f"pixel_size must be positive, got {pixel_size}")
    if not 0 <= obstruction < 1:
        raise InputError(f"obstruction must be in [0, 1), got {obstruction}")
    if int(n_dust) != n_dust or n_dust < 0:
        raise InputError(f"n_dust must be a non-negative integer, got {n_dust!r}")
    if allowed is None:
        allowed = np.ones(shape, dtype=bool)
    elif np.shape(allowed) != shape:
        raise InputError(f"allowed has shape {np.shape(allowed)}, expected {shape}")
    rng = np.random.default_rng(seed)

    optics = {"f_ratio": f_ratio, "pixel_size": float(pixel_size), "obstruction": obstruction,
              "diffraction": diffraction, "wavelength": float(wavelength)}
    drawn = _sample_shadows(rng, int(n_dust), shape, regime=regime, optics=optics)
    placed = _place(rng, drawn, shape, allowed, float(margin), optics)
    if len(placed) < len(drawn):
        warn_user(f"only {len(placed)} of {len(drawn)} dust shadows fit in a {shape[0]}x{shape[1]} "
                  "frame without overlapping")
    placed.sort(key=lambda s: (s["y"], s["x"]))

    transmission = np.ones(shape, dtype=np.float64)
    labels = np.zeros(shape, dtype=np.int32)
    rows = []
    for i, s in enumerate(placed, start=1):
        supersample = 4 if s["diameter"] < 40 else 2
        box, blocked, rim = _render(s, s["y"], s["x"], shape, supersample)
        transmission[box] += rim - blocked
        depth = float(blocked.max())
        labels[box][blocked > LABEL_FRACTION * depth] = i
        rows.append((i, s["x"], s["y"], s["diameter"], s["hole"] if s["kind"] == "annulus" else 0.0,
                     depth, s["kind"], s["distance"], s["grain_size"], s["rim_amplitude"]))
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
