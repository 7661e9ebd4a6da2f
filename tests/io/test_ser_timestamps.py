"""SER timestamp trailer: .NET ticks, top bits, UTC/local, validation."""

import numpy as np
import pytest

from aiflat_astro.io.ser import SERReader, datetime_to_ticks, write_ser
from aiflat_astro.utils.exceptions import SERFormatWarning

T0 = datetime_to_ticks("2024-04-08T18:17:00")
HOUR = 3600 * 10**7
STEP = 10**5  # 10 ms: 100 fps


def frames(n=6, shape=(4, 5)):
    return np.arange(n * shape[0] * shape[1], dtype=np.uint8).reshape(n, *shape)


def write(path, ticks, *, utc=T0, local=T0 + 2 * HOUR, n=6, **kw):
    write_ser(path, frames(n), timestamps=ticks, date_time=local, date_time_utc=utc, **kw)
    return path


def test_utc_trailer(tmp_path):
    path = write(tmp_path / "u.ser", [T0 + k * STEP for k in range(6)])
    ser = SERReader(path)
    assert ser.timestamps_reference == "UTC" and ser.warnings_list == []
    assert ser.timestamps.dtype == np.dtype("datetime64[us]")
    assert str(ser.timestamps[0]) == "2024-04-08T18:17:00.000000"
    assert ser.timestamps[5] - ser.timestamps[0] == np.timedelta64(50, "ms")
    assert ser.fps == pytest.approx(100.0)
    assert str(ser.header.start_time) == "2024-04-08T20:17:00.000000"  # local kept apart
    hdr = ser.frame_ccd(3).header
    assert hdr["DATE-OBS"] == "2024-04-08T18:17:00.030000" and hdr["TIMESYS"] == "UTC"
    assert ser.meta["DATE-END"] == "2024-04-08T18:17:00.050000"


def test_no_trailer(tmp_path):
    path = tmp_path / "n.ser"
    write_ser(path, frames(), date_time_utc=T0)
    assert path.stat().st_size == 178 + 6 * 20
    ser = SERReader(path)
    assert ser.timestamps is None and ser.fps is None and ser.warnings_list == []
    hdr = ser.frame_ccd(0).header
    assert "DATE-OBS" not in hdr and hdr["SERSTART"] == "2024-04-08T18:17:00.000000"


def test_writer_fills_header_dates_from_first_timestamp(tmp_path):
    path = tmp_path / "d.ser"
    write_ser(path, frames(2), timestamps=[np.datetime64("2023-01-02T03:04:05"),
                                           np.datetime64("2023-01-02T03:04:06")])
    ser = SERReader(path)
    assert str(ser.header.start_time_utc) == "2023-01-02T03:04:05.000000"
    assert ser.header.date_time == ser.header.date_time_utc
    assert ser.fps == pytest.approx(1.0)


def test_short_trailer_is_dropped(tmp_path):
    path = write(tmp_path / "s.ser", [T0 + k * STEP for k in range(6)])
    path.write_bytes(path.read_bytes()[:-4])
    with pytest.warns(SERFormatWarning, match="44 bytes after the last frame ignored"):
        ser = SERReader(path)
    assert ser.n_frames == 6 and ser.timestamps is None


def test_extra_bytes_after_trailer(tmp_path):
    path = write(tmp_path / "x.ser", [T0 + k * STEP for k in range(6)])
    with open(path, "ab") as fh:
        fh.write(b"PIPP")
    with pytest.warns(SERFormatWarning, match="4 unexpected bytes after the timestamp trailer"):
        ser = SERReader(path)
    assert ser.timestamps is not None and ser.n_frames == 6


def test_local_time_trailer_is_converted(tmp_path):
    local = T0 + 2 * HOUR
    path = write(tmp_path / "l.ser", [local + k * STEP for k in range(6)])
    with pytest.warns(SERFormatWarning, match=r"local time.*\+2.00 h"):
        ser = SERReader(path)
    assert ser.timestamps_reference == "local"
    assert str(ser.timestamps[0]) == "2024-04-08T18:17:00.000000"  # UTC
    # a negative UTC offset (west of Greenwich)
    path = write(tmp_path / "w.ser", [T0 - 5 * HOUR + k * STEP for k in range(6)],
                 local=T0 - 5 * HOUR)
    with pytest.warns(SERFormatWarning, match=r"-5.00 h"):
        assert str(SERReader(path).timestamps[1]) == "2024-04-08T18:17:00.010000"


