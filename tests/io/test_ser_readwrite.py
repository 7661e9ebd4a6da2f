"""SER round trips: colour IDs, depths, writer options, SERWriter.like, astropy registry."""

import json
import pickle
import subprocess
import sys

import numpy as np
import pytest
from astropy import units as u
from astropy.nddata import CCDData

from aiflat_astro.io import SERReader, SERWriter, read_ser, write_ser
from aiflat_astro.io.ser import HEADER_SIZE, datetime_to_ticks
from aiflat_astro.utils.exceptions import InputError, SERFormatWarning

T0 = datetime_to_ticks("2025-03-29T10:50:00")


def ramp(n, shape, maxval, dtype):
    rng = np.random.default_rng(n)
    return rng.integers(0, maxval + 1, size=(n, *shape)).astype(dtype)


@pytest.mark.parametrize("depth", range(1, 17))
def test_all_bit_depths_roundtrip_unscaled(tmp_path, depth):
    dtype = np.uint8 if depth <= 8 else np.uint16
    frames = ramp(3, (5, 6), 2**depth - 1, dtype)
    frames[0, 0, 0] = 2**depth - 1
    path = tmp_path / "d.ser"
    write_ser(path, frames, pixel_depth=depth)
    assert path.stat().st_size == HEADER_SIZE + frames.nbytes
    ser = SERReader(path)
    assert ser.header.pixel_depth == depth and ser.measured_depth == depth
    assert ser.dtype == np.dtype(dtype) and ser.dtype.isnative
    np.testing.assert_array_equal(np.stack(list(ser)), frames)  # never rescaled


@pytest.mark.parametrize("color_id, pattern", [(8, "RGGB"), (9, "GRBG"), (10, "GBRG"),
                                               (11, "BGGR"), (16, "CYYM"), (17, "YCMY"),
                                               (18, "YMCY"), (19, "MYYC")])
def test_bayer_kept_as_raw_mosaic(tmp_path, color_id, pattern):
    frames = ramp(2, (4, 6), 4095, np.uint16)
    path = tmp_path / "b.ser"
    write_ser(path, frames, pixel_depth=12, color_id=color_id)
    ser = SERReader(path)
    assert ser.frame_shape == (4, 6) and ser.bayer_pattern == pattern
    ccd = ser.frame_ccd(1)
    assert ccd.header["BAYERPAT"] == pattern and ccd.header["COLORTYP"] == pattern
    np.testing.assert_array_equal(ccd.data, frames[1])


@pytest.mark.parametrize("color_id", [100, 101])
@pytest.mark.parametrize("dtype, depth, order", [(np.uint8, 8, "<"), (np.uint16, 16, "<"),
                                                 (np.uint16, 10, ">")])
def test_rgb_and_bgr_returned_in_rgb_order(tmp_path, color_id, dtype, depth, order):
    frames = ramp(3, (4, 5, 3), 2**depth - 1, dtype)
    frames[:, :, :, 0] = 0  # R = 0 so that the channel order is visible on disk
    path = tmp_path / "c.ser"
    write_ser(path, frames, pixel_depth=depth, color_id=color_id, byte_order=order,
              little_endian_flag=int(order == ">"))
    raw = np.frombuffer(path.read_bytes()[HEADER_SIZE:], dtype=np.dtype(order + "u2")
                        if dtype == np.uint16 else np.uint8).reshape(frames.shape)
    on_disk_first = raw[..., 0] if color_id == 100 else raw[..., 2]
    assert not on_disk_first.any()  # interleaved [R][G][B] or [B][G][R]
    ser = SERReader(path)
    assert ser.frame_shape == (4, 5, 3) and ser.is_rgb and ser.bayer_pattern is None
    np.testing.assert_array_equal(ser.read(2), frames[2])
    np.testing.assert_array_equal(ser.read_rows(range(3), 1, 3), frames[:, 1:3])
    np.testing.assert_array_equal(ser.read_rows([2, 0], 0, 4), frames[[2, 0]])


