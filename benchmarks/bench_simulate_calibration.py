"""Calibration of the default 'solar' simulator against real dust and a real solar scene.

Dust: simulated transmission maps are measured exactly as the real dusty
solar median of ``shared/notes/real-dust.md`` §1 was (`measure_dust`:
reference mask at 0.2 of each patch's peak darkness on 1 − T, 3×3 opening;
equivalent diameter, area, depth at the 95th percentile of darkness,
elongation √ of the eigenvalue ratio, density per Mpx of the disc) and the
quantiles are printed beside the real ones.  Quantiles are pooled over all
the specks of all seeds; "max" is the median over seeds of each frame's
largest value (one real frame has one maximum).  The Fresnel ring is counted
as the share of specks with T > 1 within 3 px outside their mask.

Scene: the contrast of the scene's features against a smooth local
background (``I / G_30px(I) − 1`` on the disc, 40 px from the limb) is
compared with the real H-alpha full-disc frames ``xu2016``
(`aiflat_astro.datasets.real.load_xu2016`) when they are present.  A figure
puts a real crop beside a simulated one.

Median texture (``--texture``): simulated 20-frame videos of the first two seeds
are median-combined at ``texture=1.0`` (the former scene) and the default; the
darkness scatter (MAD sigma of 1 − M / 25 px median filter, dust masked) and the
notes' simple method (k = 6/8, A = 4/10) are printed beside the real median's
(≈ 0.011; recall 0.97 / 0.94 / 0.81, precision 0.68 / 0.84 / 0.95); on dust-free
medians of the same seeds, the method's components per Mpx (all false) are printed
beside what its real recall and precision imply (47 / 18 / 4 per Mpx).

Usage::

    python benchmarks/bench_simulate_calibration.py [--seeds 100-107] [--shape 1200x1920]
        [--figure docs/_static/simulate_real_vs_sim.png] [--json benchmarks/results_simulate.json]
        [--texture]
"""

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
from scipy import ndimage

from aiflat_astro.datasets import make_dusty_video, measure_dust

#: The real dusty solar median (real-dust.md §1): 5/25/50/75/95 % and max.
REAL = {
    "equivalent_diameter": (3.1, 6.3, 9.9, 12.5, 18.9, 39.0),
    "area": (8, 31, 78, 123, 281, 1213),
    "depth": (0.07, 0.14, 0.19, 0.27, 0.56, 0.91),
    "elongation": (1.01, 1.08, 1.15, 1.26, 1.81, 3.5),
}
REAL_DENSITY = 238 / (1920 * 1200 / 1e6)
PERCENTS = (5, 25, 50, 75, 95)


def ring_fraction(transmission, mask):
    """Share of mask components with T > 1 somewhere within 3 px outside them."""
    comps, n = ndimage.label(mask, structure=np.ones((3, 3)))
    grown = ndimage.grey_dilation(comps, size=(7, 7))
    ring = (grown > 0) & (comps == 0)
    if n == 0:
        return float("nan")
    peak = ndimage.maximum(transmission, grown * ring, index=np.arange(1, n + 1))
    return float(np.mean(np.asarray(peak) > 1.0))


def reference_mask(transmission, threshold=0.2):
    dark = np.clip(1.0 - transmission, 0, None)
    patches, n = ndimage.label(dark > 1e-3, structure=np.ones((3, 3)))
    peak = np.concatenate([[np.inf], threshold * np.asarray(
        ndimage.maximum(dark, patches, index=np.arange(1, n + 1)))])
    return ndimage.binary_opening(dark > peak[patches], structure=np.ones((3, 3), bool))


def contrast_stats(image, disc, sigma=30.0):
    """Percentiles of I / (smooth local background) − 1 over ``disc`` (normalised convolution)."""
    image = np.asarray(image, np.float32)
    m = disc.astype(np.float32)
    bg = ndimage.gaussian_filter(image * m, sigma)
    bg /= np.maximum(ndimage.gaussian_filter(m, sigma), 1e-6)
    inner = ndimage.binary_erosion(disc, iterations=40)
    c = (image / np.maximum(bg, 1e-6) - 1)[inner]
    return {f"p{p}": float(np.percentile(c, p)) for p in (0.1, 1, 5, 50, 95, 99, 99.9)} | {
        "rms": float(np.std(c)), "dark_10pc": float(np.mean(c < -0.10)),
        "dark_30pc": float(np.mean(c < -0.30))}


def seeds_arg(text):
    if "-" in text:
        a, b = map(int, text.split("-"))
        return list(range(a, b + 1))
    return [int(t) for t in text.split(",")]


