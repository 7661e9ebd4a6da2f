"""Frame sources: SER, FITS cube, FITS files/folder, in-memory arrays."""

import numpy as np
import pytest
from astropy import units as u
from astropy.io import fits

from aiflat_astro.io import FrameSource, SERReader, open_frames, write_ser
from aiflat_astro.io.frames import ArraySource, FITSCubeSource, FITSFilesSource
from aiflat_astro.utils.exceptions import InputError

CUBE = (np.arange(7 * 6 * 5).reshape(7, 6, 5) * 613 % 60000).astype(np.uint16)


def check_source(src, cube):
    """The FrameSource protocol, checked against the expected frames."""
    assert isinstance(src, FrameSource)
    assert src.n_frames == len(src) == len(cube)
    assert src.frame_shape == cube.shape[1:]
    assert src.dtype == cube.dtype and src.dtype.isnative
    for i in (0, len(cube) - 1, -1):
        frame = src.read(i)
        np.testing.assert_array_equal(frame, cube[i])
        assert frame.dtype == src.dtype
    n = len(cube)
    for idx in (range(n), [i for i in (0, 2, 4) if i < n], [i for i in (3, 1) if i < n],
                slice(1, None, 3), []):
        want = cube[list(idx) if isinstance(idx, (range, list)) else idx, 2:5]
        np.testing.assert_array_equal(src.read_rows(idx, 2, 5), want)
    np.testing.assert_array_equal(np.stack(list(src)), cube)
    k = min(2, n - 1)
    ccd = src.frame_ccd(k)
    np.testing.assert_array_equal(ccd.data, cube[k])
    assert ccd.header["FRAMENUM"] == k
    assert isinstance(src.meta, fits.Header)
    assert isinstance(src.name, str) and src.name
    with pytest.raises(IndexError):
        src.read(len(cube))


def test_ser_source(tmp_path):
    path = tmp_path / "v.ser"
    write_ser(path, CUBE, observer="me")
    with open_frames(path) as src:
        assert isinstance(src, SERReader) and src.paths == [path]
        check_source(src, CUBE)
        assert src.meta["OBSERVER"] == "me" and src.meta["ROWORDER"] == "TOP-DOWN"
    with open_frames([str(path)], byte_order=">") as src:
        assert src.byte_order == ">"


@pytest.mark.parametrize("dtype", [np.uint16, np.int16, np.float32, np.uint8])
def test_fits_cube(tmp_path, dtype):
    cube = CUBE.astype(dtype) if dtype != np.uint8 else (CUBE % 256).astype(np.uint8)
    path = tmp_path / "cube.fits"
    hdr = fits.Header([("INSTRUME", "cam"), ("BUNIT", "electron")])
    fits.writeto(path, cube, hdr)
    with open_frames(path) as src:
        assert isinstance(src, FITSCubeSource) and src.paths == [path]
        check_source(src, cube)
        assert src.meta["INSTRUME"] == "cam"
        assert src.frame_ccd(0).unit == u.electron
        assert "NAXIS3" not in src.frame_ccd(0).header
    with pytest.raises(ValueError, match="closed"):
        src.read(0)


def test_fits_cube_in_extension_and_compressed(tmp_path):
    path = tmp_path / "ext.fits"
    sci = fits.ImageHDU(CUBE.astype(np.int16), name="SCI")
    fits.HDUList([fits.PrimaryHDU(), sci]).writeto(path)
    with open_frames(path) as src:
        assert src.hdu_index == 1
        check_source(src, CUBE.astype(np.int16))
    comp = tmp_path / "comp.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(CUBE.astype(np.int32))]).writeto(comp)
    with open_frames(comp) as src:
        check_source(src, CUBE.astype(np.int32))


def write_files(folder, cube, *, names=None):
    folder.mkdir(exist_ok=True)
    paths = []
    for k, frame in enumerate(cube):
        p = folder / (names[k] if names else f"frame_{k}.fits")
        fits.writeto(p, frame, fits.Header([("EXPTIME", 0.01 * k), ("INSTRUME", "cam")]))
        paths.append(p)
    return paths