@pytest.mark.parametrize("bits", [1 << 62, 1 << 63, 3 << 62])
def test_top_two_bits_are_masked(tmp_path, bits):
    ticks = [(T0 + k * STEP) | bits for k in range(6)]
    path = write(tmp_path / "k.ser", ticks, utc=T0 | bits)
    raw = np.frombuffer(path.read_bytes()[-48:], "<u8")
    assert int(raw[0]) == T0 | bits  # written verbatim
    ser = SERReader(path)
    assert ser.warnings_list == [] and ser.timestamps_reference == "UTC"
    assert str(ser.timestamps[0]) == "2024-04-08T18:17:00.000000"
    assert str(ser.header.start_time_utc) == "2024-04-08T18:17:00.000000"


def test_garbage_trailer_is_dropped(tmp_path):
    rng = np.random.default_rng(0)
    ticks = [int(t) for t in rng.integers(-2**63, 2**63 - 1, size=6, dtype=np.int64)]
    path = write(tmp_path / "g.ser", ticks)
    with pytest.warns(SERFormatWarning, match="not dates between 1990 and 2100"):
        ser = SERReader(path)
    assert ser.timestamps is None and "dropped" in ser.timestamps_reason
    np.testing.assert_array_equal(ser.read(5), frames()[5])  # frames are kept


def test_zero_trailer_is_dropped(tmp_path):
    path = write(tmp_path / "z.ser", [0] * 6)
    with pytest.warns(SERFormatWarning, match="6 of 6 timestamps"):
        assert SERReader(path).timestamps is None


def test_backwards_trailer_is_dropped(tmp_path):
    path = write(tmp_path / "b.ser", [T0 + (5 - k) * STEP for k in range(6)])
    with pytest.warns(SERFormatWarning, match="5 of 5 timestamps go backwards"):
        assert SERReader(path).timestamps is None


def test_one_out_of_order_is_kept(tmp_path):
    ticks = [T0 + k * STEP for k in range(6)]
    ticks[3], ticks[4] = ticks[4], ticks[3]
    path = write(tmp_path / "o.ser", ticks)
    with pytest.warns(SERFormatWarning, match="1 timestamps are not in increasing order"):
        ser = SERReader(path)
    assert ser.timestamps is not None and ser.fps == pytest.approx(100.0)


def test_identical_timestamps(tmp_path):
    path = write(tmp_path / "i.ser", [T0] * 6)
    with pytest.warns(SERFormatWarning, match="all timestamps are identical"):
        ser = SERReader(path)
    assert ser.timestamps is not None and ser.fps is None


def test_trailer_far_from_header_is_dropped(tmp_path):
    path = write(tmp_path / "f.ser", [T0 + 3 * 24 * HOUR + k * STEP for k in range(6)])
    with pytest.warns(SERFormatWarning, match="more than a day away"):
        assert SERReader(path).timestamps is None


def test_header_without_dates_trusts_trailer_as_utc(tmp_path):
    path = tmp_path / "h.ser"
    write_ser(path, frames(), timestamps=[T0 + k * STEP for k in range(6)], date_time=-1,
              date_time_utc=0)  # JSol'Ex writes -1, Siril 0
    ser = SERReader(path)
    assert ser.header.date_time == -1 and ser.header.start_time is None
    assert ser.timestamps_reference == "UTC" and "as specified" in ser.timestamps_reason
    assert ser.warnings_list == []


def test_mixed_timestamps_refused(tmp_path):
    from aiflat_astro.io.ser import SERWriter

    with pytest.raises(ValueError, match="every frame or for none"):
        with SERWriter(tmp_path / "m.ser", width=2, height=2) as w:
            w.write(np.zeros((2, 2), np.uint8), timestamp=T0)
            w.write(np.zeros((2, 2), np.uint8))
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="fewer timestamps than frames"):
        write_ser(tmp_path / "m.ser", frames(3), timestamps=[T0])
    with pytest.raises(ValueError, match="more timestamps than frames"):
        write_ser(tmp_path / "m.ser", frames(1), timestamps=[T0, T0])
    assert list(tmp_path.iterdir()) == []


def test_timestamp_types(tmp_path):
    import datetime

    from astropy.time import Time

    stamps = [T0, np.datetime64("2024-04-08T18:17:00.01"),
              datetime.datetime(2024, 4, 8, 20, 17, 0, 20000,
                                tzinfo=datetime.timezone(datetime.timedelta(hours=2))),
              Time("2024-04-08T18:17:00.03", scale="utc"), "2024-04-08T18:17:00.04",
              datetime.datetime(2024, 4, 8, 18, 17, 0, 50000)]
    path = write(tmp_path / "t.ser", stamps)
    ser = SERReader(path)
    diffs = np.diff(ser.timestamps).astype("timedelta64[us]").astype(int)
    assert diffs.tolist() == [10000] * 5
