"""SER header: byte layout, strings, FileID, invalid headers."""

import struct

import numpy as np
import pytest

from aiflat_astro.io.ser import (HEADER_SIZE, SERHeader, SERReader, datetime_to_ticks,
                                 parse_capture_metadata, ticks_to_datetime64, write_ser)
from aiflat_astro.utils.exceptions import SERFormatError, SERFormatWarning

LAYOUT = struct.Struct("<14s7i40s40s40sqq")


def _patch(path, offset, raw):
    data = bytearray(path.read_bytes())
    data[offset:offset + len(raw)] = raw
    path.write_bytes(bytes(data))


def test_header_size_matches_spec():
    assert HEADER_SIZE == LAYOUT.size == 178


def test_written_header_bytes_follow_struct_layout(tmp_path):
    path = tmp_path / "h.ser"
    t0 = datetime_to_ticks("2024-04-08T18:00:00")
    frames = np.arange(2 * 3 * 5, dtype=np.uint16).reshape(2, 3, 5)
    write_ser(path, frames, pixel_depth=14, observer="Ann Observer", instrument="ZWO ASI174MM",
              telescope="fps=113.64gain=85exp=8.00", date_time=t0 + 7200 * 10**7,
              date_time_utc=t0, timestamps=[t0, t0 + 10**5])
    raw = path.read_bytes()
    fields = LAYOUT.unpack(raw[:178])
    assert fields[0] == b"LUCAM-RECORDER"
    assert fields[1:8] == (0, 0, 0, 5, 3, 14, 2)   # LuID, ColorID, flag, W, H, depth, count
    assert fields[8] == b"Ann Observer".ljust(40, b"\0")
    assert fields[9] == b"ZWO ASI174MM".ljust(40, b"\0")
    assert fields[10].rstrip(b"\0") == b"fps=113.64gain=85exp=8.00"
    assert fields[11:] == (t0 + 7200 * 10**7, t0)
    # offsets of the integers, read independently of the struct
    assert int.from_bytes(raw[26:30], "little") == 5 and int.from_bytes(raw[30:34], "little") == 3
    assert int.from_bytes(raw[38:42], "little") == 2
    # frames follow without padding, little-endian; then the trailer
    assert raw[178:180] == (0).to_bytes(2, "little") and raw[180:182] == (1).to_bytes(2, "little")
    assert len(raw) == 178 + 2 * 3 * 5 * 2 + 8 * 2
    assert np.frombuffer(raw[-16:], "<i8").tolist() == [t0, t0 + 10**5]


def test_header_roundtrip_and_derived_sizes():
    h = SERHeader(color_id=100, width=7, height=5, pixel_depth=10, frame_count=3,
                  observer="x", date_time=5, date_time_utc=6)
    assert SERHeader.from_bytes(h.to_bytes()) == h
    assert h.planes == 3 and h.bytes_per_sample == 2 and h.frame_bytes == 7 * 5 * 3 * 2
    assert SERHeader(pixel_depth=8, width=2, height=2).bytes_per_sample == 1
    assert SERHeader(color_id=10).bayer_pattern == "GBRG"
    assert SERHeader(color_id=18).bayer_pattern == "YMCY"
    assert SERHeader(color_id=101).bayer_pattern is None


def test_strings_junk_after_nul_leading_spaces_and_latin1(tmp_path):
    path = tmp_path / "s.ser"
    write_ser(path, np.zeros((1, 2, 2), np.uint8))
    _patch(path, 42, b"Kevin M. Gill\0\x01@\x07\0\xff\x05".ljust(40, b"\0"))
    _patch(path, 82, b"      Unknown Instrument".ljust(40, b"\0"))
    _patch(path, 122, "Teleskop Gr\xf6\xdfe".encode("latin-1").ljust(40, b"\0"))
    with SERReader(path) as ser:
        assert ser.header.observer == "Kevin M. Gill"
        assert ser.header.instrument == "Unknown Instrument"
        assert ser.header.telescope == "Teleskop Größe"
        hdr = ser.frame_ccd(0).header
        assert hdr["OBSERVER"] == "Kevin M. Gill"
        assert hdr["TELESCOP"] == "Teleskop Gr??e"  # FITS cards are ASCII
        assert ser.warnings_list == []


