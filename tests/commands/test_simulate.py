"""``aiflat simulate``."""

import numpy as np

from aiflat_astro.cli import main
from aiflat_astro.datasets import read_truth
from aiflat_astro.io import SERReader


def test_simulate_writes_video_and_truth(tmp_path, capsys):
    out = tmp_path / "demo.ser"
    rc = main(["simulate", "-o", str(out), "--frames", "6", "--shape", "64x96", "--seed", "3",
               "--drift", "4", "--dust", "3"])
    assert rc == 0
    stdout = capsys.readouterr().out
    assert "demo.ser" in stdout and "demo_truth.fits" in stdout
    truth = read_truth(tmp_path / "demo_truth.fits")
    assert truth.path == out.resolve() and truth.n_frames == 6 and len(truth.shadows) == 3
    assert truth.params["seed"] == 3 and truth.params["drift"] == 4.0
    with SERReader(out) as ser:
        assert ser.n_frames == 6 and ser.frame_shape == (64, 96) and ser.header.pixel_depth == 12


def test_simulate_options(tmp_path, capsys):
    rc = main(["simulate", "-o", str(tmp_path / "d.ser"), "--truth", str(tmp_path / "t.fits"),
               "--regime", "deepsky", "--frames", "2", "--shape", "80x80", "--dust", "2",
               "--bit-depth", "8", "--f-ratio", "6", "--pixel-size", "4.5", "--jitter", "0"])
    assert rc == 0
    truth = read_truth(tmp_path / "t.fits")
    assert truth.params["f_ratio"] == 6 and truth.params["pixel_size"] == 4.5
    assert np.all(truth.shifts == 0) and set(truth.shadows["kind"]) == {"annulus"}
    with SERReader(tmp_path / "d.ser") as ser:
        assert ser.dtype == np.uint8


def test_simulate_no_dust(tmp_path):
    rc = main(["simulate", "-o", str(tmp_path / "c.ser"), "--frames", "2", "--shape", "48x48",
               "--no-dust"])
    assert rc == 0
    truth = read_truth(tmp_path / "c_truth.fits")
    assert len(truth.shadows) == 0 and np.all(truth.transmission == 1.0)


def test_simulate_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "x.ser"
    out.write_bytes(b"precious")
    rc = main(["simulate", "-o", str(out), "--frames", "2", "--shape", "48x48"])
    err = capsys.readouterr().err
    assert rc == 1 and out.read_bytes() == b"precious"
    assert len(err.strip().splitlines()) == 1 and "exists" in err and "--overwrite" in err
    assert not (tmp_path / "x_truth.fits").exists()
    rc = main(["simulate", "-o", str(out), "--frames", "2", "--shape", "48x48", "--dust", "2",
               "--overwrite"])
    assert rc == 0 and SERReader(out).n_frames == 2


def test_simulate_errors(tmp_path, capsys):
    assert main(["simulate", "-o", str(tmp_path / "x.fits")]) == 1
    assert "must be a .ser file" in capsys.readouterr().err
    assert main(["simulate", "-o", str(tmp_path / "x.ser"), "--frames", "0"]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "n_frames" in err
    assert main(["simulate", "-o", str(tmp_path / "x.ser"), "--shape", "64"]) == 2
    assert "HEIGHTxWIDTH" in capsys.readouterr().err
    assert main(["simulate", "-o", str(tmp_path / "nodir" / "x.ser")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_simulate_dust_seed_shares_dust(tmp_path):
    for name, seed in (("a", "1"), ("b", "2")):
        assert main(["simulate", "-o", str(tmp_path / f"{name}.ser"), "--frames", "2",
                     "--shape", "64x80", "--dust", "3", "--seed", seed, "--dust-seed", "9"]) == 0
    a, b = read_truth(tmp_path / "a_truth.fits"), read_truth(tmp_path / "b_truth.fits")
    assert np.array_equal(a.transmission, b.transmission) and a.params["dust_seed"] == 9
    assert not np.array_equal(a.scene, b.scene)


def test_simulate_scenarios(tmp_path, capsys):
    assert main(["simulate", "-o", str(tmp_path / "r.ser"), "--frames", "1", "--shape", "300x400",
                 "--seed", "4"]) == 0
    assert "solar" in capsys.readouterr().out
    real = read_truth(tmp_path / "r_truth.fits")
    assert real.params["regime"] == "solar" and real.params["f_ratio"] == 40
    assert len(real.shadows) > 3 and real.transmission.max() > 1.0     # specks with a ring
    assert main(["simulate", "-o", str(tmp_path / "s.ser"), "--frames", "1", "--shape", "300x400",
                 "--seed", "4", "--regime", "solar-soft"]) == 0
    soft = read_truth(tmp_path / "s_truth.fits")
    assert soft.params["regime"] == "solar-soft" and len(soft.shadows) == 10
    assert main(["simulate", "-o", str(tmp_path / "x.ser"), "--regime", "sun"]) == 2
    assert "solar-soft" in capsys.readouterr().err


def test_simulate_scenario_names_match_the_library():
    from aiflat_astro._commands.simulate import REGIME_HELP
    from aiflat_astro.datasets import DUST_REGIMES

    assert list(REGIME_HELP) == list(DUST_REGIMES)
