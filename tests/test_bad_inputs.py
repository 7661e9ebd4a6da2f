"""The bad inputs of issue 17: each refused (or flagged) up front with one clear line, no traceback."""

import errno
import os
import struct

import numpy as np
import pytest
from astropy.io import fits
from astropy.nddata import CCDData

from aiflat_astro import cli
from aiflat_astro.io import write_ser
from aiflat_astro.io.fits import write_flat


def aiflat(capsys, *args):
    """Run the command line in-process; return (status, stdout, stderr)."""
    code = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err, *words):
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err and lines[0].startswith("aiflat ") and ": error: " in lines[0], err
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


def _scene(shape=(96, 128), seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.indices(shape)
    img = 3000 + 4 * x + 3 * y + rng.normal(0, 2, shape)
    for cy, cx, r in [(30, 40, 6), (60, 90, 8)]:
        img *= 1 - 0.3 * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * r ** 2))
    return img.astype(np.float32)


def _median(path, data):
    fits.PrimaryHDU(np.asarray(data, np.float32)).writeto(path, checksum=True)
    return path


@pytest.fixture
def products(tmp_path, capsys):
    median = _median(tmp_path / "median.fits", _scene())
    code, _, err = aiflat(capsys, "detect", median, "-o", tmp_path / "mask.fits")
    assert code == 0, err
    return median, tmp_path / "mask.fits"


@pytest.fixture
def video(tmp_path):
    y, x = np.indices((48, 64))
    frames = np.stack([(1000 + 10 * x + 7 * y + k).astype(np.uint16) for k in range(12)])
    path = tmp_path / "v.ser"
    t0 = np.datetime64("2024-04-08T18:17:00")
    write_ser(path, frames, pixel_depth=12, timestamps=[t0 + k * np.timedelta64(40, "ms") for k in range(12)])
    return path


# -- frames selection, usage errors ---------------------------------------------------
def test_step_leaving_one_frame_refused(capsys, tmp_path, video):
    code, out, err = aiflat(capsys, "median", video, "-o", tmp_path / "m.fits", "--step", 1000000)
    assert code == 1 and out == ""
    one_error_line(err, "--step 1000000", "1 of the 12 frames", "v.ser", "at least 3")
    assert not (tmp_path / "m.fits").exists()
    code, _, err = aiflat(capsys, "median", video, "-o", tmp_path / "m.fits", "--max-frames", 2)
    one_error_line(err, "--max-frames 2", "2 of the 12")
    code, _, err = aiflat(capsys, "run", video, "-o", tmp_path / "run", "--step", 100)
    assert code == 1
    one_error_line(err, "--step 100", "v.ser")
    assert not (tmp_path / "run" / "median.fits").exists()


def test_run_outdir_that_is_a_file_refused(capsys, tmp_path, video):
    (tmp_path / "afile").write_text("x")
    code, _, err = aiflat(capsys, "run", video, "-o", tmp_path / "afile")
    assert code == 1
    one_error_line(err, "afile", "is a file, not a folder")


def test_run_usage_errors_like_median(capsys, tmp_path, video):
    for command in ("median", "run"):
        code, _, err = aiflat(capsys, command, video, "-o", tmp_path / "x", "--step", 0)
        assert code == 2 and "expected a positive integer, got '0'" in err and "Traceback" not in err
    code, _, err = aiflat(capsys, "run", video, "-o", tmp_path / "x", "--detector", "bogus")
    assert code == 2 and "choose from" in err and "local" in err and "gemini" in err


@pytest.mark.parametrize("command", ["median", "apply", "flat", "run"])
def test_mem_limit_refused_the_same_way_everywhere(capsys, tmp_path, video, products, command):
    median, mask = products
    flat = tmp_path / "flat.fits"
    write_flat(flat, CCDData(np.ones((48, 64), np.float32), unit=""))
    args = {"median": ["median", video, "-o", tmp_path / "m2.fits"],
            "apply": ["apply", flat, video, "-o", tmp_path / "c.ser"],
            "flat": ["flat", median, "--mask", mask, "-o", tmp_path / "f2.fits", "--inpaint", "measured",
                     "--video", video],
            "run": ["run", video, "-o", tmp_path / "run"]}[command]
    code, out, err = aiflat(capsys, *args, "--mem-limit", "1KB")
    assert code == 1 and out == ""
    one_error_line(err, "--mem-limit 1KB is too small: the minimum is 1 MB")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".part")) == []


