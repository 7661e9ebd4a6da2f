"""Tests of ``aiflat median``."""

import numpy as np
import pytest
from astropy.io import fits
from astropy.nddata import CCDData

from aiflat_astro.cli import main
from aiflat_astro.io import write_ser
from aiflat_astro.provenance import sha256_file, verify_checksums


@pytest.fixture(name="stack")
def fixture_stack():
    rng = np.random.default_rng(5)
    return rng.integers(1000, 3000, size=(10, 24, 32), dtype=np.uint16)


@pytest.fixture(name="video")
def fixture_video(tmp_path, stack):
    path = tmp_path / "video.ser"
    write_ser(path, stack, pixel_depth=12)
    return path


def _one_error_line(capsys):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("aiflat median: error: ")
    return err


def test_median_ser(tmp_path, video, stack, capsys):
    out = tmp_path / "median.fits"
    assert main(["median", str(video), "-o", str(out)]) == 0
    assert "median of 10 of 10 frames" in capsys.readouterr().out
    with fits.open(out) as hdul:
        verify_checksums(hdul)
        assert len(hdul) == 1
        header, data = hdul[0].header, hdul[0].data
        assert header["BITPIX"] == -32
        assert header["ROWORDER"] == "TOP-DOWN"
        assert header["BUNIT"] == "adu"
        assert header["NCOMBINE"] == 10
        assert header["PROV1"] == "video.ser"
        assert header["PROVSHA1"] == sha256_file(video)
        np.testing.assert_array_equal(data, np.median(stack, axis=0).astype(np.float32))
    median = CCDData.read(out)  # readable by astropy as is
    assert median.unit == "adu"


def test_options(tmp_path, video, stack, capsys):
    out = tmp_path / "median.fits"
    bias = tmp_path / "bias.fits"
    CCDData(np.full(stack.shape[1:], 100.5, np.float32), unit="adu").write(bias)
    argv = ["median", str(video), "-o", str(out), "--step", "2", "--max-frames", "4",
            "--mem-limit", "8MB", "--bias", str(bias)]
    assert main(argv) == 0
    with fits.open(out) as hdul:
        header, data = hdul[0].header, hdul[0].data
    assert (header["NCOMBINE"], header["FRAME0"], header["FRAME1"], header["FRAMESTP"]) == \
        (4, 0, 6, 2)
    assert header["BIASSUB"] and not header["DARKSUB"]
    expected = np.median(stack[0:8:2] - 100.5, axis=0).astype(np.float32)
    np.testing.assert_array_equal(data, expected)
    capsys.readouterr()

    # the output exists: refused without --overwrite, replaced with it
    assert main(argv) == 1
    assert "exists" in _one_error_line(capsys)
    assert main(argv[:-2] + ["--overwrite"]) == 0


def test_fits_files(tmp_path, stack, capsys):
    folder = tmp_path / "frames"
    folder.mkdir()
    for k, frame in enumerate(stack[:5]):
        fits.writeto(folder / f"frame{k:02d}.fits", frame.astype(np.int16))
    out = tmp_path / "median.fits"
    files = [str(p) for p in sorted(folder.iterdir())]
    assert main(["median", *files, "-o", str(out)]) == 0
    np.testing.assert_array_equal(fits.getdata(out),
                                  np.median(stack[:5], axis=0).astype(np.float32))
    assert main(["median", str(folder), "-o", str(out), "--overwrite"]) == 0
    assert fits.getheader(out)["NCOMBINE"] == 5


def test_errors(tmp_path, video, stack, capsys):
    out = str(tmp_path / "median.fits")
    # missing input
    assert main(["median", str(tmp_path / "missing.ser"), "-o", out]) == 1
    assert "missing.ser" in _one_error_line(capsys)
    # zero frames: a SER holding only its header
    empty = tmp_path / "empty.ser"
    empty.write_bytes(video.read_bytes()[:178])
    assert main(["median", str(empty), "-o", out]) == 1
    _one_error_line(capsys)
    # shape mismatch between FITS files
    fits.writeto(tmp_path / "a.fits", np.zeros((4, 5), np.int16))
    fits.writeto(tmp_path / "b.fits", np.zeros((5, 4), np.int16))
    assert main(["median", str(tmp_path / "a.fits"), str(tmp_path / "b.fits"), "-o", out]) == 1
    assert "shape" in _one_error_line(capsys)
    # bad memory limit, and one too small for a row of every frame
    assert main(["median", str(video), "-o", out, "--mem-limit", "lots"]) == 1
    assert "memory size" in _one_error_line(capsys)
    assert main(["median", str(video), "-o", out, "--mem-limit", "10KB"]) == 1
    assert "too small" in _one_error_line(capsys)
    # master of the wrong shape
    bias = tmp_path / "bias.fits"
    fits.writeto(bias, np.zeros((3, 3), np.float32))
    assert main(["median", str(video), "-o", out, "--bias", str(bias)]) == 1
    assert "shape" in _one_error_line(capsys)
    # output folder missing
    assert main(["median", str(video), "-o", str(tmp_path / "no" / "m.fits")]) == 1
    _one_error_line(capsys)
    assert not (tmp_path / "median.fits").exists()
    # usage errors exit 2
    assert main(["median", str(video), "-o", out, "--step", "0"]) == 2
    assert main(["median", str(video)]) == 2