def test_fits_files_list_and_folder(tmp_path):
    names = [f"f{k}.fits" for k in range(7)]  # f10 would sort after f9: natural order
    names[5], names[6] = "f9.fit", "f10.FITS"
    paths = write_files(tmp_path / "frames", CUBE, names=names)
    (tmp_path / "frames" / "notes.txt").write_text("not a frame")
    with open_frames(tmp_path / "frames") as src:
        assert isinstance(src, FITSFilesSource) and src.name == "frames"
        assert src.paths == paths
        check_source(src, CUBE)
        assert src.frame_ccd(3).header["EXPTIME"] == pytest.approx(0.03)
        assert src.frame_ccd(0).unit == u.adu
        assert src.meta["INSTRUME"] == "cam"
    with open_frames([str(p) for p in paths[::-1]]) as src:
        check_source(src, CUBE[::-1])
    with open_frames(paths[2]) as src:  # one 2-D file: a one-frame source
        check_source(src, CUBE[2:3])


def test_fits_files_mixed_dtypes(tmp_path):
    paths = write_files(tmp_path / "m", CUBE[:2])
    fits.writeto(paths[1], CUBE[1].astype(np.float32), overwrite=True)
    with open_frames(paths) as src:
        assert src.dtype == np.float32
        np.testing.assert_array_equal(src.read(0), CUBE[0])


def test_shape_mismatch_names_the_file(tmp_path):
    paths = write_files(tmp_path / "s", CUBE[:3])
    fits.writeto(paths[2], CUBE[2, :4], overwrite=True)
    with pytest.raises(InputError, match=r"frame_2.fits' has frame shape \(4, 5\).*\(6, 5\)"):
        open_frames(paths)


def test_array_source():
    src = open_frames(CUBE)
    assert isinstance(src, ArraySource) and src.paths == []
    check_source(src, CUBE)
    assert open_frames(src) is src
    rgb = np.zeros((2, 3, 4, 3), np.uint8)
    assert open_frames(rgb).frame_shape == (3, 4, 3)
    for bad in (np.zeros((3, 4)), np.zeros((2, 3, 4, 5)), np.zeros((0, 3, 4))):
        with pytest.raises(InputError):
            open_frames(bad)


def test_errors(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        open_frames(tmp_path / "missing.ser")
    with pytest.raises(InputError, match="no such file"):
        open_frames([tmp_path / "missing.fits", tmp_path / "other.fits"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no FITS files"):
        open_frames(tmp_path / "empty")
    text = tmp_path / "readme.dat"
    text.write_text("hello")
    with pytest.raises(InputError, match="neither a SER video nor a FITS file"):
        open_frames(text)
    with pytest.raises(InputError, match="no input frames"):
        open_frames([])
    ser = tmp_path / "a.ser"
    write_ser(ser, CUBE[:2])
    with pytest.raises(InputError, match="one SER video at a time"):
        open_frames([ser, ser])
    table = tmp_path / "table.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(
        [fits.Column("a", "J", array=[1])])]).writeto(table)
    with pytest.raises(InputError, match="no image data"):
        open_frames(table)
    cube = tmp_path / "cube.fits"
    fits.writeto(cube, CUBE)
    with pytest.raises(InputError, match="expected a 2-D image, found 3-D image"):
        open_frames([cube, cube])


def test_ser_without_suffix_is_sniffed(tmp_path):
    path = tmp_path / "capture.bin"
    write_ser(path, CUBE[:2])
    with open_frames(path) as src:
        assert isinstance(src, SERReader)


@pytest.mark.parametrize("dtype", [np.int16, np.uint16])
def test_fits_cube_is_lazy_and_picklable(tmp_path, dtype):
    import mmap
    import pickle

    path = tmp_path / "cube.fits"
    fits.writeto(path, CUBE.astype(dtype))
    src = open_frames(path)
    if dtype == np.int16:  # unscaled: a view of a memory map of the file, nothing read yet
        base = src._array
        while base is not None and not isinstance(base, mmap.mmap):
            base = getattr(base, "base", None)
        assert isinstance(base, mmap.mmap)
    clone = pickle.loads(pickle.dumps(src))
    want = CUBE.astype(dtype)[::2, 1:3]
    np.testing.assert_array_equal(clone.read_rows(range(0, 7, 2), 1, 3), want)
    clone.close()
    src.close()
