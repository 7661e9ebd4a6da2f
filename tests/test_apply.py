"""Tests of applying the flat (aiflat_astro.apply)."""

import hashlib

import ccdproc
import numpy as np
import pytest
from astropy.io import fits
from astropy.nddata import CCDData, StdDevUncertainty

from aiflat_astro.apply import apply_flat, apply_to_file, flat_boxes
from aiflat_astro.io import SERReader, write_ser
from aiflat_astro.io.fits import write_flat
from aiflat_astro.utils.exceptions import InputError


def _flat(shape=(40, 48)):
    flat = np.ones(shape, np.float32)
    y, x = np.mgrid[0:shape[0], 0:shape[1]]
    r = np.hypot(y - 15, x - 20)
    flat[r < 6] = 0.5
    flat[(r >= 6) & (r < 7)] = 1.04          # a bright rim
    flat[30:33, 40:44] = 0.9
    return flat


def _frames(shape=(40, 48), n=7, vmax=3000, dtype=np.uint16, seed=0):
    """Smooth frames with a little noise (natural data: the SER byte-order check can decide)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:shape[0], 0:shape[1]]
    base = 0.3 + 0.6 * (x + y) / (shape[0] + shape[1])
    noisy = base * vmax * (1 + 0.02 * rng.standard_normal((n,) + shape))
    return np.clip(np.rint(noisy), 0, vmax).astype(dtype)


def _sha(path):
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def test_apply_flat_equals_ccdproc_flat_correct():
    rng = np.random.default_rng(1)
    flat = CCDData(_flat(), unit="", flags=(_flat() != 1).astype(np.uint8))
    frame = CCDData(rng.uniform(100, 2000, flat.shape), unit="adu",
                    uncertainty=StdDevUncertainty(np.full(flat.shape, 5.0)),
                    flags=np.zeros(flat.shape, np.uint8), meta={"OBJECT": "Sun"})
    ours = apply_flat(frame, flat)
    ref = ccdproc.flat_correct(frame, flat, norm_value=1)
    assert np.array_equal(ours.data, ref.data)
    assert np.array_equal(ours.uncertainty.array, ref.uncertainty.array)
    assert ours.unit == ref.unit and ours.meta["OBJECT"] == "Sun"
    outside = flat.data == 1.0
    assert np.array_equal(ours.data[outside], frame.data[outside])   # bit-identical
    assert np.array_equal(ours.flags, flat.flags)                     # DQ carried over
    arr = apply_flat(np.full(flat.shape, 100.0), flat.data)
    assert arr.data[15, 20] == 200.0


def test_flat_boxes_cover_every_changed_pixel():
    flat = _flat()
    covered = np.zeros(flat.shape, bool)
    for box in flat_boxes(flat):
        covered[box] = True
    assert np.all(covered[flat != 1.0])
    assert flat_boxes(np.ones((5, 5))) == []


def test_flat_boxes_merge_near_boxes_and_never_overlap():
    flat = np.ones((60, 60), np.float32)
    flat[10:14, 10:14] = 0.8   # two patches 2 px apart: one box
    flat[16:20, 10:14] = 0.8
    flat[10:14, 40:44] = 0.8   # 26 px away: a box of its own
    flat[30:50, 30] = 0.9      # an L shape whose tight box would overlap ...
    flat[49, 30:50] = 0.9
    flat[35:38, 40:43] = 0.7   # ... this patch, inside it: merged
    boxes = flat_boxes(flat, merge=4)
    assert (slice(10, 20), slice(10, 14)) in boxes
    assert (slice(10, 14), slice(40, 44)) in boxes
    assert (slice(30, 50), slice(30, 50)) in boxes
    assert len(boxes) == 3
    assert len(flat_boxes(flat, merge=0)) == 4  # only overlapping boxes merge
    count = np.zeros(flat.shape, int)
    for box in boxes:
        count[box] += 1
    assert count.max() == 1 and np.all(count[flat != 1.0] == 1)


@pytest.mark.parametrize("depth, dtype, byte_order", [(12, np.uint16, "<"), (16, np.uint16, ">"),
                                                      (8, np.uint8, "<")])
def test_ser_to_ser(tmp_path, depth, dtype, byte_order):
    flat = _flat()
    vmax = (1 << depth) - 1
    frames = _frames(vmax=vmax, dtype=dtype)
    frames[:, 15, 20] = vmax - 5           # saturates when corrected: clipped to the depth
    t0 = np.datetime64("2024-06-21T09:00:00")
    src = tmp_path / "in.ser"
    write_ser(src, frames, pixel_depth=depth, byte_order=byte_order, observer="me",
              little_endian_flag=int(byte_order == ">"),
              timestamps=[t0 + k * np.timedelta64(20, "ms") for k in range(len(frames))])
    before = _sha(src)
    stats = apply_to_file(flat, src, tmp_path / "out.ser", mem_limit=10_000)
    assert _sha(src) == before  # input untouched
    n_clip = int(np.count_nonzero(np.rint(frames / flat.astype(np.float64)) > vmax))
    assert stats["n_frames"] == 7 and stats["method"] == "copy+patch" and stats["n_clipped"] == n_clip >= 7
    raw_in, raw_out = src.read_bytes(), (tmp_path / "out.ser").read_bytes()
    assert len(raw_in) == len(raw_out) and raw_in[:178] == raw_out[:178]     # header
    assert raw_in[-8 * 7:] == raw_out[-8 * 7:]                                # trailer
    with SERReader(src) as a, SERReader(tmp_path / "out.ser") as b:
        assert b.dtype == a.dtype and b.file_dtype == a.file_dtype and b.header == a.header
        assert np.array_equal(b.timestamps, a.timestamps)
        for i in range(a.n_frames):
            fin, fout = a.read(i), b.read(i)
            outside = flat == 1.0
            assert np.array_equal(fin[outside], fout[outside])
            expected = np.clip(np.rint(fin / flat.astype(np.float64)), 0, vmax).astype(dtype)
            assert np.array_equal(fout, expected)


def test_ser_rgb_and_bgr(tmp_path):
    flat = _flat()
    rgb = np.stack([_frames(seed=s) for s in range(3)], axis=-1)
    for color_id in (100, 101):
        src = tmp_path / f"c{color_id}.ser"
        write_ser(src, rgb, color_id=color_id)
        apply_to_file(flat, src, tmp_path / f"o{color_id}.ser")
        with SERReader(tmp_path / f"o{color_id}.ser") as out:
            got = out.read(2)
        expected = np.clip(np.rint(rgb[2] / flat[..., None].astype(np.float64)), 0, 65535)
        assert np.array_equal(got, expected.astype(np.uint16)), color_id


def test_ser_damaged_layout_is_streamed_and_repaired(tmp_path):
    import warnings

    flat = _flat()
    frames = _frames()
    src = tmp_path / "in.ser"
    write_ser(src, frames, pixel_depth=12, frame_count=99)  # FrameCount disagrees with the file
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stats = apply_to_file(flat, src, tmp_path / "out.ser")
        with SERReader(tmp_path / "out.ser") as out:
            assert out.header.frame_count == out.n_frames == 7
            got = out.read(4)
    assert stats["method"].startswith("stream")
    assert np.array_equal(got, np.clip(np.rint(frames[4] / flat.astype(np.float64)), 0, 4095))


def test_fits_cube_uint16_with_checksum(tmp_path):
    flat = _flat()
    cube = _frames(vmax=60000)
    src = tmp_path / "cube.fits"
    hdu = fits.PrimaryHDU(cube)
    hdu.header["OBJECT"] = "Moon"
    hdu.writeto(src, checksum=True)
    before = _sha(src)
    stats = apply_to_file(flat, src, tmp_path / "out.fits", mem_limit=8_000)  # one frame of dust a block
    assert _sha(src) == before and stats["n_frames"] == 7
    with fits.open(tmp_path / "out.fits") as hdul:
        assert hdul[0].verify_checksum() == 1 and hdul[0].verify_datasum() == 1
        data = hdul[0].data
        assert data.dtype == np.uint16 and hdul[0].header["OBJECT"] == "Moon"
        assert "aiflat" in str(hdul[0].header["HISTORY"])
        expected = np.clip(np.rint(cube / flat.astype(np.float64)), 0, 65535).astype(np.uint16)
        assert np.array_equal(data, expected)


def test_fits_float_image_and_flat_file(tmp_path):
    flat = _flat()
    write_flat(tmp_path / "flat.fits", CCDData(flat, unit=""))
    img = np.random.default_rng(3).uniform(10, 100, flat.shape).astype(np.float32)
    fits.writeto(tmp_path / "img.fits", img)
    apply_to_file(tmp_path / "flat.fits", tmp_path / "img.fits", tmp_path / "out.fits")
    out = fits.getdata(tmp_path / "out.fits")
    assert out.dtype.kind == "f"
    assert np.array_equal(out, (img / flat.astype(np.float64)).astype(np.float32))
    assert fits.getheader(tmp_path / "out.fits")["FLATFILE"] == "flat.fits"


def test_errors(tmp_path):
    flat = _flat()
    src = tmp_path / "in.ser"
    write_ser(src, _frames(), pixel_depth=12)
    with pytest.raises(InputError, match="is the input"):
        apply_to_file(flat, src, src, overwrite=True)
    apply_to_file(flat, src, tmp_path / "out.ser")
    with pytest.raises(InputError, match="exists"):
        apply_to_file(flat, src, tmp_path / "out.ser")
    with pytest.raises(InputError, match="does not match the flat"):
        apply_to_file(np.ones((10, 10), np.float32), src, tmp_path / "o2.ser")
    bad = flat.copy()
    bad[0, 0] = 0.0
    with pytest.raises(InputError, match="zero or negative"):
        apply_to_file(bad, src, tmp_path / "o3.ser")
    with pytest.raises(InputError, match="no such file"):
        apply_to_file(flat, tmp_path / "missing.ser", tmp_path / "o4.ser")
    assert not list(tmp_path.glob(".*part"))  # no temporary file left behind


@pytest.mark.parametrize("mode", ["exdev", "absent"])
def test_ser_copy_fallbacks(tmp_path, monkeypatch, mode):
    import errno
    import os

    flat = _flat()
    frames = _frames(n=9)
    src = tmp_path / "in.ser"
    write_ser(src, frames, pixel_depth=12)
    # the background copy's kernel call refused (a file system without it) or missing:
    # a plain read/write copy, patched the same way
    if mode == "exdev":
        def refuse(*args, **kwargs):
            raise OSError(errno.EINVAL, "Invalid argument")
        monkeypatch.setattr(os, "sendfile", refuse)
    else:
        monkeypatch.delattr(os, "sendfile")
    apply_to_file(flat, src, tmp_path / "out.ser", mem_limit=8_000)  # one frame of dust a block
    raw_in, raw_out = src.read_bytes(), (tmp_path / "out.ser").read_bytes()
    assert raw_in[:178] == raw_out[:178] and len(raw_in) == len(raw_out)
    with SERReader(tmp_path / "out.ser") as out:
        for i in range(9):
            expected = np.clip(np.rint(frames[i] / flat.astype(np.float64)), 0, 4095).astype(np.uint16)
            assert np.array_equal(out.read(i), expected)


def test_failure_during_patch_leaves_nothing(tmp_path, monkeypatch):
    import aiflat_astro.apply as ap

    flat = _flat()
    src = tmp_path / "in.ser"
    write_ser(src, _frames(n=9), pixel_depth=12)

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(ap, "_correct_block", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        apply_to_file(flat, src, tmp_path / "out.ser")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.ser"]
