"""SER frame count and file size: FrameCount 0 / too large, truncation, files over 4 GiB."""

import struct

import numpy as np
import pytest

from aiflat_astro.io.ser import HEADER_SIZE, SERReader, datetime_to_ticks, ser_layout, write_ser
from aiflat_astro.utils.exceptions import SERFormatError, SERFormatWarning

T0 = datetime_to_ticks("2021-06-10T10:00:00")


def set_frame_count(path, n):
    raw = bytearray(path.read_bytes())
    raw[38:42] = struct.pack("<i", n)
    path.write_bytes(bytes(raw))


def video(n=5, shape=(6, 7), dtype=np.uint16):
    return (np.arange(n * shape[0] * shape[1]).reshape(n, *shape) * 37 % 4000).astype(dtype)


def test_frame_count_zero_no_trailer(tmp_path):
    path = tmp_path / "z.ser"
    write_ser(path, video(), pixel_depth=12, frame_count=0)
    assert int.from_bytes(path.read_bytes()[38:42], "little") == 0
    with pytest.warns(SERFormatWarning, match="FrameCount is 0.*using the 5 complete frames"):
        ser = SERReader(path)
    assert ser.n_frames == 5 and ser.timestamps is None
    np.testing.assert_array_equal(ser.read(4), video()[4])
    assert path.read_bytes()[38:42] == b"\0\0\0\0"  # the input is never repaired in place


def test_frame_count_zero_with_trailer_large_frames(tmp_path):
    path = tmp_path / "zt.ser"
    write_ser(path, video(), pixel_depth=12, frame_count=0,
              timestamps=[T0 + k * 10**6 for k in range(5)])
    with pytest.warns(SERFormatWarning, match="FrameCount is 0"):
        ser = SERReader(path)
    assert ser.n_frames == 5 and ser.timestamps is not None and ser.fps == pytest.approx(10)


@pytest.mark.parametrize("shape, dtype", [((1, 2), np.uint8), ((2, 2), np.uint8),
                                          ((1, 1), np.uint16), ((2, 4), np.uint8)])
def test_frame_count_zero_with_trailer_tiny_frames(tmp_path, shape, dtype):
    # 8 bytes of trailer per frame hold one or more whole "frames": the trailer must be found
    frames = video(12, shape, dtype)
    path = tmp_path / "tiny.ser"
    write_ser(path, frames, frame_count=0, timestamps=[T0 + k * 10**5 for k in range(12)])
    with pytest.warns(SERFormatWarning, match="using the 12 complete frames"):
        ser = SERReader(path)
    assert ser.n_frames == 12 and ser.fps == pytest.approx(100)
    np.testing.assert_array_equal(ser.read(11), frames[11])


def test_frame_count_zero_tiny_frames_without_trailer(tmp_path):
    # same sizes as a frames+trailer split, but the tail is pixel data, not timestamps
    frames = video(20, (1, 2), np.uint8)
    path = tmp_path / "t.ser"
    write_ser(path, frames, frame_count=0)  # 40 bytes = 4 * (2 + 8): could be 4 frames + trailer
    with pytest.warns(SERFormatWarning, match="using the 20 complete frames"):
        ser = SERReader(path)
    assert ser.n_frames == 20 and ser.timestamps is None


def test_frame_count_too_large(tmp_path):
    path = tmp_path / "big.ser"
    write_ser(path, video(), pixel_depth=12, frame_count=9)
    with pytest.warns(SERFormatWarning, match="only 5 complete frames but the header FrameCount "
                                              "is 9"):
        ser = SERReader(path)
    assert ser.n_frames == 5 and ser.header.frame_count == 9


