"""The HTML review report: content, bad input, and the round trip in a real headless browser.

The browser tests drive Debian's ``chromium`` with its ``chromium-driver`` through Selenium; they
skip with the reason when either is missing.  ``AIFLAT_SCREENSHOTS=DIR`` copies the screenshots
they take into ``DIR`` (the pictures of docs/review.rst were made that way).
"""

import json
import os
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table

from aiflat_astro.cli import main
from aiflat_astro.report import collect_report, write_report
from aiflat_astro.utils.exceptions import InputError

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver") or ("/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists()
                                                else None)


def _report_data(path):
    text = Path(path).read_text(encoding="utf-8")
    m = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', text, re.S)
    assert m, "no embedded report data"
    return json.loads(m.group(1).replace("<\\/", "</")), text


@pytest.fixture(scope="module")
def sim_run(tmp_path_factory):
    """A small simulated video and its ``aiflat run`` folder (report written by the run)."""
    base = tmp_path_factory.mktemp("report_sim")
    video = base / "sim.ser"
    assert main(["-q", "simulate", "-o", str(video), "--shape", "256x320", "--frames", "20", "--dust", "20",
                 "--seed", "3"]) == 0
    out = base / "out"
    assert main(["-q", "run", str(video), "-o", str(out)]) == 0
    return video, out


def test_run_writes_a_self_contained_report(sim_run):
    video, out = sim_run
    report = out / "report.html"
    assert report.is_file()
    data, text = _report_data(report)
    catalog = Table.read(out / "dust.ecsv", format="ascii.ecsv")
    assert len(data["shadows"]) == len(catalog) > 0
    assert sorted(s["id"] for s in data["shadows"]) == sorted(int(i) for i in catalog["id"])
    # REVIEW shadows first
    flags = [s["review"] for s in data["shadows"]]
    assert flags == sorted(flags, reverse=True)
    # nothing fetched from anywhere: every image is a data URI, no external script, style or link
    markup = re.sub(r"<script.*?</script>", "", text, flags=re.S)
    assert "<script" in text and not re.search(r"<script[^>]*\bsrc=", text)
    assert not re.search(r'(src|href)="(?!data:)', markup)
    assert "<link" not in text and "@import" not in text
    assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", text)
    assert data["overview"]["src"].startswith("data:image/png;base64,")
    assert {layer["name"] for layer in data["overview"]["layers"]} >= {"DUST", "DUST_HALO"}
    # headline numbers: the residual against the simulation's truth, the time of every step
    assert data["headline"]["residual"]["truth"] == "sim_truth.fits"
    assert 0 <= data["headline"]["residual"]["residual_ratio"] < 1
    assert set(data["headline"]["seconds"]) == {"median", "mask", "flat", "apply"}
    prov = data["provenance"]
    assert prov["detector"] == "local" and prov["inpaint"] == "local"
    assert {f["name"] for f in prov["files"] if f["what"] == "product"} >= {"median.fits", "mask.fits", "flat.fits"}
    s = data["shadows"][0]
    assert s["flat_method"].startswith("local") and s["thumb"] and "flat" in s["profile"]
    # the calibrated radial profile is flatter than the observed dip
    deepest = max(data["shadows"], key=lambda s: s["depth"])
    obs = [v for v in deepest["profile"]["observed"] if v is not None]
    cal = [v for v in deepest["profile"]["calibrated"] if v is not None]
    assert np.ptp(cal) < np.ptp(obs)


def test_report_command(sim_run, tmp_path, capsys):
    _, out = sim_run
    other = tmp_path / "mine.html"
    assert main(["report", str(out), "-o", str(other)]) == 0
    assert "report:" in capsys.readouterr().out
    assert _report_data(other)[0]["title"] == "out"
    # an aiflat report is replaced without --overwrite, any other file is not
    assert main(["report", str(out), "-o", str(other)]) == 0
    foreign = tmp_path / "notes.html"
    foreign.write_text("<html>my notes</html>")
    assert main(["report", str(out), "-o", str(foreign)]) == 1
    assert "not an aiflat report" in capsys.readouterr().err
    assert foreign.read_text() == "<html>my notes</html>"
    assert main(["report", str(out), "-o", str(foreign), "--overwrite"]) == 0


