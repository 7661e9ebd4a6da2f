"""Tests of ``aiflat detect`` and ``aiflat evaluate`` on a small simulated video."""

import json

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from regions import CirclePixelRegion, PixCoord, Regions

from aiflat_astro.cli import main
from aiflat_astro.datasets import make_dusty_video


@pytest.fixture(scope="module", name="sim")
def fixture_sim(tmp_path_factory):
    """A 160x200 solar video with 6 shadows, its truth, and its median."""
    d = tmp_path_factory.mktemp("detectcli")
    video, truth = d / "sun.ser", d / "truth.fits"
    make_dusty_video(video, shape=(160, 200), n_frames=24, n_dust=6, seed=4, truth_path=truth,
                     regime="solar-soft")
    median = d / "median.fits"
    assert main(["median", str(video), "-o", str(median)]) == 0
    return video, truth, median


def _one_error_line(capsys, command):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"aiflat {command}: error: ")
    return err


@pytest.mark.slow
def test_detect_all_outputs_and_evaluate(tmp_path, sim, capsys):
    video, truth, median = sim
    out = {k: tmp_path / f"dust.{k}" for k in ("fits", "ecsv", "reg", "png")}
    args = ["detect", str(median), "-o", str(out["fits"]), "--frames", str(video), "--f-ratio", "30",
            "--pixel-size", "3.75", "--catalog", str(out["ecsv"]), "--regions", str(out["reg"]),
            "--preview", str(out["png"])]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "dust shadows" in text and "distance=" in text
    for path in out.values():
        assert path.stat().st_size > 0
    with fits.open(out["fits"]) as hdul:
        assert hdul[0].header["PROV1"] == "median.fits" and len(hdul[0].header["PROVSHA1"]) == 64
        assert hdul[0].header["NFRMOT"] > 0      # the motion test used the frames
    cat = Table.read(out["ecsv"])
    assert len(cat) >= 4 and "distance_mm" in cat.colnames
    # refuses to overwrite, then does with --overwrite
    assert main(args) == 1
    assert "exists" in _one_error_line(capsys, "detect")
    assert main(args + ["--overwrite"]) == 0
    capsys.readouterr()
    # evaluate: text and JSON
    assert main(["evaluate", str(out["fits"]), str(truth)]) == 0
    assert "recall" in capsys.readouterr().out
    assert main(["evaluate", str(out["fits"]), str(truth), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["product"] == "mask" and result["n_true"] == 6
    # 4 of 6: the two missed are faint (6-8 % deep) in granulation, where the motion test sees the
    # texture move with the template (beta 0.6).  The 5 of 6 measured before came from disc-centroid
    # offsets of a corner of the limb that were wrong by ~15 px (and gave 2 false shadows).
    assert result["recall"] >= 4 / 6


def test_detect_no_false_shadow_old_scenario(tmp_path, sim, capsys):
    video, truth, median = sim
    assert main(["detect", str(median), "-o", str(tmp_path / "m.fits"), "--frames", str(video)]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "m.fits"), str(truth), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n_false"] == 0


def test_detect_review_loop(tmp_path, sim, capsys):
    _, _, median = sim
    first = tmp_path / "m1.fits"
    assert main(["detect", str(median), "-o", str(first)]) == 0
    capsys.readouterr()
    from aiflat_astro.io.fits import read_mask

    det = read_mask(first)
    row = det.catalog[0]
    ex = tmp_path / "ex.reg"
    Regions([CirclePixelRegion(PixCoord(row["x_centroid"], row["y_centroid"]), 3)]).write(str(ex), format="ds9")
    second = tmp_path / "m2.fits"
    assert main(["detect", str(median), "-o", str(second), "--exclude-regions", str(ex)]) == 0
    assert len(read_mask(second).catalog) == len(det.catalog) - 1
    user = tmp_path / "user.fits"
    mask = np.zeros(det.shape, np.uint8)
    mask[5:9, 5:9] = 1
    fits.PrimaryHDU(mask).writeto(user)
    third = tmp_path / "m3.fits"
    assert main(["detect", str(median), "-o", str(third), "--user-mask", str(user)]) == 0
    assert "user: 1 dust shadows" in capsys.readouterr().out
    assert read_mask(third).detector == "user"


def test_detect_errors(tmp_path, sim, capsys):
    video, truth, median = sim
    assert main(["detect", str(tmp_path / "missing.fits"), "-o", str(tmp_path / "m.fits")]) == 1
    _one_error_line(capsys, "detect")
    assert main(["detect", str(median), "-o", str(tmp_path / "m.fits"), "--f-ratio", "-3"]) == 2
    capsys.readouterr()
    small = tmp_path / "small.fits"
    fits.PrimaryHDU(np.ones((40, 40), np.float32)).writeto(small)
    assert main(["detect", str(small), "-o", str(tmp_path / "m.fits"), "--frames", str(video)]) == 1
    assert "do not match" in _one_error_line(capsys, "detect")
    assert main(["evaluate", str(median), str(truth)]) == 1
    assert "neither an aiflat mask nor an aiflat flat" in _one_error_line(capsys, "evaluate")
