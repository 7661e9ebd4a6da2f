"""The review report with 1,000 shadows: time to write it, file size, time to open and scroll it.

A 2048x2048 synthetic median (granulation-like texture) with 1,000 Gaussian dust shadows is
written as an aiflat output folder (median, mask from the true shadows, local flat, catalog),
then ``write_report`` makes ``report.html``.  With Debian's chromium and chromium-driver and
Selenium installed, the report is opened headless and the gallery scrolled from top to bottom.

    python benchmarks/bench_report.py [--n 1000] [--keep DIR]
"""

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


def make_folder(outdir, n, *, size=2048, seed=1):
    from astropy.nddata import CCDData
    from scipy import ndimage

    from aiflat_astro.detection import DustDetection, write_catalog
    from aiflat_astro.detection._base import empty_catalog
    from aiflat_astro.flat import make_flat
    from aiflat_astro.io.fits import write_flat, write_mask

    rng = np.random.default_rng(seed)
    scene = 3000 + 120 * ndimage.gaussian_filter(rng.normal(size=(size, size)), 2.0) * 6
    yy, xx = np.mgrid[:size, :size]
    trans = np.ones((size, size))
    mask = np.zeros((size, size), bool)
    cx = rng.uniform(30, size - 30, n)
    cy = rng.uniform(30, size - 30, n)
    sig = rng.uniform(1.5, 5, n)
    depth = rng.uniform(0.05, 0.4, n)
    for x, y, s, d in zip(cx, cy, sig, depth):
        r = int(4 * s) + 2
        sl = np.s_[int(y) - r:int(y) + r + 1, int(x) - r:int(x) + r + 1]
        g = np.exp(-((yy[sl] - y) ** 2 + (xx[sl] - x) ** 2) / (2 * s**2))
        trans[sl] *= 1 - d * g
        mask[sl] |= g > 0.3
    median = (scene * trans + rng.normal(0, 5, (size, size))).astype(np.float32)
    # the catalog straight from the truth (catalog_from_mask measures each shadow on the whole image)
    labels, k = ndimage.label(mask, structure=np.ones((3, 3), bool))
    ids = np.arange(1, k + 1)
    area = ndimage.sum_labels(np.ones_like(mask), labels, ids)
    com = np.array(ndimage.center_of_mass(mask, labels, ids)).reshape(-1, 2)
    low = ndimage.minimum(trans, labels, ids)
    catalog = empty_catalog()
    for i in range(k):
        row = {"id": int(ids[i]), "x_centroid": com[i, 1], "y_centroid": com[i, 0], "area": float(area[i]),
               "equivalent_diameter": float(np.sqrt(4 * area[i] / np.pi)), "depth": 1 - float(low[i]),
               "confidence": float(rng.uniform(0.3, 1)), "review": bool(rng.uniform() < 0.1),
               "method": "synthetic"}
        catalog.add_row([row[c] for c in catalog.colnames])
    det = DustDetection(dq=mask.astype(np.uint8), weight=mask.astype(np.float32), catalog=catalog,
                        detector="synthetic", labels=labels).expanded()
    write_mask(outdir / "mask.fits", det, overwrite=True)
    CCDData(median, unit="adu").write(outdir / "median.fits", overwrite=True, checksum=True)
    t0 = time.perf_counter()
    flat = make_flat(CCDData(median, unit="adu"), det)
    print(f"make_flat: {time.perf_counter() - t0:.0f} s", flush=True)
    write_flat(outdir / "flat.fits", flat, overwrite=True)
    write_catalog(outdir / "dust.ecsv", det, overwrite=True)
    return len(catalog)


def browse(report):
    import shutil as sh

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    opts = webdriver.ChromeOptions()
    opts.binary_location = sh.which("chromium")
    profile = tempfile.mkdtemp()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1280,900",
                f"--user-data-dir={profile}"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(options=opts, service=Service(sh.which("chromedriver")))
    try:
        t0 = time.perf_counter()
        driver.get(Path(report).resolve().as_uri())
        WebDriverWait(driver, 120).until(lambda d: d.execute_script("return document.body.dataset.ready") == "1")
        t_open = time.perf_counter() - t0
        # scroll the whole gallery in screen-sized steps; per step: time until two frames were painted
        driver.set_script_timeout(120)
        steps = driver.execute_async_script("""
            var done = arguments[arguments.length - 1], out = [];
            function step(y) {
              if (y > document.body.scrollHeight) { done(out); return; }
              var t = performance.now();
              window.scrollTo(0, y);
              requestAnimationFrame(function () { requestAnimationFrame(function () {
                out.push(performance.now() - t); step(y + window.innerHeight); }); });
            }
            step(0);""")
        time.sleep(1)
        shown = driver.execute_script("return document.querySelectorAll('.card[data-shown]').length")
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
    return t_open, steps, shown


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1060,
                    help="shadows drawn (default 1060: about 1,000 once overlapping ones merge)")
    ap.add_argument("--keep", metavar="DIR", help="keep the folder here")
    args = ap.parse_args()
    from aiflat_astro.report import write_report

    outdir = Path(args.keep) if args.keep else Path(tempfile.mkdtemp())
    outdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if args.keep and (outdir / "flat.fits").is_file():  # a kept folder is reused
        from astropy.table import Table

        n = len(Table.read(outdir / "dust.ecsv", format="ascii.ecsv"))
    else:
        n = make_folder(outdir, args.n)
    t_make = time.perf_counter() - t0
    t0 = time.perf_counter()
    report = write_report(outdir)
    t_report = time.perf_counter() - t0
    result = {"shadows": n, "make_folder_s": round(t_make, 1), "write_report_s": round(t_report, 1),
              "report_MB": round(report.stat().st_size / 1e6, 2)}
    if shutil.which("chromium") and shutil.which("chromedriver"):
        t_open, steps, shown = browse(report)
        result.update(open_s=round(t_open, 2), scroll_steps=len(steps),
                      scroll_step_ms_median=round(float(np.median(steps)), 1),
                      scroll_step_ms_max=round(float(np.max(steps)), 1), cards_rendered=shown)
    print(json.dumps(result, indent=1))
    if not args.keep:
        shutil.rmtree(outdir, ignore_errors=True)


if __name__ == "__main__":
    main()
