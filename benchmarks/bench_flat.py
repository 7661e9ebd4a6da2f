"""Accuracy of the synthetic flat on simulated videos with ground truth.

Measures, for the clean-estimate variants of ``inpaint='local'`` and the two
transmission models of `make_flat` (``profile='none'``: plain ratio
median/clean; ``profile='radial'``: robust radial profile per shadow), the
residual dust left in the calibrated median::

    residual = T / flat - 1        (calibrated median / dust-free median - 1)

as the rms over all true shadow pixels divided by the rms of the uncorrected
dust ``1 - T`` over the same pixels (target <= 0.1), and the fraction of
shadows that meet the target on their own.  The dust mask is the truth
(``labels > 0``), so the hand is measured apart from the eye; ``--detector``
uses the local detector instead (end-to-end).

A second section compares the photometric matching of an external estimate
(`match_photometry`: robust linear fit vs histogram matching) on estimates
distorted like a generative model's answer (affine or gamma stretch, 8-bit
quantisation, blur, noise).

Usage::

    python benchmarks/bench_flat.py [--seeds 4] [--first-seed 0] [--detector] [--oracle]
                                    [--variants poly2,harmonic] [--profiles radial]
                                    [--drift 100 --frames] [--silhouette]

``poly2`` is the default of ``make_flat`` (on a solar disc: the disc model
times the median of the ring, ``disc_poly_degree=0``); ``poly2 disc deg1``
is the previous default (a degree-1 ring fit on the disc).  The pooled
figure of a set of videos is the rms of the per-video figures.

``--oracle`` adds a diagnostic row per regime: the radial profile applied to
the *true* clean image (median / true transmission, truth used on purpose,
never in the library).  It separates the error of the transmission model
(texture left by the radial median) from the error of the clean estimate.
"""

import argparse
import itertools
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from scipy import ndimage

from aiflat_astro.combine import median_combine
from aiflat_astro.datasets import make_dusty_video
from aiflat_astro.flat import make_flat
from aiflat_astro.flat.estimators.local import match_photometry

LOCAL_VARIANTS = {
    "harmonic": {"method": "harmonic", "normalize": False},
    "harmonic+norm": {"method": "harmonic", "normalize": True},
    "biharmonic": {"method": "biharmonic", "normalize": False},
    "poly1": {"method": "poly", "poly_degree": 1},
    "poly2": {"method": "poly", "poly_degree": 2},
    "poly2 disc deg1": {"method": "poly", "poly_degree": 2, "disc_poly_degree": 1},
    "poly2 no disc": {"method": "poly", "poly_degree": 2, "disc": False},
}


def simulate(tmp, regime, seed, **kw):
    path = Path(tmp) / f"{regime}_{seed}.ser"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        truth = make_dusty_video(path, regime=regime, seed=seed, overwrite=True, **kw)
    median = median_combine(path).data
    return median, truth, path


def residuals(flat, truth):
    t = truth.transmission.astype(np.float64)
    inside = truth.labels > 0
    res = t[inside] / flat[inside] - 1
    pooled = np.sqrt(np.mean(res**2) / np.mean((1 - t[inside]) ** 2))
    per = []
    for k in np.unique(truth.labels[inside]):
        px = truth.labels == k
        per.append(np.sqrt(np.mean((t[px] / flat[px] - 1) ** 2) / np.mean((1 - t[px]) ** 2)))
    return pooled, np.array(per)


def _oracle_inpainter(median, detection, *, frames=None, transmission=None):
    """Diagnostic only: the true dust-free median (median / true transmission)."""
    return median / transmission, {"profile": "radial"}


def bench_flats(args):
    results = {}
    if args.oracle:
        from aiflat_astro.flat.estimators.registry import available_inpainters, register_inpainter

        if "bench-oracle" not in available_inpainters():
            register_inpainter("bench-oracle", _oracle_inpainter)
    with tempfile.TemporaryDirectory() as tmp:
        for regime in args.regimes:
            for seed in range(args.first_seed, args.first_seed + args.seeds):
                median, truth, path = simulate(tmp, regime, seed, drift=args.drift)
                if args.detector:
                    from aiflat_astro.detection import detect_dust

                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        # as `aiflat run` does when the optics are given: frames, f-ratio, pixel size
                        mask = detect_dust(median, frames=path, f_ratio=truth.params["f_ratio"],
                                           pixel_size=truth.params["pixel_size"])
                else:
                    mask = truth.labels > 0
                variants = {k: v for k, v in LOCAL_VARIANTS.items() if not args.variants or k in args.variants}
                runs = [(name, "local", opts, profile, None) for (name, opts), profile in
                        itertools.product(variants.items(), args.profiles)]
                if args.oracle:
                    runs.append(("true clean", "bench-oracle", {"transmission": truth.transmission},
                                 "radial", None))
                if args.silhouette:  # opt-in model of non-round shadows (FlatOptions.silhouette)
                    runs.append(("silhouette", "local", {}, "radial", None))
                if args.frames:  # as `aiflat flat --video`: the scene's motion chooses the model
                    runs.append(("with frames", "local", {}, "auto", path))
                for name, inpaint, opts, profile, frames in runs:
                    t0 = time.perf_counter()
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        flat = make_flat(median, mask, inpaint=inpaint, inpaint_options=opts,
                                         profile=profile, frames=frames,
                                         silhouette=name == "silhouette")
                    dt = time.perf_counter() - t0
                    pooled, per = residuals(flat.data, truth)
                    r = results.setdefault((regime, name, profile), {"pooled": [], "per": [], "time": []})
                    r["pooled"].append(pooled)
                    r["per"].append(per)
                    r["time"].append(dt)
    print(f"\nresidual dust / uncorrected dust (rms inside true shadows); {args.seeds} videos per regime "
          f"(seeds {args.first_seed}..{args.first_seed + args.seeds - 1}), "
          f"mask = {'local detector' if args.detector else 'truth'}")
    print(f"{'regime':8s} {'clean estimate':15s} {'profile':7s} {'pooled':>7s} {'median/shadow':>13s} "
          f"{'shadows<=0.1':>12s} {'time/flat':>9s}")
    for (regime, name, profile), r in results.items():
        per = np.concatenate(r["per"])
        print(f"{regime:8s} {name:15s} {profile:7s} {np.sqrt(np.mean(np.square(r['pooled']))):7.3f} "
              f"{np.median(per):13.3f} {np.mean(per <= 0.1):12.2f} {np.mean(r['time']):8.2f}s")


