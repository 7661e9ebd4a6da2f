"""``aiflat flat --inpaint measured``: drift plot, catalog with the per-shadow method."""

import pytest
from astropy.io import fits
from astropy.table import Table

from aiflat_astro.cli import main
from aiflat_astro.datasets import make_dusty_video
from aiflat_astro.provenance import read_provjson


@pytest.fixture(name="products", scope="module")
def fixture_products(tmp_path_factory):
    """A small drifting video, its median and the local detector's mask."""
    d = tmp_path_factory.mktemp("mcli")
    make_dusty_video(d / "v.ser", shape=(128, 160), n_frames=60, drift=50.0, n_dust=4, seed=2,
                     regime="solar-soft")
    assert main(["median", str(d / "v.ser"), "-o", str(d / "median.fits")]) == 0
    assert main(["detect", str(d / "median.fits"), "-o", str(d / "mask.fits")]) == 0
    return d


@pytest.mark.slow
def test_flat_measured_with_plot_and_catalog(products, capsys):
    d = products
    argv = ["flat", str(d / "median.fits"), "--mask", str(d / "mask.fits"),
            "-o", str(d / "flat.fits"), "--inpaint", "measured", "--video", str(d / "v.ser"),
            "--drift-plot", str(d / "drift.png"),
            "--catalog", str(d / "dust.ecsv")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "measured:" in out and "from the drift" in out
    assert (d / "drift.png").read_bytes()[:4] == b"\x89PNG"
    catalog = Table.read(d / "dust.ecsv")
    assert set(catalog["flat_method"]) <= {"measured", "local"}
    assert "measured" in set(catalog["flat_method"])
    assert catalog.meta["inpaint"] == "measured"
    assert catalog.meta["drift"]["extent_minor_px"] > 20
    with fits.open(d / "flat.fits") as hdul:
        assert hdul[0].header["INPAINT"] == "measured"
        prov = read_provjson(hdul)
    assert len(prov["inpaint_info"]["drift"]["dy"]) == 60
    assert {rec["flat_method"] for rec in prov["inpaint_info"]["shadows"]} <= {"measured", "local"}
    # outputs exist: refused without --overwrite, before any work
    assert main(argv) == 1
    assert "exists" in capsys.readouterr().err


def test_plot_options_need_measured(products, capsys):
    d = products
    argv = ["flat", str(d / "median.fits"), "--mask", str(d / "mask.fits"),
            "-o", str(d / "f2.fits"),
            "--drift-plot", str(d / "d2.png")]
    assert main(argv) == 1
    assert "--inpaint measured" in capsys.readouterr().err
    assert not (d / "f2.fits").exists()


def test_flat_measured_needs_video(products, capsys):
    d = products
    argv = ["flat", str(d / "median.fits"), "--mask", str(d / "mask.fits"),
            "-o", str(d / "f3.fits"),
            "--inpaint", "measured"]
    assert main(argv) == 1
    assert "needs the video" in capsys.readouterr().err


@pytest.mark.slow
def test_run_measured_writes_drift_plot(products, tmp_path):
    """``aiflat run --inpaint measured`` leaves the drift plot next to its products."""
    out = tmp_path / "out"
    assert main(["run", str(products / "v.ser"), "-o", str(out), "--inpaint", "measured",
                 "--no-apply"]) == 0
    assert (out / "drift.png").read_bytes()[:4] == b"\x89PNG"
    with fits.open(out / "flat.fits") as hdul:
        assert read_provjson(hdul)["inpaint_info"]["method"] == "measured"