def simulate(seeds, shape):
    tables, times, rings, truths = [], [], [], []
    for seed in seeds:
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            truth = make_dusty_video(None, shape=shape, n_frames=1, seed=seed)
        times.append(time.perf_counter() - t0)
        disc = truth.scene > 0.05
        tables.append(measure_dust(truth.transmission, region=disc))
        rings.append(ring_fraction(truth.transmission, reference_mask(truth.transmission)))
        truths.append(truth)
        print(f"seed {seed}: {len(truth.shadows)} specks drawn, {len(tables[-1])} measured, "
              f"{tables[-1].meta['density']:.0f} per Mpx, {times[-1]:.1f} s")
    return tables, times, rings, truths


def table_rows(tables):
    rows = {}
    for col, real in REAL.items():
        pooled = np.concatenate([np.asarray(t[col], float) for t in tables])
        sim = [float(np.percentile(pooled, p)) for p in PERCENTS]
        sim.append(float(np.median([np.max(t[col]) for t in tables if len(t)])))
        rows[col] = {"sim": sim, "real": list(real)}
    return rows


def print_table(rows, density, rings, times):
    head = "".join(f"{f'{p} %':>14s}" for p in PERCENTS) + f"{'max':>14s}"
    print(f"\n{'quantity':22s}{head}\n{'':22s}" + "   sim / real " * 6)
    for col, r in rows.items():
        fmt = "{:6.2f}/{:<6.2f} " if col in ("depth", "elongation") else "{:6.1f}/{:<6.1f} "
        print(f"{col:22s}" + "".join(fmt.format(s, q) for s, q in zip(r["sim"], r["real"])))
    print(f"{'density per Mpx':22s}{np.mean(density):6.0f} ± {np.std(density):.0f} / "
          f"{REAL_DENSITY:.0f}")
    print(f"{'Fresnel ring T > 1':22s}{100 * np.nanmean(rings):5.0f} % of specks / 'most'")
    print(f"{'time per 1 frame':22s}{np.median(times):6.1f} s (median)")


def scene_comparison(truth):
    from aiflat_astro.datasets.real import load_xu2016, real_data_dir

    sim_disc = truth.scene > 0.05
    sim = contrast_stats(truth.scene * truth.transmission, sim_disc)
    real = None
    xu = None
    if real_data_dir("xu2016") is not None:
        xu = load_xu2016()
        frame = xu.frames[0]
        disc = ndimage.binary_opening(frame > 0.5 * np.percentile(frame, 60), iterations=3)
        real = contrast_stats(frame, disc)
    keys = list(sim)
    print(f"\nfeature contrast I / G_30px(I) - 1 on the disc    {'sim':>8s} {'xu2016':>8s}")
    for k in keys:
        print(f"  {k:46s} {sim[k]:8.3f} {real[k] if real else float('nan'):8.3f}")
    return sim, real, xu