def distort(clean, kind, rng):
    lo, hi = np.percentile(clean, [0.5, 99.5])
    x = np.clip((clean - lo) / (hi - lo), 0, 1)
    if kind == "gamma":
        x = x ** (1 / 2.2)
    x = ndimage.gaussian_filter(x, 0.7) + rng.normal(0, 0.004, x.shape)
    return np.round(np.clip(x, 0, 1) * 255) / 255 * 0.9 + 0.03


def _match_in_rings(est, median, mask, method, ring_width=12):
    """Match per shadow on a ring of ``ring_width`` px around it (as the Gemini inpainter does)."""
    out = np.array(est, dtype=np.float64)
    comp, _ = ndimage.label(mask, structure=np.ones((3, 3), bool))
    dist = ndimage.distance_transform_edt(~mask)
    for k, sl in enumerate(ndimage.find_objects(comp), start=1):
        win = tuple(slice(max(0, s.start - ring_width - 1), s.stop + ring_width + 1) for s in sl)
        exclude = mask[win] | (dist[win] > ring_width)
        matched = match_photometry(est[win], median[win], exclude, method=method)
        inside = comp[win] == k
        out[win][inside] = matched[inside]
    return out


def bench_matching(args):
    print("\nphotometric matching of an external estimate: rms(matched/true - 1) inside the dust mask")
    print(f"{'regime':8s} {'distortion':10s} {'fit area':9s} {'linear':>8s} {'histogram':>9s}")
    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory() as tmp:
        for regime in ("solar", "deepsky"):
            acc = {}
            for seed in range(args.seeds):
                median, truth, _ = simulate(tmp, regime, seed)
                clean = median / truth.transmission
                inside = truth.labels > 0
                mask = ndimage.binary_dilation(inside, iterations=3)
                for kind in ("affine", "gamma"):
                    est = distort(clean, kind, rng)
                    for method in ("linear", "histogram"):
                        for area in ("image", "rings"):
                            if area == "image":
                                m = match_photometry(est, median, mask, method=method)
                            else:
                                m = _match_in_rings(est, median, mask, method)
                            err = np.sqrt(np.mean((m[inside] / clean[inside] - 1) ** 2))
                            acc.setdefault((kind, area, method), []).append(err)
            for kind, area in itertools.product(("affine", "gamma"), ("image", "rings")):
                print(f"{regime:8s} {kind:10s} {area:9s} {np.mean(acc[(kind, area, 'linear')]):8.4f} "
                      f"{np.mean(acc[(kind, area, 'histogram')]):9.4f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--first-seed", type=int, default=0, help="first simulation seed (held-out checks)")
    parser.add_argument("--detector", action="store_true", help="use the local detector's mask")
    parser.add_argument("--oracle", action="store_true",
                        help="diagnostic row: radial profile on the true clean image (uses the truth)")
    parser.add_argument("--variants", type=lambda v: v.split(","), default=None,
                        help=f"comma-separated clean estimates to run (default all: {', '.join(LOCAL_VARIANTS)})")
    parser.add_argument("--profiles", type=lambda v: v.split(","), default=["none", "radial"],
                        help="comma-separated transmission models (default none,radial)")
    parser.add_argument("--regimes", type=lambda v: v.split(","), default=["solar", "deepsky"])
    parser.add_argument("--drift", type=float, default=0.0,
                        help="peak-to-peak Lissajous drift of the simulated scene, px (default 0: jitter)")
    parser.add_argument("--frames", action="store_true",
                        help="add a row: make_flat with the frames (scene_motion measured, profile auto)")
    parser.add_argument("--silhouette", action="store_true",
                        help="add a row for make_flat(..., silhouette=True)")
    parser.add_argument("--skip-flats", action="store_true")
    parser.add_argument("--skip-matching", action="store_true")
    args = parser.parse_args()
    unknown = set(args.variants or ()) - set(LOCAL_VARIANTS)
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(sorted(unknown))}; choose from {', '.join(LOCAL_VARIANTS)}")
    if not args.skip_flats:
        bench_flats(args)
    if not args.skip_matching:
        bench_matching(args)


if __name__ == "__main__":
    main()