def test_apply_honours_a_mem_limit_it_accepts(tmp_path):
    from aiflat_astro.apply import apply_to_file
    from aiflat_astro.utils.exceptions import InputError

    frames = np.full((3, 1200, 1000), 500, np.uint16)
    write_ser(tmp_path / "big.ser", frames, pixel_depth=12)
    flat = np.ones((1200, 1000), np.float32)
    flat[:, 10:990] = 0.9  # one box of 1200 x 980 pixels: 14 MB of working memory a frame
    with pytest.raises(InputError, match="too small to correct the dust of one frame"):
        apply_to_file(flat, tmp_path / "big.ser", tmp_path / "out.ser", mem_limit="2MB")
    assert not (tmp_path / "out.ser").exists()
    stats = apply_to_file(flat, tmp_path / "big.ser", tmp_path / "out.ser", mem_limit="64MB")
    assert stats["n_frames"] == 3


# -- medians, darks, masks, flats ------------------------------------------------------
def test_mask_from_another_median_refused_unless_force(capsys, tmp_path, products):
    median, mask = products
    other = _median(tmp_path / "other.fits", _scene(seed=5))  # same shape, another video
    code, out, err = aiflat(capsys, "flat", other, "--mask", mask, "-o", tmp_path / "flat.fits")
    assert code == 1 and out == ""
    one_error_line(err, "mask.fits was made from another median", "INPSHA", "--force")
    assert not (tmp_path / "flat.fits").exists()
    code, out, err = aiflat(capsys, "flat", other, "--mask", mask, "-o", tmp_path / "flat.fits", "--force")
    assert code == 0 and "used anyway (--force)" in err and (tmp_path / "flat.fits").exists()
    # the mask's own median is accepted without a word
    code, out, err = aiflat(capsys, "flat", median, "--mask", mask, "-o", tmp_path / "flat2.fits")
    assert code == 0 and err == ""
    small = _median(tmp_path / "small.fits", _scene((64, 64)))
    code, _, err = aiflat(capsys, "flat", small, "--mask", mask, "-o", tmp_path / "flat3.fits", "--force")
    one_error_line(err, "shape (96, 128)", "shape (64, 64)")


def test_negative_median_refused(capsys, tmp_path, products):
    _, mask = products
    neg = _median(tmp_path / "neg.fits", -_scene())
    code, _, err = aiflat(capsys, "detect", neg, "-o", tmp_path / "m.fits")
    assert code == 1
    one_error_line(err, "neg.fits", "zero or negative")
    code, _, err = aiflat(capsys, "flat", neg, "--mask", mask, "-o", tmp_path / "f.fits")
    one_error_line(err, "neg.fits", "zero or negative")


def test_median_with_nan_band_refused(capsys, tmp_path):
    data = _scene()
    data[40:44] = np.nan
    path = _median(tmp_path / "nan.fits", data)
    code, _, err = aiflat(capsys, "detect", path, "-o", tmp_path / "m.fits")
    assert code == 1 and not (tmp_path / "m.fits").exists()
    one_error_line(err, "nan.fits", "512 NaN or infinite pixel(s)")


def test_dark_with_nan_refused_before_the_median(capsys, tmp_path, video):
    dark = np.zeros((48, 64), np.float32)
    dark[5, 5] = np.nan
    fits.writeto(tmp_path / "dark.fits", dark)
    code, _, err = aiflat(capsys, "median", video, "-o", tmp_path / "m.fits", "--dark", tmp_path / "dark.fits")
    assert code == 1 and not (tmp_path / "m.fits").exists()
    one_error_line(err, "dark.fits", "the dark has 1 NaN")


@pytest.mark.parametrize("bad, words", [(1e30, "above 100"), (np.inf, "NaN or infinite"),
                                        (0.0, "zero or negative"), (-0.5, "zero or negative")])
def test_flat_with_absurd_values_refused_by_apply(capsys, tmp_path, video, bad, words):
    flat = np.ones((48, 64), np.float32)
    flat[10:14, 10:14] = bad
    write_flat(tmp_path / "flat.fits", CCDData(flat, unit=""))  # a valid aiflat file, absurd values
    before = video.read_bytes()
    code, _, err = aiflat(capsys, "apply", tmp_path / "flat.fits", video, "-o", tmp_path / "c.ser")
    assert code == 1
    one_error_line(err, "flat.fits", words)
    assert not (tmp_path / "c.ser").exists() and video.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".part")] == []