def figure(path, truth, xu):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img = truth.scene * truth.transmission
    um = [f for f in truth.params["scene_features"] if f["kind"] == "umbra"][0]
    h, w = img.shape
    cy = int(np.clip(um["y"], 200, h - 200))
    cx = int(np.clip(um["x"] + 150, 250, w - 250))
    sim_crop = img[cy - 200:cy + 200, cx - 250:cx + 250]
    panels = [("simulated 'solar' (f/40): umbra, plage, pores, ~100 specks/Mpx", sim_crop)]
    if xu is not None:
        y, x = (int(v) for v in xu.spots[1])
        real_crop = xu.frames[0][y - 200:y + 200, x - 250:x + 250]
        panels.insert(0, ("real xu2016 H-alpha (frame 0), a dust spot at the centre", real_crop))
    yb, xb = truth.shadows["y_centroid"], truth.shadows["x_centroid"]
    k = int(np.argmax(np.where((yb > 40) & (yb < h - 40) & (xb > 40) & (xb < w - 40),
                               truth.shadows["depth"] * (truth.shadows["diameter"] > 8), -1)))
    y, x = int(yb[k]), int(xb[k])
    panels.append(("simulated transmission T near a speck (ring T > 1)",
                   truth.transmission[y - 30:y + 30, x - 30:x + 30]))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6))
    for ax, (title, data) in zip(np.atleast_1d(axes), panels):
        lo, hi = np.percentile(data, (0.5, 99.5))
        if "ring" in title:                      # stretch around 1: core black, ring white
            a = max(float(data.max()) - 1, 1e-3)
            lo, hi = 1 - 3 * a, 1 + a
        ax.imshow(data, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
        ax.set_title(title, fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    from PIL import Image

    Image.open(path).convert("L").save(path, optimize=True)   # grey levels only: a small file
    print(f"wrote {path} ({path.stat().st_size / 1e3:.0f} kB)")


#: The notes' simple method on the real dusty median: (k, A) -> (recall, precision).
REAL_SIMPLE = {(6, 4): (0.97, 0.68), (8, 4): (0.94, 0.84), (8, 10): (0.81, 0.95)}


def real_false_per_mpx(recall, precision):
    """False components per Mpx the simple method's figures imply on the real median (one part per speck found)."""
    found = 238 * recall
    return found * (1 / precision - 1) / (1920 * 1200 / 1e6)


def simple_method(image, disc, k, min_area):
    """The notes' baseline: 25 px median background, k MAD sigmas, parts >= A px, grown 2."""
    bg = ndimage.median_filter(image, 25)
    dark = np.where(disc, 1 - image / np.maximum(bg, 1e-3), 0)
    v = dark[disc]
    sigma = 1.4826 * float(np.median(np.abs(v - np.median(v))))
    lab, n = ndimage.label((dark > k * sigma) & disc)
    sizes = ndimage.sum_labels(lab > 0, lab, np.arange(1, n + 1))
    keep = np.isin(lab, 1 + np.flatnonzero(sizes >= min_area))
    return ndimage.binary_dilation(keep, iterations=2), sigma


def texture_yardstick(seeds, shape, tmp):
    """Darkness scatter and the simple method's figures on simulated medians, former and default."""
    from aiflat_astro.combine import median_combine
    from aiflat_astro.evaluate import evaluate_mask

    out = {}
    for texture in (1.0, None):
        for seed in seeds:
            path = Path(tmp) / "tex.ser"
            truth = make_dusty_video(path, shape=shape, n_frames=20, seed=seed, texture=texture,
                                     overwrite=True)
            med = median_combine(path).data.astype(np.float32)
            disc = ndimage.binary_erosion(med > 0.3 * np.percentile(med, 99), iterations=5)
            row = {}
            for (k, a), real in REAL_SIMPLE.items():
                mask, sigma = simple_method(med, disc, k, a)
                e = evaluate_mask(mask, truth)
                row[f"k{k}_A{a}"] = {"recall": e["recall"], "precision": e["precision"],
                                     "real": real}
            row["sigma"] = sigma
            out[f"texture={texture or 'default'} seed={seed}"] = row
            name = texture or "default"
            print(f"texture {name}, seed {seed}: scatter {sigma:.4f} (real ~0.011); "
                  + "; ".join(f"{n} {r['recall']:.2f}/{r['precision']:.2f} (real {r['real'][0]}/"
                              f"{r['real'][1]})" for n, r in row.items() if n != "sigma"))
    return out


def look_alike_yardstick(seeds, shape, tmp):
    """The simple method's components per Mpx of disc on dust-free simulated medians (all of them false)."""
    from aiflat_astro.combine import median_combine

    out = {}
    for seed in seeds:
        path = Path(tmp) / "free.ser"
        make_dusty_video(path, shape=shape, n_frames=20, seed=seed, dust_free=True, overwrite=True)
        med = median_combine(path).data.astype(np.float32)
        disc = ndimage.binary_erosion(med > 0.3 * np.percentile(med, 99), iterations=5)
        row = {}
        for (k, a), real in REAL_SIMPLE.items():
            n = ndimage.label(simple_method(med, disc, k, a)[0])[1]
            row[f"k{k}_A{a}"] = {"false_per_mpx": n / (disc.sum() / 1e6),
                                 "real_implied": real_false_per_mpx(*real)}
        out[f"dust-free seed={seed}"] = row
        print(f"dust-free seed {seed}: false per Mpx " + "; ".join(
            f"{n} {r['false_per_mpx']:.1f} (real ~{r['real_implied']:.1f})" for n, r in row.items()))
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=seeds_arg, default=seeds_arg("100-107"))
    parser.add_argument("--shape", default="1200x1920")
    parser.add_argument("--figure", type=Path)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--texture", action="store_true", help="also the median-texture yardstick")
    args = parser.parse_args()
    shape = tuple(int(v) for v in args.shape.lower().split("x"))
    tables, times, rings, truths = simulate(args.seeds, shape)
    rows = table_rows(tables)
    density = [t.meta["density"] for t in tables]
    print_table(rows, density, rings, times)
    sim, real, xu = scene_comparison(truths[0])
    yard = None
    if args.texture:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            yard = texture_yardstick(args.seeds[:2], shape, tmp)
            yard["look_alikes"] = look_alike_yardstick(args.seeds[:2], shape, tmp)
    if args.figure:
        figure(args.figure, truths[0], xu)
    if args.json:
        out = {"seeds": args.seeds, "shape": shape, "dust": rows,
               "density": {"sim_mean": float(np.mean(density)), "sim_sd": float(np.std(density)),
                           "real": REAL_DENSITY},
               "ring_fraction": float(np.nanmean(rings)), "time_s": float(np.median(times)),
               "scene_contrast": {"sim": sim, "xu2016": real}, "median_texture": yard}
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