def test_frame_ccd_header_and_unit(tmp_path):
    path = tmp_path / "h.ser"
    write_ser(path, ramp(3, (4, 5), 4095, np.uint16), pixel_depth=12, observer="Obs",
              instrument="ASI174MM", telescope="fps=50.0gain=100exp=2.5", date_time_utc=T0,
              timestamps=[T0, T0 + 2 * 10**5, T0 + 4 * 10**5])
    ccd = read_ser(path, frame=2)
    assert ccd.unit == u.adu and ccd.data.dtype == np.uint16
    hdr = ccd.header
    assert (hdr["OBSERVER"], hdr["INSTRUME"], hdr["TELESCOP"]) == ("Obs", "ASI174MM",
                                                                   "fps=50.0gain=100exp=2.5")
    assert hdr["DATE-OBS"] == "2025-03-29T10:50:00.040000" and hdr["FRAMENUM"] == 2
    assert hdr["ROWORDER"] == "TOP-DOWN" and hdr["BITDEPTH"] == 12 and hdr["MEASBITS"] <= 12
    assert hdr["BYTEORDR"] == "LITTLE" and "BAYERPAT" not in hdr
    assert read_ser(path, frame=-1).header["FRAMENUM"] == 2
    assert read_ser(path, unit="electron").unit == u.electron
    with SERReader(path) as ser:
        assert ser.capture_metadata == {"fps": 50.0, "gain": 100, "exp": 2.5}
        ccd.data[:] = 0  # the returned frames are copies
        assert ser.read(2).any()
        with pytest.raises(IndexError, match="out of range"):
            ser.read(3)


def test_astropy_registry(tmp_path):
    frames = ramp(4, (3, 4), 255, np.uint8)
    path = tmp_path / "reg.ser"
    write_ser(path, frames)
    ccd = CCDData.read(path, format="ser", frame=3)
    np.testing.assert_array_equal(ccd.data, frames[3])
    auto = CCDData.read(str(path), frame=1)  # identified from the extension
    assert auto.header["FRAMENUM"] == 1 and auto.unit == u.adu
    big = tmp_path / "UPPER.SER"
    big.write_bytes(path.read_bytes())
    assert CCDData.read(big).header["FRAMENUM"] == 0
    with pytest.raises(TypeError, match="unexpected keyword"):
        CCDData.read(path, format="ser", hdu=1)


def test_read_rows_paths(tmp_path):
    frames = ramp(9, (6, 5), 65535, np.uint16)
    path = tmp_path / "r.ser"
    write_ser(path, frames, byte_order=">", little_endian_flag=1)
    with pytest.warns(SERFormatWarning, match="inconclusive"):  # a steep ramp on 6x5 pixels
        ser = SERReader(path)
    for idx in ([0, 1, 2], range(1, 9, 3), slice(None, None, 2), [8, 3, 4], np.arange(9)[::-2],
                [5], [], 4, [-1, -2]):
        want = frames[idx if not isinstance(idx, range) else list(idx)][..., 2:5, :]
        got = ser.read_rows(idx, 2, 5)
        assert got.dtype == np.dtype(np.uint16) and got.dtype.isnative
        np.testing.assert_array_equal(got, want.reshape(got.shape))
    out = np.empty((2, 1, 5), np.uint16)
    assert ser.read_rows([0, 8], 5, 6, out=out) is out
    np.testing.assert_array_equal(out, frames[[0, 8], 5:6])
    with pytest.raises(IndexError):
        ser.read_rows([0], 4, 7)
    with pytest.raises(ValueError, match="out has shape"):
        ser.read_rows([0], 0, 2, out=out)


def test_pickle_reopens_without_copying_data(tmp_path):
    frames = ramp(50, (20, 30), 65535, np.uint16)
    path = tmp_path / "p.ser"
    write_ser(path, frames)
    ser = SERReader(path)
    blob = pickle.dumps(ser)
    assert len(blob) < frames.nbytes / 4
    clone = pickle.loads(blob)
    np.testing.assert_array_equal(clone.read(49), frames[49])
    ser.close()
    with pytest.raises(ValueError, match="closed"):
        ser.read(0)
    with pytest.raises(ValueError, match="closed"):
        pickle.loads(pickle.dumps(ser)).read(0)