# -- outputs ---------------------------------------------------------------------------
def test_output_that_is_a_folder_refused_up_front(capsys, tmp_path, video, products):
    median, mask = products
    folder = tmp_path / "afolder"
    folder.mkdir()
    for args in (["median", video, "-o", folder], ["detect", median, "-o", folder],
                 ["flat", median, "--mask", mask, "-o", folder]):
        code, out, err = aiflat(capsys, *args)
        assert code == 1 and out == ""
        one_error_line(err, "afolder", "is a folder, not a file")
        assert os.listdir(folder) == []


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root may write anywhere")
def test_read_only_folder_refused_up_front(capsys, tmp_path, video):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        code, _, err = aiflat(capsys, "median", video, "-o", ro / "m.fits")
        one_error_line(err, "is not writable", "ro")
    finally:
        ro.chmod(0o700)


def test_disk_full_one_line_naming_the_file(capsys, tmp_path, video, monkeypatch):
    def full(self, *args, **kwargs):
        raise OSError("Not enough space on disk: requested 11067526, available 0. "
                      "Not enough space on disk: requested 11067526, available 0. "
                      "[Errno 28] No space left on device")

    monkeypatch.setattr(fits.HDUList, "writeto", full)
    code, out, err = aiflat(capsys, "median", video, "-o", tmp_path / "m.fits")
    line = one_error_line(err, "m.fits", "no space left on device")
    assert line.count("space") == 1 and ".part" not in line and "Errno" not in line
    assert os.listdir(tmp_path) == ["v.ser"]


def test_disk_full_during_apply_copy(capsys, tmp_path, video, monkeypatch):
    from aiflat_astro.utils import _copy

    def full(self):
        raise OSError(errno.ENOSPC, "No space left on device", self.dst)

    monkeypatch.setattr(_copy.BackgroundCopy, "_sendfile", full)
    monkeypatch.setattr(_copy.BackgroundCopy, "_readwrite", full)
    flat = np.ones((48, 64), np.float32)
    flat[3:6, 3:6] = 0.8
    write_flat(tmp_path / "flat.fits", CCDData(flat, unit=""))
    code, _, err = aiflat(capsys, "apply", tmp_path / "flat.fits", video, "-o", tmp_path / "c.ser")
    line = one_error_line(err, "c.ser", "no space left on device")
    assert ".part" not in line and "/proc/" not in line
    assert sorted(os.listdir(tmp_path)) == ["flat.fits", "v.ser"]


# -- CLI polish ------------------------------------------------------------------------
def test_quiet_prints_nothing_but_errors(capsys, tmp_path, video):
    raw = bytearray(video.read_bytes())
    raw[22:26] = struct.pack("<i", 7)  # odd LittleEndian flag: a SERFormatWarning
    odd = tmp_path / "odd.ser"
    odd.write_bytes(bytes(raw))
    code, out, err = aiflat(capsys, "median", odd, "-o", tmp_path / "m.fits")
    assert code == 0 and "warning: odd.ser: LittleEndian flag 7" in err and "median of 12" in out
    code, out, err = aiflat(capsys, "-q", "median", odd, "-o", tmp_path / "m2.fits")
    assert code == 0 and out == "" and err == "" and (tmp_path / "m2.fits").exists()
    code, out, err = aiflat(capsys, "-q", "info", odd)  # info's output is its result: kept
    assert code == 0 and "LittleEndian flag 7" in out


def test_no_progress_bar_on_a_zero_column_terminal(monkeypatch):
    import argparse

    class FakeTTY:
        def isatty(self):
            return True

        def fileno(self):
            return 2

    monkeypatch.setattr(cli.sys, "stderr", FakeTTY())
    for columns, want in ((0, False), (10, False), (80, True)):
        monkeypatch.setattr(cli.os, "get_terminal_size", lambda fd, c=columns: os.terminal_size((c, 24)))
        assert cli._progress_enabled(argparse.Namespace(quiet=False)) is want
    assert cli._progress_enabled(argparse.Namespace(quiet=True)) is False


def test_products_read_back_without_warnings_or_unit(capsys, tmp_path, video, products):
    _, mask = products
    code, _, err = aiflat(capsys, "median", video, "-o", tmp_path / "m.fits")
    assert code == 0, err
    # filterwarnings = error: a FITSFixedWarning ('datfix') or a missing unit would fail here
    ccd = CCDData.read(tmp_path / "m.fits")
    assert "MJD-BEG" in ccd.header and ccd.unit == "adu"
    dq = CCDData.read(mask)
    assert dq.unit == "" and dq.data.dtype == np.uint8


def test_info_says_inconclusive_and_names_the_option(capsys, tmp_path):
    frames = np.full((2, 8, 8), 0x0102, np.uint16)
    write_ser(tmp_path / "c.ser", frames, pixel_depth=16, byte_order=">", little_endian_flag=1)
    code, out, _ = aiflat(capsys, "info", tmp_path / "c.ser")
    assert code == 0 and "inconclusive" in out and "--byte-order '<'" in out
