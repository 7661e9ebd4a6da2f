"""Command-line tests of aiflat flat, apply, run, demo (and evaluate on a flat)."""

import json
import time
import warnings

import numpy as np
import pytest
from astropy.io import fits

from aiflat_astro.cli import main
from aiflat_astro.io import SERReader
from aiflat_astro.io.fits import read_flat


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    """A small simulated dusty video and its truth."""
    from aiflat_astro.datasets import make_dusty_video

    d = tmp_path_factory.mktemp("video")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        truth = make_dusty_video(d / "sun.ser", shape=(128, 160), n_frames=16, n_dust=4, seed=3, regime="solar-soft",
                                 truth_path=d / "truth.fits")
    return d / "sun.ser", d / "truth.fits", truth


@pytest.fixture(scope="module")
def median_and_mask(video, tmp_path_factory):
    from aiflat_astro.combine import median_combine
    from aiflat_astro.detection import DustDetection, empty_catalog
    from aiflat_astro.dq import DustDQ, expand_mask
    from aiflat_astro.io.fits import write_mask

    path, _, truth = video
    d = tmp_path_factory.mktemp("products")
    median = median_combine(path)
    median.to_hdu(hdu_mask=None, hdu_uncertainty=None, hdu_flags=None).writeto(d / "median.fits", checksum=True)
    dust = truth.labels > 0
    weight, halo = expand_mask(dust)
    dq = np.where(dust, DustDQ.DUST, 0).astype(np.uint8) | np.where(halo, DustDQ.DUST_HALO, 0).astype(np.uint8)
    write_mask(d / "mask.fits", DustDetection(dq=dq, weight=weight, catalog=empty_catalog()))
    return d / "median.fits", d / "mask.fits"


@pytest.mark.slow
def test_flat_command_with_exports(median_and_mask, video, tmp_path, capsys):
    median, mask = median_and_mask
    out = tmp_path / "flat.fits"
    rc = main(["flat", str(median), "--mask", str(mask), "-o", str(out), "--video", str(video[0]),
               "--tiff", str(tmp_path / "flat.tif"), "--tiff-float", "--asdf", str(tmp_path / "flat.asdf")])
    assert rc == 0
    assert "flat (local, profile radial)" in capsys.readouterr().out
    flat = read_flat(out)
    assert flat.uncertainty is not None
    assert (tmp_path / "flat.tif").exists() and (tmp_path / "flat.asdf").exists()
    with fits.open(out) as hdul:
        assert hdul[0].header["PROV1"] == "sun.ser" and hdul[0].header["INPAINT"] == "local"
    # refuses to overwrite, then does with --overwrite
    assert main(["flat", str(median), "--mask", str(mask), "-o", str(out)]) == 1
    assert "exists" in capsys.readouterr().err
    assert main(["flat", str(median), "--mask", str(mask), "-o", str(out), "--overwrite", "--floor", "0.1"]) == 0
    assert read_flat(out).meta["FLOOR"] == 0.1


def test_flat_command_master_flat(median_and_mask, tmp_path):
    median, mask = median_and_mask
    master = np.full((128, 160), 0.9, np.float32)
    fits.writeto(tmp_path / "master.fits", master, fits.Header({"BUNIT": "adu"}))
    out = tmp_path / "product.fits"
    assert main(["flat", str(median), "--mask", str(mask), "-o", str(out), "--master-flat",
                 str(tmp_path / "master.fits")]) == 0
    product = read_flat(out)
    dust = main(["flat", str(median), "--mask", str(mask), "-o", str(tmp_path / "dust.fits")]) == 0 and \
        read_flat(tmp_path / "dust.fits")
    assert str(product.unit) == "adu" and product.meta["MASTFLAT"].endswith("master.fits")
    assert np.allclose(product.data, master * dust.data, rtol=1e-6)
    assert np.array_equal(product.data[dust.data == 1.0], master[dust.data == 1.0])