def test_string_too_long_is_refused(tmp_path):
    with pytest.raises(ValueError, match="Observer"):
        write_ser(tmp_path / "x.ser", np.zeros((1, 2, 2), np.uint8), observer="x" * 41)
    assert not (tmp_path / "x.ser").exists()


@pytest.mark.parametrize("file_id", ["JSOLEX-TRIMMED", "PlxCapture"])
def test_other_file_id_warns_but_reads(tmp_path, file_id):
    path = tmp_path / "j.ser"
    write_ser(path, np.full((2, 3, 4), 9, np.uint8), file_id=file_id)
    assert path.read_bytes()[:14] == file_id.encode().ljust(14, b"\0")
    with pytest.warns(SERFormatWarning, match=f"FileID is '{file_id}'") as record:
        ser = SERReader(path)
    assert record[0].filename == __file__  # attributed to the code that opened the file
    assert ser.n_frames == 2 and ser.read(1).max() == 9


@pytest.mark.parametrize("color_id", [1, 2, 7, 12, 99, 255, -1])
def test_unknown_color_id_read_as_mono(tmp_path, color_id):
    path = tmp_path / "odd.ser"
    frames = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_ser(path, frames)
    _patch(path, 18, struct.pack("<i", color_id))
    with pytest.warns(SERFormatWarning, match=f"unknown ColorID {color_id}: read as mono"):
        ser = SERReader(path)
    assert ser.frame_shape == (3, 4) and ser.bayer_pattern is None
    np.testing.assert_array_equal(ser.read(1), frames[1])


@pytest.mark.parametrize("offset, value, match", [
    (34, 0, "PixelDepthPerPlane 0"),
    (34, 17, "PixelDepthPerPlane 17"),
    (26, 0, "image size 0x2"),
    (30, -3, "image size 2x-3"),
])
def test_invalid_header_values(tmp_path, offset, value, match):
    path = tmp_path / "bad.ser"
    write_ser(path, np.zeros((1, 2, 2), np.uint8))
    _patch(path, offset, struct.pack("<i", value))
    with pytest.raises(SERFormatError, match=f"invalid header: {match}"):
        SERReader(path)


def test_not_a_ser_file(tmp_path):
    short = tmp_path / "short.ser"
    short.write_bytes(b"hello")
    with pytest.raises(SERFormatError, match="not a SER video: only 5 bytes"):
        SERReader(short)
    junk = tmp_path / "junk.ser"
    junk.write_bytes(bytes(range(256)) * 2)
    with pytest.raises(SERFormatError, match="'junk.ser' is not a SER video"):
        SERReader(junk)


def test_firecapture_metadata():
    assert parse_capture_metadata("fps=113.64gain=85exp=8.00") == {
        "fps": 113.64, "gain": 85, "exp": 8.0}
    assert parse_capture_metadata("Gain=300 Exposure=1.5e-3") == {"gain": 300, "exposure": 1.5e-3}
    assert parse_capture_metadata("") == {}
    assert parse_capture_metadata("TEC 140 f/7") == {}


def test_ticks_conversion():
    t = datetime_to_ticks("2000-01-01T00:00:00")
    assert t == 630_822_816_000_000_000
    assert ticks_to_datetime64(t) == np.datetime64("2000-01-01T00:00:00")
    # top two bits are undefined in SER files and masked
    assert ticks_to_datetime64(t | (1 << 62)) == np.datetime64("2000-01-01")
    both = np.int64(t | (1 << 62) | (-(1 << 63)))  # both top bits: a negative int64
    assert ticks_to_datetime64(both) == np.datetime64("2000-01-01")
    arr = ticks_to_datetime64([t, t + 15])  # 1.5 us
    assert arr.dtype == np.dtype("datetime64[us]") and (arr[1] - arr[0]) == np.timedelta64(1, "us")
