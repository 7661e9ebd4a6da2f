"""Tests of aiflat_astro.combine.median_combine: exactness, sources, header, memory."""

import hashlib
import json
import logging
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from astropy.io import fits
from astropy.nddata import CCDData

from aiflat_astro import combine
from aiflat_astro.combine import median_combine
from aiflat_astro.io import SERReader, write_ser
from aiflat_astro.provenance import sha256_file
from aiflat_astro.utils.exceptions import InputError

RNG = np.random.default_rng(20261123)


def _stack(n, shape=(37, 45), dtype=np.uint16, high=4096):
    """Noisy frames around a smooth scene, with many ties (as real integer data)."""
    dtype = np.dtype(dtype)
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    scene = 0.5 * high * (1 + 0.5 * np.sin(xx / 7.0) * np.cos(yy / 5.0))
    if len(shape) == 3:
        scene = scene[..., None] * np.array([1.0, 0.8, 0.6])
    frames = RNG.normal(scene, 0.05 * high, size=(n,) + tuple(scene.shape))
    if dtype.kind == "f":
        return frames.astype(dtype)
    info = np.iinfo(dtype)
    return np.clip(np.round(frames), info.min, info.max).astype(dtype)


def _reference(stack):
    return np.median(stack, axis=0).astype(np.float32)


def _assert_exact(result, expected):
    data = result.data if isinstance(result, CCDData) else result
    assert data.dtype == np.float32
    assert data.shape == expected.shape
    np.testing.assert_array_equal(data, expected)  # NaN == NaN here; bit-exact otherwise
    assert np.array_equal(data.view(np.uint32), expected.view(np.uint32))


class TestExactness:
    """The result is bit-identical to np.median(stack, axis=0).astype(float32)."""

    @pytest.mark.parametrize("n", [1, 2, 3, 4, 10, 11, 50, 51])
    @pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
    def test_odd_even_integer(self, n, dtype):
        stack = _stack(n, dtype=dtype, high=250 if dtype == np.uint8 else 4096)
        _assert_exact(median_combine(stack), _reference(stack))

    @pytest.mark.parametrize("dtype", [np.int16, np.int32, np.int64, np.uint32,
                                       np.float32, np.float64])
    @pytest.mark.parametrize("n", [6, 7])
    def test_other_dtypes(self, n, dtype):
        stack = _stack(n, dtype=dtype, high=30000)
        if np.dtype(dtype) == np.int64:  # values that float64 cannot hold exactly
            stack = stack * (10**12 + 7) + 3
        if np.dtype(dtype).kind == "f":
            stack -= np.asarray(15000, dtype)  # negative values too
        _assert_exact(median_combine(stack), _reference(stack))

    def test_full_uint16_range(self):
        stack = RNG.integers(0, 65536, size=(8, 20, 30), dtype=np.uint16)
        stack[:, 0, 0] = 65535
        _assert_exact(median_combine(stack), _reference(stack))

    @pytest.mark.parametrize("n", [5, 6])
    def test_nan_lanes(self, n):
        stack = _stack(n, dtype=np.float32)
        stack[0, 3, 4] = np.nan
        stack[:, 5, 6] = np.nan
        stack[n - 1, 7, 8] = np.inf
        result = median_combine(stack)
        _assert_exact(result, _reference(stack))
        assert np.isnan(result.data[3, 4]) and np.isnan(result.data[5, 6])

    @pytest.mark.parametrize("n", [4, 5])
    def test_rgb_array(self, n):
        stack = _stack(n, shape=(21, 33, 3))
        result = median_combine(stack)
        assert result.shape == (21, 33, 3)
        _assert_exact(result, _reference(stack))

    @pytest.mark.parametrize("step,max_frames", [(1, 7), (3, None), (4, 5), (2, 1), (100, None)])
    def test_step_and_max_frames(self, step, max_frames):
        stack = _stack(23)
        result = median_combine(stack, step=step, max_frames=max_frames)
        used = stack[::step][:max_frames]
        _assert_exact(result, _reference(used))
        header = result.header
        assert header["NCOMBINE"] == len(used)
        assert header["FRAME0"] == 0
        assert header["FRAME1"] == (len(used) - 1) * step
        assert header["FRAMESTP"] == step

    @pytest.mark.parametrize("n", [12, 13])
    def test_many_strips(self, n, caplog, monkeypatch):
        """A small strip target (as a tight mem_limit would give) splits into many strips."""
        monkeypatch.setattr(combine, "_STRIP_TARGET", 1)
        monkeypatch.setattr(combine, "_MIN_BLOCK", 1)
        stack = _stack(n, shape=(50, 17))
        with caplog.at_level(logging.INFO, logger="aiflat_astro.combine"):
            result = median_combine(stack)
        _assert_exact(result, _reference(stack))
        strips = [r for r in caplog.records if "strips of" in r.getMessage()]
        assert strips and " 50 strips of 1 rows" in strips[0].getMessage()

    def test_mem_limit_sets_strips(self, caplog):
        stack = _stack(40, shape=(256, 256))
        with caplog.at_level(logging.INFO, logger="aiflat_astro.combine"):
            result = median_combine(stack, mem_limit=combine._n_workers() * 2**20 + 1_500_000)
        _assert_exact(result, _reference(stack))
        message = [r.getMessage() for r in caplog.records if "strips of" in r.getMessage()][0]
        assert int(message.split(": ")[1].split(" strips")[0]) >= 8

    def test_mem_limit_too_small(self):
        with pytest.raises(InputError, match="mem_limit .* too small"):
            median_combine(np.zeros((50, 4, 2000), np.uint16), mem_limit="100KB")

    def test_progress_bar(self, capsys):
        stack = _stack(5)
        _assert_exact(median_combine(stack, progress_bar=True), _reference(stack))
        assert "median" in capsys.readouterr().err