def test_truncated_last_frame(tmp_path):
    path = tmp_path / "cut.ser"
    write_ser(path, video(), pixel_depth=12, timestamps=[T0 + k for k in range(5)])
    path.write_bytes(path.read_bytes()[:HEADER_SIZE + 4 * 84 + 50])  # capture crashed mid-frame
    with pytest.warns(SERFormatWarning) as record:
        ser = SERReader(path)
    messages = [str(w.message) for w in record]
    assert any("only 4 complete frames" in m for m in messages)
    assert any("incomplete last frame (50 bytes) ignored" in m for m in messages)
    assert ser.n_frames == 4 and ser.timestamps is None
    np.testing.assert_array_equal(ser.read(-1), video()[3])


def test_frame_count_smaller_than_data(tmp_path):
    path = tmp_path / "small.ser"
    write_ser(path, video(), pixel_depth=12, frame_count=3)
    with pytest.warns(SERFormatWarning, match="trailer ignored"):  # frames 3-4 are not a trailer
        ser = SERReader(path)
    assert ser.n_frames == 3


def test_zero_frames(tmp_path):
    path = tmp_path / "empty.ser"
    write_ser(path, video(1), pixel_depth=12)
    path.write_bytes(path.read_bytes()[:HEADER_SIZE + 10])
    with pytest.raises(SERFormatError, match="contains no complete frame"):
        SERReader(path)
    path.write_bytes(path.read_bytes()[:HEADER_SIZE])
    with pytest.raises(SERFormatError, match="contains no complete frame"):
        SERReader(path)


def test_layout_arithmetic_beyond_4gib():
    fb = 1936 * 1216 * 2  # 16-bit frames of an IMX174
    n = 3000  # 14 GB
    size = HEADER_SIZE + n * fb + 8 * n
    lay = ser_layout(size, n, fb)
    assert lay.n_frames == n and lay.trailer_offset == HEADER_SIZE + n * fb > 2**32
    assert lay.trailer_count == n and lay.notes == []
    # numpy 32-bit inputs (as from a header parsed with numpy) must not wrap past 4 GiB
    lay32 = ser_layout(np.uint64(size), np.int32(n), np.uint32(fb))
    assert lay32.trailer_offset == lay.trailer_offset and type(lay32.trailer_offset) is int
    # crashed: FrameCount 0, half a frame written, whose bytes are no timestamps
    lay = ser_layout(size - 8 * n - fb // 2, 0, fb, trailer_ok=lambda offset, count: False)
    assert lay.n_frames == n - 1 and lay.trailer_offset is None
    assert "bytes after the last frame ignored" in lay.notes[-1]
    lay = ser_layout(2**40, 2**31 - 1, fb)
    assert lay.n_frames == (2**40 - HEADER_SIZE) // fb


def test_sparse_file_over_4gib_opens_lazily(tmp_path):
    width, height = 1024, 1024  # 2 MiB frames
    fb = width * height * 2
    n = 2600  # 5.08 GiB
    path = tmp_path / "huge.ser"
    header = struct.pack("<14s7i40s40s40sqq", b"LUCAM-RECORDER", 0, 0, 0, width, height, 16, n,
                         b"", b"", b"", T0, T0)
    last = (np.arange(width * height, dtype=np.uint32) % 3001).astype("<u2").reshape(height, width)
    with open(path, "wb") as fh:
        fh.write(header)
        fh.seek(HEADER_SIZE + (n - 1) * fb)
        fh.write(last.tobytes())
        fh.write(np.array([T0 + k * 10**5 for k in range(n)], "<i8").tobytes())
    if path.stat().st_blocks * 512 > 64 * 2**20:  # pragma: no cover - filesystem without holes
        path.unlink()
        pytest.skip("file system does not support sparse files")
    assert path.stat().st_size > 5 * 2**30
    ser = SERReader(path)
    assert ser.n_frames == n and ser.warnings_list == []
    np.testing.assert_array_equal(ser.read(n - 1), last)
    np.testing.assert_array_equal(ser.read_rows([n - 1], 1000, 1003), last[np.newaxis, 1000:1003])
    assert ser.read(1300).max() == 0
    assert ser.fps == pytest.approx(100)
    assert ser.measured_depth == 12
    ser.close()