def test_writer_streams_and_is_atomic(tmp_path):
    path = tmp_path / "s.ser"
    with pytest.raises(RuntimeError, match="boom"):
        with SERWriter(path, width=3, height=2, dtype=np.uint16) as w:
            w.write(np.ones((2, 3), np.uint16))
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []  # no partial file, no temporary left
    with pytest.raises(InputError, match="no frames written"):
        with SERWriter(path, width=3, height=2):
            pass
    assert list(tmp_path.iterdir()) == []
    write_ser(path, (np.full((2, 3), k, np.uint8) for k in range(4)))  # a generator
    assert SERReader(path).n_frames == 4
    with pytest.raises(InputError, match="exists"):
        write_ser(path, np.zeros((1, 2, 3), np.uint8))
    write_ser(path, np.zeros((1, 2, 3), np.uint8), overwrite=True)
    assert SERReader(path).n_frames == 1
    with pytest.raises(InputError, match=r"n_frames, height, width.*\(2, 3\)"):
        write_ser(path, np.zeros((2, 3), np.uint8), overwrite=True)
    with pytest.raises(InputError, match="no frames to write"):
        write_ser(path, [], overwrite=True)


def test_writer_value_handling(tmp_path):
    path = tmp_path / "v.ser"
    with SERWriter(path, width=3, height=1, dtype=np.uint16, pixel_depth=12) as w:
        w.write(np.array([[-5.0, 1.6, 70000.0]]))          # floats: rounded and clipped
        w.write(np.array([[1, 2, 3]], dtype=np.int64))     # ints in range: cast
        w.write(CCDData(np.array([[7, 8, 9]], np.uint16), unit="adu"))
        with pytest.raises(InputError, match="outside the uint16 range"):
            w.write(np.array([[1, 2, 70000]]))
        with pytest.raises(InputError, match="expected"):
            w.write(np.zeros((3, 1)))
    frames = np.stack(list(SERReader(path)))
    assert frames.tolist() == [[[0, 2, 65535]], [[1, 2, 3]], [[7, 8, 9]]]