class TestExactnessProperties:
    """Property-style checks: random stacks over dtypes, counts, ties, extremes and layouts."""

    DTYPES = [np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32, np.float32,
              np.float64]

    @staticmethod
    def _random_stack(rng, dtype, n, shape):
        dtype = np.dtype(dtype)
        if dtype.kind == "f":
            kind = rng.integers(3)
            if kind == 0:  # many ties
                return rng.integers(-3, 4, size=(n,) + shape).astype(dtype)
            stack = rng.normal(0, 1e3, size=(n,) + shape).astype(dtype)
            if kind == 2:
                stack[rng.random(stack.shape) < 0.02] = np.nan
            return stack
        info = np.iinfo(dtype)
        kind = rng.integers(3)
        if kind == 0:  # few distinct values: ties everywhere
            values = rng.integers(info.min, info.max, size=3, endpoint=True, dtype=dtype)
            return rng.choice(np.append(values, [info.min, info.max]).astype(dtype),
                              size=(n,) + shape)
        if kind == 1:  # only the extreme values (0 and 65535 for uint16)
            return np.where(rng.random((n,) + shape) < 0.5, info.min, info.max).astype(dtype)
        return rng.integers(info.min, info.max, size=(n,) + shape, endpoint=True, dtype=dtype)

    @pytest.mark.parametrize("dtype", DTYPES)
    def test_random_stacks(self, dtype):
        rng = np.random.default_rng(np.dtype(dtype).num)
        for trial in range(12):
            n = int(rng.integers(1, 41)) if trial > 1 else trial + 1  # n = 1, 2 and random
            shape = (int(rng.integers(1, 23)), int(rng.integers(1, 31)))
            stack = self._random_stack(rng, dtype, n, shape)
            _assert_exact(median_combine(stack), _reference(stack))

    @pytest.mark.parametrize("n", [63, 64])
    def test_extremes_uint16(self, n):
        """0 and 65535 in the middle order statistics: the even average must not overflow."""
        stack = np.zeros((n, 9, 11), np.uint16)
        stack[n // 2:] = 65535
        stack[:, 0, 0] = 65535
        stack[:, 1, :] = np.arange(n, dtype=np.uint16)[:, None] * 1000
        _assert_exact(median_combine(stack), _reference(stack))

    @pytest.mark.parametrize("n", [29, 30])
    @pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
    def test_uneven_strips_and_chunks(self, n, dtype, monkeypatch):
        """Strips whose rows, and chunks whose lanes, do not divide the frame evenly."""
        monkeypatch.setattr(combine, "_STRIP_TARGET", 1)
        monkeypatch.setattr(combine, "_MIN_BLOCK", 7 * 13 * np.dtype(dtype).itemsize)  # 7 rows
        monkeypatch.setattr(combine, "_CHUNK_BYTES", 1)  # one lane per chunk: n values
        stack = self._random_stack(np.random.default_rng(n), dtype, n, (45, 13))
        _assert_exact(median_combine(stack), _reference(stack))
        monkeypatch.setattr(combine, "_CHUNK_BYTES", 11 * n * 8)  # 11 (or 22, 44) lanes a chunk
        _assert_exact(median_combine(stack), _reference(stack))

    @pytest.mark.parametrize("n", [40, 41])
    def test_uneven_strips_ser(self, tmp_path, n, monkeypatch):
        """The positional-read path with strips and chunks that do not divide the frame."""
        monkeypatch.setattr(combine, "_STRIP_TARGET", 1)
        monkeypatch.setattr(combine, "_MIN_BLOCK", 5 * 31 * 2)  # 5-row strips of 33 rows
        monkeypatch.setattr(combine, "_CHUNK_BYTES", 17 * n * 2)  # 17 lanes a chunk
        stack = np.random.default_rng(n).integers(0, 65536, size=(n, 33, 31), dtype=np.uint16)
        stack[:, :3] = np.uint16(65535)
        stack[:, 3:6] = 0
        path = tmp_path / "v.ser"
        write_ser(path, stack, pixel_depth=16)
        _assert_exact(median_combine(path), _reference(stack))


class TestSources:
    """SER videos, FITS cubes, FITS files and open frame sources."""

    @pytest.mark.parametrize("n", [8, 9])
    @pytest.mark.parametrize("byte_order", ["<", ">"])
    def test_ser_uint16(self, tmp_path, n, byte_order):
        stack = _stack(n, shape=(40, 24))
        path = tmp_path / "v.ser"
        write_ser(path, stack, pixel_depth=12, byte_order=byte_order,
                  little_endian_flag=int(byte_order == ">"))
        result = median_combine(path, mem_limit="8MB")
        _assert_exact(result, _reference(stack))
        header = result.header
        assert header["PROV1"] == "v.ser"
        assert header["PROVSHA1"] == sha256_file(path)
        assert header["NCOMBINE"] == n
        assert header["ROWORDER"] == "TOP-DOWN"
        assert header["BUNIT"] == "adu"
        assert result.unit == "adu"

    def test_ser_uint8_step(self, tmp_path):
        stack = _stack(15, shape=(30, 20), dtype=np.uint8, high=250)
        path = tmp_path / "v8.ser"
        write_ser(path, stack)
        _assert_exact(median_combine(str(path), step=2, max_frames=6), _reference(stack[::2][:6]))

    @pytest.mark.parametrize("color_id", [100, 101])
    def test_ser_rgb_bgr(self, tmp_path, color_id):
        stack = _stack(6, shape=(12, 16, 3))
        path = tmp_path / "rgb.ser"
        write_ser(path, stack, color_id=color_id)
        result = median_combine(path)
        assert result.shape == (12, 16, 3)
        _assert_exact(result, _reference(stack))  # RGB order whatever the file order

    def test_open_source_left_open(self, tmp_path):
        stack = _stack(5)
        path = tmp_path / "v.ser"
        write_ser(path, stack)
        with SERReader(path) as ser:
            _assert_exact(median_combine(ser), _reference(stack))
            assert ser.read(0).shape == stack.shape[1:]  # still usable

    def test_duck_typed_source(self):
        stack = _stack(7)

        class Source:
            n_frames, frame_shape, dtype = stack.shape[0], stack.shape[1:], stack.dtype

            def read_rows(self, indices, r0, r1):
                return stack[list(indices), r0:r1]

        result = median_combine(Source())
        _assert_exact(result, _reference(stack))
        assert "PROVSHA1" not in result.header

    @pytest.mark.parametrize("dtype,bzero", [(np.int16, None), (np.uint16, None),
                                             (np.float32, None), (np.int16, 100)])
    def test_fits_cube(self, tmp_path, dtype, bzero):
        stack = _stack(9, shape=(20, 30), dtype=dtype, high=3000)
        path = tmp_path / "cube.fits"
        hdu = fits.PrimaryHDU(stack)
        if bzero is not None:  # scaled data: read through the FITS library
            hdu.scale("int16", bzero=bzero)
        hdu.header["INSTRUME"] = "TESTCAM"
        hdu.writeto(path)
        with fits.open(path, memmap=False) as hdul:
            expected = _reference(np.asarray(hdul[0].data))
        result = median_combine(path, mem_limit="4MB")
        _assert_exact(result, expected)
        assert result.header["INSTRUME"] == "TESTCAM"
        assert result.header["PROVSHA1"] == sha256_file(path)

    def test_fits_files_list_and_folder(self, tmp_path):
        stack = _stack(12, shape=(16, 20), dtype=np.int16)
        paths = []
        for k, frame in enumerate(stack):
            paths.append(tmp_path / f"f{k}.fits")
            fits.writeto(paths[-1], frame)
        few = median_combine(paths[:4])
        _assert_exact(few, _reference(stack[:4]))
        for k in range(4):
            assert few.header[f"PROV{k + 1}"] == f"f{k}.fits"
            assert few.header[f"PROVSHA{k + 1}"] == sha256_file(paths[k])
        many = median_combine(tmp_path)  # folder, natural order f0..f11
        _assert_exact(many, _reference(stack))
        manifest = "".join(f"{sha256_file(p)}  {p.name}\n" for p in paths)
        assert many.header["PROVSHA1"] == hashlib.sha256(manifest.encode()).hexdigest()
        assert "12 files" in many.header["PROV1"]
        assert "PROV2" not in many.header


class TestCalibration:
    """Master bias and dark subtraction."""

    @pytest.mark.parametrize("n", [6, 7])
    def test_bias_dark_exact(self, tmp_path, n):
        stack = _stack(n)
        bias = RNG.normal(100, 3, size=stack.shape[1:]).astype(np.float32)
        dark = RNG.normal(12, 2, size=stack.shape[1:]).astype(np.float32)
        dark_path = tmp_path / "dark.fits"
        CCDData(dark, unit="adu").write(dark_path)
        result = median_combine(stack, bias=CCDData(bias, unit="adu"), dark=dark_path)
        expected = np.median(stack.astype(np.float64) - bias.astype(np.float64)
                             - dark.astype(np.float64), axis=0).astype(np.float32)
        _assert_exact(result, expected)
        assert result.header["BIASSUB"] and result.header["DARKSUB"]
        assert result.header["PROV2"] == "dark.fits"
        assert result.header["PROVSHA2"] == sha256_file(dark_path)
        assert any("master dark" in str(h) for h in result.header["HISTORY"])

    def test_bias_array_rgb_broadcast(self):
        stack = _stack(5, shape=(10, 12, 3))
        bias = np.full((10, 12), 7.25)
        expected = np.median(stack - bias[..., None], axis=0).astype(np.float32)
        _assert_exact(median_combine(stack, bias=bias), expected)

    def test_inputs_not_modified(self):
        stack = _stack(5)
        bias = CCDData(np.full(stack.shape[1:], 3.0, np.float32), unit="adu")
        before, bias_before = stack.copy(), bias.data.copy()
        median_combine(stack, bias=bias)
        np.testing.assert_array_equal(stack, before)
        np.testing.assert_array_equal(bias.data, bias_before)

    def test_bad_masters(self, tmp_path):
        stack = _stack(3)
        with pytest.raises(InputError, match="shape"):
            median_combine(stack, bias=np.zeros((3, 3)))
        with pytest.raises(InputError, match="electron"):
            median_combine(stack, dark=CCDData(np.zeros(stack.shape[1:]), unit="electron"))
        with pytest.raises(InputError, match="does not exist"):
            median_combine(stack, bias=tmp_path / "missing.fits")
        with pytest.raises(InputError, match="CCDData"):
            median_combine(stack, bias=3.0)


class TestErrors:
    @pytest.mark.parametrize("kwargs", [{"step": 0}, {"step": 1.5}, {"max_frames": 0},
                                        {"max_frames": True}, {"mem_limit": "lots"}])
    def test_bad_options(self, kwargs):
        with pytest.raises(InputError):
            median_combine(_stack(3), **kwargs)

    def test_bad_inputs(self, tmp_path):
        with pytest.raises(InputError, match="no such file"):
            median_combine(tmp_path / "missing.ser")
        with pytest.raises(InputError):
            median_combine(np.zeros((4, 5)))
        with pytest.raises(InputError, match="cannot combine"):
            median_combine(np.zeros((3, 4, 5), dtype=bool))


_MEMORY_SCRIPT = textwrap.dedent("""
    import json, resource, sys
    import numpy as np
    from aiflat_astro.combine import median_combine
    from aiflat_astro.io import SERReader

    def rss():
        with open("/proc/self/status") as f:
            return {k: int(v.split()[0]) * 1024 for k, v in
                    (line.split(":", 1) for line in f) if k in ("VmRSS", "VmHWM")}

    with SERReader(sys.argv[1]) as ser:  # warm up: imports, thread pools, first allocations
        median_combine(np.zeros((3, 8, 8), np.uint16))
    base = rss()["VmRSS"]
    median = median_combine(sys.argv[1], mem_limit=sys.argv[2])
    print(json.dumps({"base": base, "peak": rss()["VmHWM"], "n": median.header["NCOMBINE"]}))
""")


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_memory_bounded_in_subprocess(tmp_path):
    """A 150 MB SER combined with mem_limit=32MB: peak RSS grows by far less than the data."""
    n, shape = 150, (500, 1000)
    path = tmp_path / "big.ser"
    frame = np.arange(shape[0] * shape[1], dtype=np.uint16).reshape(shape) % 4000

    write_ser(path, (frame + k for k in range(n)), pixel_depth=12)
    data_bytes = n * frame.nbytes
    assert os.path.getsize(path) > data_bytes  # ~150 MB on disk
    proc = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT, str(path), "32MB"],
                          capture_output=True, text=True, timeout=300, check=True)
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    growth = report["peak"] - report["base"]
    assert report["n"] == n
    assert growth < 48e6, f"peak RSS grew by {growth / 1e6:.0f} MB for mem_limit 32MB"
    assert growth < data_bytes / 3
