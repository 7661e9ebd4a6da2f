"""Where the hand's residual comes from: the flat's error split into its terms, with the truth.

Diagnostic only (the truth is used on purpose; the library never sees it).
Each row changes one ingredient of ``make_flat`` against the default and
reports the residual dust ``T / flat - 1`` over the uncorrected ``1 - T``
(pooled over pixels: sqrt(sum of squared residuals / sum of squared dust)):

* ``default``: the clean estimate of ``inpaint='local'`` (with the frames on
  the simulated videos, as ``aiflat run`` passes them: ``jitter_clean``),
  the radial model;
* ``median alone``: the default without the frames (simulated videos only);
* ``plain``: the same clean estimate, the plain ratio (``profile='none'``);
* ``true clean + radial`` / ``true clean + plain``: the clean estimate
  replaced by the true dust-free image (``median / T``); the plain ratio is
  then exact except for the floor and the soft weight's edge, so the
  ``true clean + plain`` row is the floor term;
* ``mask + ring``: the given mask grown to the bright Fresnel ring
  (``T > 1.002`` within 8 px of a shadow), default estimate;

Columns: the dust pixels (the simulator's labels / the injected core grown by
3 px, as the real-data figure), the ring pixels alone (``T > 1`` outside the
labels), and for the default row the share of the squared residual held by
each kind of shadow (``disc``, ``fibre``, ``clump``) and by the pixels at the
floor.

With ``--demo`` the ``aiflat demo`` scene (640 x 512, 100 frames, seed 2024) is
added, with the true mask and with the local detector's mask made as ``aiflat
run`` makes it (frames, f-ratio, pixel size); for the latter the squared
residual is split by how much of each true shadow the flat's weight covers
(missed: under 20 %, partial, covered: 95 % or more) and the ``true clean +
plain`` row on that mask is the extent term (what a perfect hand would leave
on it).

Usage::

    python benchmarks/bench_flat_decompose.py [--seeds 4] [--first-seed 8] [--skip-sim] [--skip-real]
                                              [--demo]
"""

import argparse
import tempfile
import time
import warnings

import numpy as np
from scipy import ndimage

from aiflat_astro.dq import DustDQ
from aiflat_astro.flat import make_flat
from aiflat_astro.flat.estimators.registry import available_inpainters, register_inpainter

from bench_flat import simulate
from bench_flat_real import INJECT_FRAMES, injected_cases


def _oracle(median, detection, *, frames=None, transmission=None):
    """Diagnostic only: the true dust-free image (median / true transmission; an opaque pixel, T = 0,
    gets the median itself: the flat is at its floor there anyway)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        clean = np.where(transmission > 1e-6, median / transmission, median)
    return clean, {"profile": "radial"}


def _flat(median, mask, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return make_flat(median.astype(np.float32), mask, **kw)


def _ring_mask(t, core, reach=8):
    near = ndimage.distance_transform_edt(~core) <= reach
    return near & ~core & (t > 1.002)


def _rows(median, t, mask, frames):
    """The rows; ``mask`` a boolean mask, or a detection (no ``mask + ring`` row then)."""
    oracle = {"transmission": t}
    rows = {"median alone": _flat(median, mask)} if frames is not None else {}
    rows |= {
        "default": _flat(median, mask, frames=frames),
        "plain": _flat(median, mask, frames=frames, profile="none"),
        "true clean + radial": _flat(median, mask, inpaint="bench-oracle", inpaint_options=oracle,
                                     profile="radial"),
        "true clean + plain": _flat(median, mask, inpaint="bench-oracle", inpaint_options=oracle,
                                    profile="none"),
    }
    if isinstance(mask, np.ndarray):
        rows["mask + ring"] = _flat(median, mask | _ring_mask(t, mask), frames=frames)
    return rows


def _accumulate(acc, name, flat, t, dust, ring, kinds=None, labels=None):
    f = flat.data.astype(np.float64)
    err = (t / f - 1) ** 2
    a = acc.setdefault(name, {"E": 0.0, "U": 0.0, "Er": 0.0, "Ur": 0.0, "kind": {}, "floor": 0.0})
    a["E"] += float(err[dust].sum())
    a["U"] += float(((1 - t[dust]) ** 2).sum())
    a["Er"] += float(err[ring].sum())
    a["Ur"] += float(((1 - t[ring]) ** 2).sum())
    low = (flat.flags & DustDQ.LOW_TRANS) > 0
    a["floor"] += float(err[dust & low].sum())
    if kinds is not None:
        for sid, kind in kinds.items():
            px = dust & (labels == sid)
            a["kind"][kind] = a["kind"].get(kind, 0.0) + float(err[px].sum())


def _report(title, acc):
    print(f"\n{title}")
    print(f"  {'row':22s} {'dust':>7s} {'ring':>7s}   shares of the squared residual (dust pixels)")
    for name, a in acc.items():
        shares = ""
        if a["E"] > 0 and (a["kind"] or a["floor"]):
            parts = [f"{k} {v / a['E']:.2f}" for k, v in sorted(a["kind"].items())]
            parts.append(f"floor {a['floor'] / a['E']:.2f}")
            shares = ", ".join(parts)
        ring = np.sqrt(a["Er"] / a["Ur"]) if a["Ur"] > 0 else float("nan")
        print(f"  {name:22s} {np.sqrt(a['E'] / a['U']):7.3f} {ring:7.3f}   {shares}")


def bench_sim(seeds, first_seed):
    acc = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(first_seed, first_seed + seeds):
            median, truth, path = simulate(tmp, "solar", seed)
            t = truth.transmission.astype(np.float64)
            dust = truth.labels > 0
            ring = _ring_mask(t, dust)
            kinds = {int(r["id"]): str(r["kind"]) for r in truth.shadows}
            t0 = time.perf_counter()
            for name, flat in _rows(median, t, dust, path).items():
                _accumulate(acc, name, flat, t, dust, ring, kinds, truth.labels)
            print(f"  seed {seed}: {time.perf_counter() - t0:.1f} s")
    _report(f"simulated 'solar' jitter videos, seeds {first_seed}..{first_seed + seeds - 1}, true mask "
            "(labels), frames given", acc)
    return acc


def _coverage_shares(flat, t, labels):
    """Share of the squared residual of the shadows the flat's weight misses, covers in part, covers."""
    err = (t / flat.data.astype(np.float64) - 1) ** 2
    inside = labels > 0
    total = float(err[inside].sum())
    shares = {"missed": 0.0, "partial": 0.0, "covered": 0.0}
    counts = dict.fromkeys(shares, 0)
    weighted = flat.flags > 0
    for sid in np.unique(labels[inside]):
        px = labels == sid
        cover = float(weighted[px].mean())
        kind = "missed" if cover < 0.2 else "partial" if cover < 0.95 else "covered"
        shares[kind] += float(err[px].sum()) / total if total > 0 else 0.0
        counts[kind] += 1
    return shares, counts