def test_not_an_output_folder(tmp_path, capsys):
    with pytest.raises(InputError, match="not an aiflat output folder"):
        collect_report(tmp_path)
    with pytest.raises(InputError, match="is not a folder"):
        write_report(tmp_path / "nowhere")
    (tmp_path / "median.fits").write_bytes(b"not fits")
    assert main(["report", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "mask.fits missing" in err


@pytest.mark.slow  # a second run of the pipeline (2.5 s)
def test_no_report_option(sim_run):
    video, out = sim_run
    report = out / "report.html"
    keep = report.read_bytes()
    report.unlink()
    try:
        assert main(["-q", "run", str(video), "-o", str(out), "--no-report"]) == 0
        assert not report.exists()
    finally:
        report.write_bytes(keep)


def test_review_file_with_both_edits(tmp_path):
    """One review.reg goes to both options: tagged regions are used by the option they belong to."""
    from aiflat_astro.detection import DustDetection, apply_region_edits, catalog_from_mask

    dq = np.zeros((40, 40), np.uint8)
    dq[5:9, 5:9] = 1
    dq[20:24, 20:24] = 1
    det = DustDetection(dq=dq, weight=dq.astype(np.float32), catalog=catalog_from_mask(dq))
    reg = tmp_path / "review.reg"
    reg.write_text("# Region file format: DS9 version 4.1\nimage\n"
                   "circle(7.5,7.5,2) # color=red text={reject 1} tag={reject}\n"
                   "circle(33,9,3) # color=cyan text={add 1} tag={include}\n")
    new = apply_region_edits(det, np.ones((40, 40)), exclude=reg, include=reg)
    assert sorted(int(i) for i in new.catalog["id"]) == [2, 3]
    assert not new.dust_mask[6, 6] and new.dust_mask[8, 32] and new.dust_mask[21, 21]


# ------------------------------------------------------------------------------------------
# the real thing: a headless browser
# ------------------------------------------------------------------------------------------
@pytest.fixture
def browser(tmp_path):
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip("no headless browser: install Debian's chromium and chromium-driver "
                    "(apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
    from selenium.webdriver.chrome.service import Service

    downloads = tmp_path / "downloads"
    downloads.mkdir()
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1280,900",
                f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        opts.add_argument(arg)
    opts.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                           "download.prompt_for_download": False,
                                           "profile.default_content_setting_values.automatic_downloads": 1})
    driver = webdriver.Chrome(options=opts, service=Service(CHROMEDRIVER))
    driver.downloads = downloads
    try:
        yield driver
    finally:
        driver.quit()


def _screenshot(driver, path):
    driver.save_screenshot(str(path))
    target = os.environ.get("AIFLAT_SCREENSHOTS")
    if target:
        from PIL import Image

        with Image.open(path) as im:  # small PNGs for the docs: a palette of 256 colours
            im.convert("RGB").quantize(256).save(Path(target) / path.name, optimize=True)


def _open(driver, path):
    from selenium.webdriver.support.ui import WebDriverWait

    t0 = time.perf_counter()
    driver.get(path.resolve().as_uri())
    WebDriverWait(driver, 30).until(lambda d: d.execute_script("return document.body.dataset.ready") == "1")
    return time.perf_counter() - t0


def _image_offset(driver, x, y):
    """Offset of image pixel (x, y) from the viewer's centre in screen pixels, and the zoom."""
    return driver.execute_script(
        "var v = document.getElementById('viewer').getBoundingClientRect(),"
        " s = document.getElementById('stage').getBoundingClientRect(),"
        " k = s.width / JSON.parse(document.getElementById('report-data').textContent).overview.width;"
        " return [s.left + (arguments[0] + 0.5) * k - (v.left + v.width / 2),"
        "         s.top + (arguments[1] + 0.5) * k - (v.top + v.height / 2), k];", x, y)


def _click_image(driver, x, y):
    """Zoom in with the mouse wheel over image pixel (x, y) (0-based, rows top-down), then click it.

    Returns the zoom (screen pixels per image pixel) at the click.
    """
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.actions.wheel_input import ScrollOrigin
    from selenium.webdriver.common.by import By

    viewer = driver.find_element(By.ID, "viewer")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", viewer)
    for _ in range(10):
        ox, oy, k = _image_offset(driver, x, y)
        if k >= 3:
            break
        ActionChains(driver).scroll_from_origin(ScrollOrigin.from_element(viewer, int(round(ox)), int(round(oy))),
                                                0, -400).perform()
    ox, oy, k = _image_offset(driver, x, y)
    ActionChains(driver).move_to_element_with_offset(viewer, int(round(ox)), int(round(oy))).click().perform()
    return k


def _wait_files(folder, names, timeout=20):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if all((folder / n).is_file() for n in names) and not list(folder.glob("*.crdownload")):
            return
        time.sleep(0.1)
    raise AssertionError(f"the browser did not save {names} into {folder}: {os.listdir(folder)}")


def _empty_spot(out, catalog):
    """A pixel on the bright disc, far from every shadow and every masked pixel."""
    from scipy import ndimage

    from aiflat_astro.io.fits import read_mask, read_median

    median = read_median(out / "median.fits").data
    dq = read_mask(out / "mask.fits").dq
    far = ndimage.distance_transform_edt(dq == 0) > 25
    yy, xx = np.mgrid[:median.shape[0], :median.shape[1]]
    ok = far & (median > np.percentile(median, 60)) & (yy > 20) & (xx > 20) & \
        (yy < median.shape[0] - 20) & (xx < median.shape[1] - 20)
    assert ok.any(), "no empty spot to add a shadow at"
    iy, ix = np.argwhere(ok)[len(np.argwhere(ok)) // 2]
    return float(ix), float(iy)


def _review_round_trip(driver, out, shots):
    """Reject two shadows, accept one, add one by clicking, Export; return what was done."""
    from selenium.webdriver.common.by import By

    catalog = Table.read(out / "dust.ecsv", format="ascii.ecsv")
    ids = [int(i) for i in catalog["id"]]
    assert len(ids) >= 3, "the run found too few shadows to test the review"
    seconds = _open(driver, out / "report.html")
    _screenshot(driver, shots / "review_overview.png")
    reject = ids[:2]
    for sid in reject:
        driver.find_element(By.CSS_SELECTOR, f"#card-{sid} button[data-act=reject]").click()
    accept = [i for i in ids if i not in reject][0]
    driver.find_element(By.CSS_SELECTOR, f"#card-{accept} button[data-act=accept]").click()
    x, y = _empty_spot(out, catalog)
    driver.find_element(By.ID, "add-mode").click()
    zoom = _click_image(driver, x, y)
    assert zoom >= 3, "the mouse wheel did not zoom in"
    counts = " ".join(driver.execute_script("return document.getElementById('counts').textContent").split())
    assert "2 rejected" in counts and "1 added" in counts and "1 accepted" in counts, counts
    driver.execute_script("document.getElementById('card-%d').scrollIntoView({block: 'center'})" % reject[0])
    _screenshot(driver, shots / "review_gallery.png")
    driver.find_element(By.ID, "export").click()
    _wait_files(driver.downloads, ["review.reg", "review.json"])
    driver.execute_script("document.getElementById('export-section').scrollIntoView({block: 'center'})")
    _screenshot(driver, shots / "review_export.png")
    errors = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
    assert errors == [], errors
    reg = driver.downloads / "review.reg"
    decisions = json.loads((driver.downloads / "review.json").read_text())
    assert sorted(d["id"] for d in decisions["rejected"]) == sorted(reject)
    assert [d["id"] for d in decisions["accepted"]] == [accept]
    (added,) = decisions["added"]
    assert abs(added["x"] - x) < 1.0 and abs(added["y"] - y) < 1.0
    assert reg.read_text().count("tag={reject}") == 2 and reg.read_text().count("tag={include}") == 1
    return reg, reject, (x, y), ids, seconds


def _rerun_and_check(video, work, reg, reject, xy, ids, *, extra=(), redone=("mask", "flat", "apply")):
    """``aiflat run`` with the exported file drops exactly the rejected shadows and adds the new one."""
    x, y = xy
    args = ["-q", "run", str(video), "-o", str(work), "--exclude-regions", str(reg), "--include-regions", str(reg),
            *extra]
    assert main(args) == 0
    state = json.loads((work / "aiflat_run.json").read_text())["last_run"]
    assert state["reused"] == ["median"] and state["computed"] == list(redone)
    new = Table.read(work / "dust.ecsv", format="ascii.ecsv")
    new_ids = [int(i) for i in new["id"]]
    kept = sorted(set(ids) - set(reject))
    assert sorted(i for i in new_ids if i in ids) == kept  # exactly the two rejected ones gone
    added = [row for row in new if int(row["id"]) not in ids]
    assert len(added) == 1 and added[0]["method"] == "include-region"
    assert abs(added[0]["x_centroid"] - x) < 1.5 and abs(added[0]["y_centroid"] - y) < 1.5
    # and the new report shows the new mask
    data, _ = _report_data(work / "report.html")
    assert sorted(s["id"] for s in data["shadows"]) == sorted(new_ids)
    # the same file again: nothing to redo
    assert main(args) == 0
    assert json.loads((work / "aiflat_run.json").read_text())["last_run"]["computed"] == []


@pytest.mark.slow
def test_browser_review_loop(sim_run, browser, tmp_path):
    """Open the report, reject two shadows, add one, Export; the rerun drops and adds exactly those."""
    video, out = sim_run
    work = tmp_path / "run"
    shutil.copytree(out, work)  # copy2 keeps the products' identity: the rerun reuses what it can
    reg, reject, xy, ids, _ = _review_round_trip(browser, work, tmp_path)
    saved = tmp_path / "review.reg"
    shutil.copy(reg, saved)
    _rerun_and_check(video, work, saved, reject, xy, ids)
    # an edited review file redoes the mask again
    lines = saved.read_text().splitlines()
    first = next(i for i, line in enumerate(lines) if "tag={reject}" in line)
    saved.write_text("\n".join(lines[:first] + lines[first + 1:]) + "\n")  # one reject taken back
    assert main(["-q", "run", str(video), "-o", str(work), "--exclude-regions", str(saved),
                 "--include-regions", str(saved)]) == 0
    new = Table.read(work / "dust.ecsv", format="ascii.ecsv")
    assert len(set(ids) & {int(i) for i in new["id"]}) == len(ids) - 1


@pytest.mark.slow
def test_browser_review_xu2016(xu2016, browser, tmp_path):
    """The real xu2016 drift set: a FITS cube of its frames, run, report, review in the browser."""
    from astropy.io import fits

    cube = tmp_path / "xu2016.fits"
    fits.PrimaryHDU(np.asarray(xu2016.frames, dtype=np.float32)).writeto(cube)
    out = tmp_path / "out"
    assert main(["-q", "run", str(cube), "-o", str(out), "--no-apply"]) == 0
    data, _ = _report_data(out / "report.html")
    assert data["overview"]["width"] == xu2016.frames.shape[2]
    if len(data["shadows"]) < 3:
        pytest.skip(f"the current detector finds {len(data['shadows'])} shadows in xu2016: too few to review")
    reg, reject, xy, ids, seconds = _review_round_trip(browser, out, tmp_path)
    assert seconds < 10
    _rerun_and_check(cube, out, reg, reject, xy, ids, extra=["--no-apply"], redone=("mask", "flat"))


@pytest.mark.slow
def test_demo_writes_the_report(tmp_path, monkeypatch, capsys):
    """``aiflat demo``, the first thing a new user types, ends with the report and says where it is."""
    from aiflat_astro._commands import demo

    monkeypatch.setattr(demo, "DEMO_SIMULATION", {**demo.DEMO_SIMULATION, "shape": (128, 160), "n_frames": 16,
                                                  "n_dust": 4})
    assert main(["demo", str(tmp_path / "d")]) == 0  # not -q: it silences the result lines
    text = capsys.readouterr().out
    assert f"open {tmp_path / 'd' / 'report.html'} in a browser" in text
    data, _ = _report_data(tmp_path / "d" / "report.html")
    assert data["headline"]["residual"]["truth"] == demo.DEMO_TRUTH


def test_drift_plot_and_ai_provenance(sim_run, tmp_path):
    """The drift plot of a measured flat is shown; the model and prompt of an AI eye are listed."""
    from matplotlib.figure import Figure

    from aiflat_astro.io.fits import read_mask, write_mask

    _, out = sim_run
    work = tmp_path / "out"
    shutil.copytree(out, work)
    fig = Figure(figsize=(2, 1))
    fig.add_subplot().plot([0, 1], [0, 1])
    fig.savefig(work / "drift.png")
    det = read_mask(work / "mask.fits")
    det.provenance.update(ai_model="gemini-test-model", ai_prompt="Find the dust shadows.", prompt_sha256="ab" * 32)
    write_mask(work / "mask.fits", det, overwrite=True)
    data, _ = _report_data(write_report(work))
    assert data["figures"]["drift"].startswith("data:image/png;base64,")
    ai = data["provenance"]["ai"]
    assert ai["ai_model"] == "gemini-test-model" and ai["ai_prompt"] == "Find the dust shadows."
    assert "drift" not in _report_data(out / "report.html")[0]["figures"]


def test_no_shadow_and_no_flat(tmp_path):
    """A folder after detection only, with nothing found: the report still opens (add-a-shadow only)."""
    from astropy.nddata import CCDData

    from aiflat_astro.detection import DustDetection
    from aiflat_astro.products import empty_catalog
    from aiflat_astro.io.fits import write_mask

    img = np.random.default_rng(0).normal(1000, 10, (40, 50)).astype(np.float32)
    CCDData(img, unit="adu").write(tmp_path / "median.fits", checksum=True)
    write_mask(tmp_path / "mask.fits", DustDetection(dq=np.zeros(img.shape, np.uint8),
                                                     weight=np.zeros(img.shape, np.float32), catalog=empty_catalog()))
    data, text = _report_data(write_report(tmp_path))
    assert data["shadows"] == [] and data["overview"]["layers"] == [] and data["headline"]["residual"] is None
    assert data["provenance"]["inpaint"] == "" and "The detector found no shadow" in text