def test_flat_command_errors(median_and_mask, tmp_path, capsys):
    median, mask = median_and_mask
    assert main(["flat", str(tmp_path / "none.fits"), "--mask", str(mask), "-o", str(tmp_path / "f.fits")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error" in err
    assert main(["flat", str(median), "--mask", str(mask), "-o", str(tmp_path / "f.fits"), "--floor", "2"]) == 2


def test_apply_command_single_and_several(median_and_mask, video, tmp_path, capsys):
    median, mask = median_and_mask
    flat_path = tmp_path / "flat.fits"
    assert main(["flat", str(median), "--mask", str(mask), "-o", str(flat_path)]) == 0
    src = video[0]
    assert main(["apply", str(flat_path), str(src), "-o", str(tmp_path / "cal.ser")]) == 0
    flat = read_flat(flat_path).data
    with SERReader(src) as a, SERReader(tmp_path / "cal.ser") as b:
        fa, fb = a.read(5), b.read(5)
        assert np.array_equal(fa[flat == 1.0], fb[flat == 1.0])
        assert np.array_equal(fb, np.clip(np.rint(fa / flat.astype(np.float64)), 0, 4095).astype(fb.dtype))
    cube = tmp_path / "cube.fits"
    with SERReader(src) as a:
        fits.writeto(cube, np.stack([a.read(i) for i in range(3)]))
    assert main(["apply", str(flat_path), str(src), str(cube), "-o", str(tmp_path / "outdir")]) == 0
    assert (tmp_path / "outdir" / "sun_aiflat.ser").exists() and (tmp_path / "outdir" / "cube_aiflat.fits").exists()
    assert "MB/s" in capsys.readouterr().out
    assert main(["apply", str(flat_path), str(src), str(cube), "-o", str(tmp_path / "outdir")]) == 1  # exists


@pytest.mark.slow
def test_run_reuses_and_recomputes(video, tmp_path, capsys):
    src, truth_path, _ = video
    out = tmp_path / "run"
    assert main(["run", str(src), "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "computed: median, mask, flat, apply" in text
    for name in ("median.fits", "mask.fits", "flat.fits", "dust.ecsv", "dust.reg", "preview.png",
                 "sun_aiflat.ser", "aiflat_run.json"):
        assert (out / name).exists(), name
    with fits.open(out / "flat.fits") as hdul:
        key = hdul[0].header["RUNSHA"]
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}

    # unchanged: everything reused, nothing rewritten
    assert main(["run", str(src), "-o", str(out)]) == 0
    assert "reused: median, mask, flat, apply" in capsys.readouterr().out
    for name in ("median.fits", "mask.fits", "flat.fits", "sun_aiflat.ser"):
        assert (out / name).stat().st_mtime_ns == mtimes[name]

    # a changed flat parameter redoes the flat and the calibrated video only
    assert main(["run", str(src), "-o", str(out), "--floor", "0.1"]) == 0
    text = capsys.readouterr().out
    assert "computed: flat, apply; reused: median, mask" in text
    with fits.open(out / "flat.fits") as hdul:
        assert hdul[0].header["RUNSHA"] != key

    # another aiflat_astro version redoes the mask and what follows, not the (exact) median
    import aiflat_astro

    version = aiflat_astro.__version__
    aiflat_astro.__version__ = version + ".other"
    try:
        assert main(["run", str(src), "-o", str(out), "--floor", "0.1"]) == 0
    finally:
        aiflat_astro.__version__ = version
    assert "computed: mask, flat, apply; reused: median" in capsys.readouterr().out
    assert main(["run", str(src), "-o", str(out), "--floor", "0.1"]) == 0
    assert "computed: mask, flat, apply; reused: median" in capsys.readouterr().out

    # a corrupted product is recomputed, with a warning
    raw = bytearray((out / "flat.fits").read_bytes())
    raw[-100] ^= 0xFF
    (out / "flat.fits").write_bytes(bytes(raw))
    with pytest.warns(UserWarning, match="cannot reuse"):
        from aiflat_astro.pipeline import run_pipeline

        result = run_pipeline(src, out, floor=0.1)
    assert "flat" in result["computed"]
    assert read_flat(out / "flat.fits").meta["FLOOR"] == 0.1

    # the evaluation of the flat against the truth
    assert main(["evaluate", str(out / "flat.fits"), str(truth_path), "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["product"] == "flat" and ev["outside_exact"] > 0.9


def test_run_pipeline_options_object_and_keywords(video, tmp_path):
    """``options=RunOptions(...)`` is the run its keywords give (same step keys: all reused); a keyword wins."""
    from aiflat_astro.pipeline import RunOptions, run_pipeline
    from aiflat_astro.utils.exceptions import InputError

    src, out = video[0], tmp_path / "run"
    first = run_pipeline(src, out, apply=False, floor=0.1)
    assert first["computed"] == ["median", "mask", "flat"]
    same = run_pipeline(src, out, options=RunOptions(apply=False, floor=0.1))
    assert same["computed"] == [] and same["reused"] == ["median", "mask", "flat"]
    mixed = run_pipeline(src, out, options=RunOptions(apply=False, floor=0.1), floor=0.2)
    assert mixed["computed"] == ["flat"]
    assert read_flat(out / "flat.fits").meta["FLOOR"] == 0.2
    with pytest.raises(InputError, match="unknown option"):
        run_pipeline(src, out, flor=0.1)
    with pytest.raises(InputError, match="RunOptions"):
        run_pipeline(src, out, options={"floor": 0.1})


def test_run_refuses_foreign_files(video, tmp_path, capsys):
    src = video[0]
    out = tmp_path / "run"
    out.mkdir()
    fits.writeto(out / "median.fits", np.zeros((4, 4)))
    assert main(["run", str(src), "-o", str(out), "--no-apply"]) == 1
    assert "not made by aiflat run" in capsys.readouterr().err
    assert main(["run", str(src), "-o", str(out), "--no-apply", "--overwrite"]) == 0
    assert not (out / "sun_aiflat.ser").exists()


def test_demo_small(tmp_path, monkeypatch, capsys):
    from aiflat_astro._commands import demo

    monkeypatch.setattr(demo, "DEMO_SIMULATION", {**demo.DEMO_SIMULATION, "shape": (128, 160), "n_frames": 16,
                                                  "n_dust": 4})
    assert main(["demo", str(tmp_path / "d")]) == 0
    text = capsys.readouterr().out
    assert "check against the truth" in text and "ds9" in text and "preview.png" in text
    assert main(["demo", str(tmp_path / "d")]) == 0
    assert "reusing" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.slow
def test_demo_full_under_two_minutes(tmp_path, capsys):
    t0 = time.perf_counter()
    assert main(["demo", str(tmp_path / "demo")]) == 0
    assert time.perf_counter() - t0 < 120
    text = capsys.readouterr().out
    assert "computed: median, mask, flat, apply" in text
    with SERReader(tmp_path / "demo" / "sun_dusty_aiflat.ser") as out:
        assert out.n_frames == 100