def bench_demo():
    """The ``aiflat demo`` scene: true mask, then the detector's mask (the extent split)."""
    from aiflat_astro._commands.demo import DEMO_SIMULATION
    from aiflat_astro.datasets import make_dusty_video
    from aiflat_astro.combine import median_combine
    from aiflat_astro.detection import detect_dust

    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = f"{tmp}/sun_dusty.ser"
        truth = make_dusty_video(path, overwrite=True, **DEMO_SIMULATION)
        median = median_combine(path).data
        t = truth.transmission.astype(np.float64)
        dust = truth.labels > 0
        kinds = {int(r["id"]): str(r["kind"]) for r in truth.shadows}
        acc = {}
        for name, flat in _rows(median, t, dust, path).items():
            _accumulate(acc, name, flat, t, dust, _ring_mask(t, dust), kinds, truth.labels)
        _report("'aiflat demo' scene, true mask, frames given", acc)
        det = detect_dust(median, frames=path, f_ratio=truth.params["f_ratio"],
                          pixel_size=truth.params["pixel_size"])
        acc = {}
        rows = _rows(median, t, det, path)
        for name, flat in rows.items():
            _accumulate(acc, name, flat, t, dust, _ring_mask(t, dust), kinds, truth.labels)
        _report("'aiflat demo' scene, the local detector's mask (as `aiflat run`), frames given", acc)
        shares, counts = _coverage_shares(rows["default"], t, truth.labels)
        print("  default row, squared residual by coverage of each true shadow by the flat's weight: "
              + ", ".join(f"{k} {v:.2f} ({counts[k]} shadows)" for k, v in shares.items()))
    return acc


def bench_real(n_cases, n_specks):
    acc = {}
    for image, t, core, dist in injected_cases(n_cases, n_specks):
        dust, ring = dist <= 3, (dist > 0) & (dist <= 3)
        for name, flat in _rows(image, t, core, None).items():
            _accumulate(acc, name, flat, t, dust, ring)
    _report(f"real xu2016 texture, injected real-statistics specks ({n_cases} crops x {n_specks}), "
            "given mask = core; 'dust' = core + 3 px, 'ring' = the 3 px ring (the 'truth'/'ring' figures)", acc)
    return acc


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--first-seed", type=int, default=8)
    parser.add_argument("--injected-cases", type=int, default=len(INJECT_FRAMES))
    parser.add_argument("--specks", type=int, default=20)
    parser.add_argument("--skip-sim", action="store_true")
    parser.add_argument("--skip-real", action="store_true")
    parser.add_argument("--demo", action="store_true", help="add the 'aiflat demo' scene (true and detector masks)")
    args = parser.parse_args()
    if "bench-oracle" not in available_inpainters():
        register_inpainter("bench-oracle", _oracle)
    if not args.skip_real:
        bench_real(args.injected_cases, args.specks)
    if not args.skip_sim:
        bench_sim(args.seeds, args.first_seed)
    if args.demo:
        bench_demo()


if __name__ == "__main__":
    main()
