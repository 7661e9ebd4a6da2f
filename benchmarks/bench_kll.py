"""Full flat (KLL) and measured dust on off-pointed sets: simulated truth and the real xu2016 set.

Simulated: `aiflat_astro.datasets.kll.make_kll_set` (16 and 9 frames, offsets
5-330 px on a 1024 px sensor, gain = PRNU 1 % x vignetting 5 % x dust).
Printed per set: registration error, full-flat rms error on the pixels
covered by >= 4 offsets (as is, and without the plane that free frame levels
leave undetermined), the noise floor (rms of UNCERT), the error of the dust
shadows relative to their surroundings, and the time.

Real: the xu2016 set (when ``shared/data/real`` is present): offsets, the
full flat against the paper's flat (band-passed correlation, spot dips), and
the measured dust flat with a user mask of the three spots.

Run:  python benchmarks/bench_kll.py [--quick] [--figure docs/_static/kll_xu2016.png]
"""

import argparse
import json
import time
import warnings

import numpy as np
from scipy import ndimage

from aiflat_astro.datasets.kll import make_kll_set
from aiflat_astro.evaluate import flat_errors
from aiflat_astro.flat.fullflat import full_flat


def simulated(shape, n_frames, max_offset, seed, level):
    s = make_kll_set(shape=shape, n_frames=n_frames, max_offset=max_offset, seed=seed, level=level)
    t0 = time.perf_counter()
    ff = full_flat(s.frames, mem_limit="2GB")
    dt = time.perf_counter() - t0
    reg = (ff.drift.shifts - ff.drift.shifts[0]) - (s.shifts - s.shifts[0])
    cover = ff.coverage >= 4
    rms, rms_plane = flat_errors(ff.gain, s.gain, cover)
    noise = float(np.sqrt(np.mean(ff.uncertainty[cover] ** 2)))
    ratio = ff.gain / s.gain
    dust = (s.transmission < 0.97) & cover
    rel = ratio / ndimage.median_filter(ratio, 25) - 1
    return {"shape": list(shape), "n_frames": n_frames, "max_offset": max_offset, "seed": seed,
            "level_e": level, "registration_err_px": round(float(np.abs(reg).max()), 3),
            "covered_ge4": round(float(cover.mean()), 3),
            "rms_err_pct": round(100 * rms, 4), "rms_err_plane_removed_pct": round(100 * rms_plane, 4),
            "noise_floor_pct": round(100 * noise, 4),
            "dust_err_pct": round(100 * float(np.sqrt(np.mean(rel[dust] ** 2))), 4),
            "dust_px": int(dust.sum()), "time_s": round(dt, 1)}


def real(figure=None):
    from aiflat_astro.datasets.real import load_xu2016, real_data_dir

    if real_data_dir("xu2016") is None:
        return None
    s = load_xu2016()
    t0 = time.perf_counter()
    ff = full_flat(s.frames)
    dt = time.perf_counter() - t0
    rel = ff.drift.shifts - ff.drift.shifts[0]
    readme = s.centroids - s.centroids[0]
    paper = np.maximum(s.paper_flat.astype(np.float64), 1.0)
    gain = ff.gain.astype(np.float64)
    area = ndimage.binary_erosion(ff.coverage >= 4, iterations=20) & (paper > 20)
    corr = {}
    for lo, hi in ((2, 16), (3, 30), (8, 100)):
        def bp(img, lo=lo, hi=hi):
            base = np.where(area, np.log(img), np.median(np.log(img[area])))
            return ndimage.gaussian_filter(base, lo) - ndimage.gaussian_filter(base, hi)
        corr[f"{lo}-{hi}px"] = round(float(np.corrcoef(bp(gain)[area], bp(paper)[area])[0, 1]), 3)

    def dips(img):
        out = []
        for y, x in s.spots.astype(int):
            sm = ndimage.gaussian_filter(img[y - 60:y + 61, x - 60:x + 61], 2)
            out.append(float(np.median(sm) - sm[50:71, 50:71].min()))
        return out

    # measured dust flat, user mask of the three spots
    import sys
    sys.path.insert(0, "tests")
    from test_measured_kll import spot_mask

    from aiflat_astro.detection.review import detection_from_mask
    from aiflat_astro.flat import make_flat

    median = np.median(s.frames, axis=0)
    det = detection_from_mask(spot_mask(s.paper_flat, s.spots), median)
    t1 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        flat = make_flat(median, det, inpaint="measured", frames=s.frames)
    info = json.loads(flat.meta["PROVJSON"])["inpaint_info"]
    out = {"offsets_px": [[round(float(a), 2), round(float(b), 2)] for a, b in rel],
           "readme_offsets_px": readme.tolist(),
           "full_flat": {"bin": ff.params["bin"], "time_s": round(dt, 1),
                         "covered_ge4": round(float(area.mean()), 3),
                         "bandpass_corr_with_paper": corr,
                         "spot_dips_ours": [round(v, 4) for v in dips(gain)],
                         "spot_dips_paper_dn": [round(v, 1) for v in dips(paper)]},
           "measured": {"flat_method": [r["flat_method"] for r in info["shadows"]],
                        "measured_depth": [r["measured_depth"] for r in info["shadows"]],
                        "time_s": round(time.perf_counter() - t1, 1)}}
    if figure:
        from matplotlib.figure import Figure
        from matplotlib.patches import Circle

        b = 4

        def binned(x):
            return x.reshape(x.shape[0] // b, b, x.shape[1] // b, b).mean((1, 3))

        fig = Figure(figsize=(9, 4.6), layout="constrained")
        axes = fig.subplots(1, 2)
        ours = np.where(ff.coverage >= 2, gain, np.nan)
        for ax, img, title in ((axes[0], ours, "aiflat full flat (robust KLL) of xu2016"),
                               (axes[1], np.where(paper > 1, paper, np.nan),
                                "the paper's flat hd61900f.jpg (Xu et al. 2016)")):
            ax.imshow(binned(img), cmap="gray", vmin=np.nanpercentile(img, 1),
                      vmax=np.nanpercentile(img, 99))
            for y, x in s.spots:
                ax.add_patch(Circle((x / b, y / b), 12, fill=False, color="r", lw=0.8))
            ax.set_title(title, fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
        fig.savefig(figure, dpi=60)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="512 px sensor, offsets to 200 px")
    ap.add_argument("--no-real", action="store_true")
    ap.add_argument("--figure", help="write the xu2016 comparison PNG there")
    ap.add_argument("--json", help="write the figures as JSON")
    ap.add_argument("--cases", default="16:80000,9:80000,16:400000",
                    help="simulated sets, n_frames:electrons at disc centre (default: %(default)s)")
    ap.add_argument("--no-sim", action="store_true")
    args = ap.parse_args()
    shape, max_offset = ((512, 512), 200) if args.quick else ((1024, 1024), 330)
    results = {"simulated": []}
    cases = [] if args.no_sim else [(int(c.split(":")[0]), float(c.split(":")[1]))
                                    for c in args.cases.split(",")]
    for n_frames, level in cases:
        r = simulated(shape, n_frames, max_offset, 3, level)
        results["simulated"].append(r)
        print(json.dumps(r))
    if not args.no_real:
        results["xu2016"] = real(args.figure)
        print(json.dumps(results["xu2016"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
