"""``aiflat info``: text and JSON reports, errors."""

import json
import re

import numpy as np
import pytest
from astropy.io import fits

from aiflat_astro.cli import main
from aiflat_astro.io.ser import datetime_to_ticks, write_ser

T0 = datetime_to_ticks("2024-04-08T18:17:00")


@pytest.fixture
def video(tmp_path):
    path = tmp_path / "sun.ser"
    frames = np.stack([(np.add.outer(np.arange(24), np.arange(32)) * 40 + k).astype(np.uint16)
                       for k in range(5)])
    write_ser(path, frames, pixel_depth=12, byte_order="<", little_endian_flag=1,
              observer="Ann", instrument="ASI174MM", telescope="fps=25.0gain=100exp=1.5",
              date_time=T0 + 2 * 3600 * 10**7, date_time_utc=T0,
              timestamps=[T0 + k * 4 * 10**5 for k in range(5)])
    return path


def test_info_text(video, capsys):
    assert main(["info", str(video)]) == 0
    out, err = capsys.readouterr()
    assert err == ""  # format deviations are reported on stdout, not repeated as warnings
    assert re.search(r"^frames +: 5 \(header FrameCount 5\)$", out, re.M)
    assert "little-endian (LittleEndian flag 1)" in out
    assert "data are clearly little-endian" in out
    assert "header 12, measured 12" in out
    assert "2024-04-08T18:17:00.000000 .. 2024-04-08T18:17:00.160000 UTC, 25.000 fps" in out
    assert "trailer in UTC" in out
    assert "fps=25.0, gain=100, exp=1.5" in out
    assert "start local : 2024-04-08T20:17:00.000000" in out
    assert "warnings    : 1" in out


def test_info_json(video, capsys):
    assert main(["info", "--json", str(video)]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["format"] == "SER" and d["n_frames"] == 5 and d["frame_shape"] == [24, 32]
    assert d["byte_order"] == "little" and "clearly little-endian" in d["byte_order_reason"]
    assert (d["header_depth"], d["measured_depth"]) == (12, 12)
    assert d["timestamps"]["fps"] == pytest.approx(25.0)
    assert d["timestamps"]["reference"] == "UTC"
    assert d["timestamps"]["first"] == "2024-04-08T18:17:00.000000"
    assert d["start_time_utc"] == "2024-04-08T18:17:00.000000"
    assert d["capture_metadata"] == {"fps": 25.0, "gain": 100, "exp": 1.5}
    assert len(d["warnings"]) == 1 and d["trailer"] is True


def test_info_byte_order_option(video, capsys):
    assert main(["info", "--json", "--byte-order", ">", str(video)]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["byte_order"] == "big" and "forced" in d["byte_order_reason"]
    assert d["warnings"] == []


def test_info_fits_sources(tmp_path, capsys):
    cube = tmp_path / "cube.fits"
    fits.writeto(cube, np.zeros((4, 6, 8), np.float32), fits.Header([("INSTRUME", "cam")]))
    assert main(["info", str(cube)]) == 0
    out = capsys.readouterr().out
    assert "FITS cube" in out and "frames     : 4" in out and "8 x 6 pixels" in out
    assert "float32" in out and "instrume   : cam" in out
    for k in range(3):
        fits.writeto(tmp_path / f"f{k}.fits", np.zeros((6, 8), np.int16))
    assert main(["info", "--json", str(tmp_path / "f0.fits"), str(tmp_path / "f1.fits")]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["format"] == "FITS files" and d["n_frames"] == 2 and d["dtype"] == "int16"
    assert len(d["paths"]) == 2


@pytest.mark.parametrize("make, message", [
    (lambda p: None, "no such file"),
    (lambda p: p.write_bytes(b"x" * 300), "is not a SER video"),
    (lambda p: p.write_bytes(b"short"), "is not a SER video"),
    (lambda p: write_ser(p, np.zeros((1, 40, 40), np.uint8), frame_count=0)
     or p.write_bytes(p.read_bytes()[:500]), "contains no complete frame"),
])
def test_info_errors(tmp_path, capsys, make, message):
    path = tmp_path / "bad.ser"
    make(path)
    assert main(["info", str(path)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("aiflat info: error:") and message in err