@pytest.mark.parametrize("kwargs, match", [
    ({"dtype": np.float32}, "uint8 or uint16"),
    ({"dtype": np.uint8, "pixel_depth": 12}, "does not fit"),
    ({"dtype": np.uint16, "pixel_depth": 8}, "does not fit"),
    ({"pixel_depth": 17}, "does not fit"),
    ({"byte_order": "="}, "byte_order"),
    ({"color_id": 3}, "ColorID"),
])
def test_writer_option_errors(tmp_path, kwargs, match):
    with pytest.raises(InputError, match=match):
        SERWriter(tmp_path / "e.ser", width=2, height=2, **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_write_ser_carries_header_over(tmp_path):
    src = tmp_path / "in.ser"
    frames = ramp(3, (4, 4), 4095, np.uint16)
    ticks = [T0 + k * 10**5 for k in range(3)]
    write_ser(src, frames, pixel_depth=12, color_id=9, observer="O", instrument="I",
              telescope="T", date_time=T0 + 3600 * 10**7, date_time_utc=T0, timestamps=ticks,
              byte_order=">", little_endian_flag=1)
    reader = SERReader(src)
    out = tmp_path / "out.ser"
    write_ser(out, (reader.read(i) // 2 for i in range(3)), header=reader)
    copy = SERReader(out)
    for field in ("color_id", "pixel_depth", "observer", "instrument", "telescope", "date_time",
                  "date_time_utc", "little_endian_flag", "frame_count", "file_id"):
        assert getattr(copy.header, field) == getattr(reader.header, field), field
    assert copy.byte_order == ">" and copy.timestamp_ticks.tolist() == ticks
    np.testing.assert_array_equal(copy.read(1), frames[1] // 2)
    # a SERHeader or a dict works too; options override it
    write_ser(out, frames, header={"observer": "X", "pixel_depth": 12}, overwrite=True,
              telescope="Y")
    h = SERReader(out).header
    assert (h.observer, h.telescope, h.pixel_depth, h.date_time) == ("X", "Y", 12, 0)


def test_writer_like_copies_header_and_trailer_verbatim(tmp_path):
    src = tmp_path / "indi.ser"
    frames = np.stack([np.add.outer(np.arange(16), np.arange(16)).astype(np.uint16) * 50 + k
                       for k in range(4)])
    ticks = [(T0 + k * 10**5) | (1 << 62) for k in range(4)]
    write_ser(src, frames, pixel_depth=12, byte_order="<", little_endian_flag=1,
              observer="Kevin", date_time_utc=T0, timestamps=ticks, frame_count=0)
    raw = bytearray(src.read_bytes())
    raw[42 + 6:42 + 10] = b"\0\x07@\x05"  # junk after the Observer's NUL
    src.write_bytes(bytes(raw))
    with pytest.warns(SERFormatWarning):
        reader = SERReader(src)  # INDI-style flag 1 + LE data, FrameCount 0
    assert reader.byte_order == "<"
    dst = tmp_path / "cal.ser"
    with SERWriter.like(reader, dst) as w:
        for frame in reader:
            w.write(frame + 1)
    out = dst.read_bytes()
    assert out[:38] == bytes(raw[:38]) and out[42:178] == bytes(raw[42:178])
    assert int.from_bytes(out[38:42], "little") == 4  # FrameCount written correctly
    assert out[-32:] == bytes(raw[-32:])  # trailer verbatim, top bits included
    assert len(out) == len(raw)
    with pytest.warns(SERFormatWarning, match="clearly little-endian"):
        cal = SERReader(dst)  # read exactly as the input was
    np.testing.assert_array_equal(np.stack(list(cal)), frames + 1)
    assert cal.timestamps.tolist() == reader.timestamps.tolist()


def test_writer_like_bgr_and_8bit(tmp_path):
    src = tmp_path / "bgr.ser"
    frames = ramp(2, (3, 4, 3), 255, np.uint8)
    write_ser(src, frames, color_id=101)
    reader = SERReader(src)
    dst = tmp_path / "o.ser"
    with SERWriter.like(reader, dst) as w:
        for frame in reader:
            w.write(frame)
    assert dst.read_bytes() == src.read_bytes()


_READ_ALL_SCRIPT = """
import json, sys
import numpy as np
from aiflat_astro.io import SERReader

def rss():
    fields = dict(line.split(":", 1) for line in open("/proc/self/status"))
    return {k: int(fields[k].split()[0]) * 1024 for k in ("VmRSS", "VmHWM")}

with SERReader(sys.argv[1]) as reader:
    reader.read(0)
    base = rss()["VmRSS"]
    total = 0
    for i in range(reader.n_frames):
        total += int(reader.read(i)[7, 7])
    rows = reader.read_rows(range(reader.n_frames), 10, 12)
    print(json.dumps({"base": base, "peak": rss()["VmHWM"], "rss": rss()["VmRSS"], "total": total,
                      "rows": list(rows.shape)}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_reading_every_frame_keeps_memory_bounded(tmp_path):
    """Frames are read with positional reads: a full pass over a 100 MB video leaves nothing resident."""
    n, shape = 100, (500, 1000)
    path = tmp_path / "big.ser"
    frame = (np.arange(shape[0] * shape[1], dtype=np.uint16).reshape(shape) % 4000)
    write_ser(path, (frame + k for k in range(n)), pixel_depth=12)
    proc = subprocess.run([sys.executable, "-c", _READ_ALL_SCRIPT, str(path)], capture_output=True, text=True,
                          timeout=300, check=True)
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["total"] == sum(int(frame[7, 7]) + k for k in range(n))
    assert report["rows"] == [n, 2, shape[1]]
    assert report["peak"] - report["base"] < 20e6  # the data are 100 MB
    assert report["rss"] - report["base"] < 10e6
