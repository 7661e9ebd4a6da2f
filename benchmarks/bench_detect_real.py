"""The local dust detector on real data, and its speed (prints the figures; writes a preview PNG).

Run by hand (not a test), from the project root::

    python benchmarks/bench_detect_real.py              # all figures
    python benchmarks/bench_detect_real.py --quick      # one proxy seed, no 60-frame timing

* xu2016 (shared/data/real): the nine real H-alpha frames (disc moved by up to ~330 px), three
  clear dust spots; shadows not confirmed by the paper's own flat (a dip < 3 %) count as false.
  The set's single noisy dark is subtracted median-filtered (see tests/test_detect_real.py).
  Writes docs/_static/detect_xu2016.png: the sensor-fixed median with the shadows found.
* ccdproc/a8280271.fits: a real dust-free star field (trimmed per TRIMSEC): shadows = false.
* Realistic proxy (tests/_realdust.py): real xu2016 texture brought to a median's roughness,
  dust drawn from the real statistics, a ~200 px umbra; 1200x1920; recall, precision, on-umbra;
  the notes' 15-line baseline (25 px median filter, k = 8, A = 4, grown 2 px) on the same images.
* Speed: the proxy median alone (1200x1920), and a simulated 60-frame 960x1280 video with frames.
"""

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def baseline(image, valid):
    """The notes' simple method: 25 px median background, k = 8 MAD sigma, >= 4 px, grown 2 px."""
    bg = ndimage.median_filter(image, 25)
    dk = np.where(valid, 1 - image / np.maximum(bg, 1e-3), 0)
    sig = 1.4826 * np.median(np.abs(dk[valid] - np.median(dk[valid])))
    lab, _ = ndimage.label(dk > 8 * sig)
    sizes = np.bincount(lab.ravel())
    keep = np.flatnonzero(sizes >= 4)
    lab = np.where(np.isin(lab, keep[keep > 0]), lab, 0)
    return ndimage.grey_dilation(lab, size=5)


def xu2016_figures(preview):
    from aiflat_astro.datasets.real import load_xu2016
    from aiflat_astro.detection import LocalDustDetector

    s = load_xu2016(dark_subtract=False)
    frames = (s.frames - ndimage.median_filter(s.dark, 9)).astype(np.float32)
    median = np.median(frames, axis=0)
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        det = LocalDustDetector()(median, frames=frames)
    seconds = time.perf_counter() - t
    cat = det.catalog
    found = [bool(np.hypot(cat["y_centroid"] - r, cat["x_centroid"] - c).min() < 5) for r, c in s.spots]
    fl = s.paper_flat
    false = 0
    for row in cat:
        r, c = int(round(row["y_centroid"])), int(round(row["x_centroid"]))
        rad = int(max(3, row["equivalent_diameter"] / 2))
        dip = 1 - fl[r - rad:r + rad + 1, c - rad:c + rad + 1] / np.median(fl[r - 40:r + 41, c - 40:c + 41])
        false += float(np.percentile(dip, 95)) < 0.03
    if preview:
        write_preview(median, det)
    return {"spots_found": int(sum(found)), "n_shadows": int(len(cat)), "n_unconfirmed": int(false),
            "seconds": round(seconds, 1), "motion": det.provenance.get("motion")}


def write_preview(median, det):
    """A small PNG of the median (binned by 4) with the shadows found circled."""
    from PIL import Image, ImageDraw

    small = median[::4, ::4]
    lo, hi = np.percentile(small[small > 10], [1, 99.5])
    grey = np.clip((small - lo) / (hi - lo) * 255, 0, 255).astype(np.uint8)
    im = Image.fromarray(grey).convert("RGB")
    draw = ImageDraw.Draw(im)
    for row in det.catalog:
        x, y, r = row["x_centroid"] / 4, row["y_centroid"] / 4, max(6, row["equivalent_diameter"] / 4 + 4)
        draw.ellipse([x - r, y - r, x + r, y + r], outline=(255, 60, 60), width=2)
    out = ROOT / "docs" / "_static" / "detect_xu2016.png"
    im.save(out, optimize=True)
    return out


def star_field_figures():
    from astropy.io import fits

    from aiflat_astro.datasets.real import real_data_dir
    from aiflat_astro.detection import LocalDustDetector

    data = fits.getdata(real_data_dir("ccdproc", "a8280271.fits")).astype(np.float32)[0:520, 16:528]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        det = LocalDustDetector()(data)
    return {"n_shadows": int(len(det.catalog))}


def proxy_figures(cases):
    from _realdust import make_proxy, matched_texture, score_detection

    from aiflat_astro.datasets.real import load_xu2016
    from aiflat_astro.detection import LocalDustDetector

    s = load_xu2016(dark_subtract=False)
    out = []
    for frame_index, seed in cases:
        frame = s.frames[frame_index] - ndimage.median_filter(s.dark, 9)
        cy, cx = s.centroids[frame_index].astype(int)
        r0, c0 = int(np.clip(cy - 600, 0, 2032 - 1200)), int(np.clip(cx - 960, 0, 2032 - 1920))
        scene = np.clip(frame[r0:r0 + 1200, c0:c0 + 1920], 0, None)
        disc = ndimage.gaussian_filter(scene, 3) > 0.3 * np.percentile(scene, 99)
        spots = [(y - r0, x - c0) for y, x in s.spots if 0 <= y - r0 < 1200 and 0 <= x - c0 < 1920]
        image, truth, umbra = make_proxy(matched_texture(scene, disc), disc, np.random.default_rng(seed),
                                         umbra_at=(cy - r0 + 150, cx - c0 - 300), spots=spots)
        t = time.perf_counter()
        det = LocalDustDetector()(image)
        seconds = time.perf_counter() - t
        res = score_detection(det.labels, truth, umbra)
        res["seconds"] = round(seconds, 2)
        res["baseline"] = score_detection(baseline(image, disc), truth, umbra)
        out.append({"frame": frame_index, "seed": seed, **res})
    return out


def video_speed():
    from aiflat_astro.combine import median_combine
    from aiflat_astro.datasets import make_dusty_video
    from aiflat_astro.detection import LocalDustDetector

    with tempfile.TemporaryDirectory() as d, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = Path(d) / "v.ser"
        make_dusty_video(path, shape=(960, 1280), n_frames=60, seed=7, drift=20.0)
        median = median_combine(path).data
        out = {}
        for name, options in (("default_24_frames", {}), ("max_frames_60", {"max_frames": 60})):
            t, c = time.perf_counter(), time.process_time()
            LocalDustDetector(**options)(median, frames=path)
            out[name] = {"wall_s": round(time.perf_counter() - t, 2),
                         "cpu_s": round(time.process_time() - c, 2)}
        return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    # held out (frame, dust seed): 0-3 since the first round (3 partly looked at in the fourth),
    # 4-7 since the fifth; development used frames 1, 3, 5, 6, 8 with seeds 501-505
    cases = [(0, 0)] if args.quick else [(0, 0), (4, 1), (7, 2), (2, 3), (0, 4), (4, 5), (7, 6), (2, 7)]
    results = {"xu2016": xu2016_figures(preview=True), "star_field": star_field_figures(),
               "proxy": proxy_figures(cases)}
    if not args.quick:
        results["video_60x960x1280_seconds"] = video_speed()
    print(json.dumps(results, indent=1, default=str))
    return results


if __name__ == "__main__":
    main()
