"""Tests of flat.fits, the ASDF sidecar and the TIFF export."""

import json

import numpy as np
import pytest
from astropy import units as u
from astropy.io import fits
from astropy.nddata import CCDData, StdDevUncertainty

from aiflat_astro.dq import DustDQ
from aiflat_astro.flat import make_flat
from aiflat_astro.io.export import read_flat_asdf, write_flat_asdf, write_flat_tiff
from aiflat_astro.io.fits import read_flat, write_flat
from aiflat_astro.utils.exceptions import AiflatUserWarning, InputError, ProvenanceError


@pytest.fixture
def flat_and_mask():
    y, x = np.mgrid[0:64, 0:80]
    r = np.hypot(y - 30, x - 40)
    t = 1 - 0.3 * np.clip((10 - r) / 1.5 + 0.5, 0, 1) + 0.02 * np.clip(1 - np.abs(r - 12) / 1.2, 0, 1)
    median = (1500 * t).astype(np.float32)
    frames = (median + np.random.default_rng(0).normal(0, 5, (30, 64, 80))).astype(np.float32)
    mask = t < 0.999
    flat = make_flat(median, mask, frames=frames)
    return flat, mask


def test_round_trip_and_layout(tmp_path, flat_and_mask):
    flat, _ = flat_and_mask
    path = tmp_path / "flat.fits"
    write_flat(path, flat)
    with fits.open(path) as hdul:
        names = [h.name for h in hdul]
        assert names == ["PRIMARY", "DQ", "DQ_DEF", "UNCERT", "PROVJSON"]
        assert "MASK" not in names
        assert hdul[0].header["BITPIX"] == -32
        assert "BUNIT" in hdul[0].header and hdul[0].header["BUNIT"] == ""
        assert hdul[0].header["ROWORDER"] == "TOP-DOWN"
        assert hdul["DQ"].header["BITPIX"] == 8
        assert hdul["UNCERT"].header["UTYPE"] == "StdDevUncertainty"
        for hdu in hdul:
            assert hdu.verify_checksum() == 1 and hdu.verify_datasum() == 1
        for key in ("PROCSOFT", "DATE", "INPAINT", "INPSHA", "MASKSHA", "PARAMSHA", "DETECTOR"):
            assert key in hdul[0].header, key
        assert "PROVJSON" not in hdul[0].header  # the record lives in its own HDU
    back = read_flat(path)
    assert back.unit == u.dimensionless_unscaled
    assert np.array_equal(back.data, flat.data) and np.array_equal(back.flags, flat.flags)
    assert np.array_equal(back.uncertainty.array, flat.uncertainty.array)
    assert json.loads(back.meta["PROVJSON"]) == json.loads(flat.meta["PROVJSON"])
    # writing what was read gives the same product
    write_flat(tmp_path / "again.fits", back)
    assert np.array_equal(read_flat(tmp_path / "again.fits").data, flat.data)


def test_ccddata_read_and_flat_correct(tmp_path, flat_and_mask):
    import ccdproc

    flat, mask = flat_and_mask
    path = tmp_path / "flat.fits"
    write_flat(path, flat)
    plain = CCDData.read(path)  # no unit argument needed: BUNIT = '' is in the file
    assert plain.unit == u.dimensionless_unscaled and plain.mask is None
    frame = CCDData(np.full(flat.shape, 1000.0) * flat.data, unit="adu")
    out = ccdproc.flat_correct(frame, plain, norm_value=1)
    assert np.allclose(out.data, 1000.0, rtol=1e-6)
    assert np.array_equal(out.data[flat.data == 1.0], frame.data[flat.data == 1.0])


def test_corrupted_or_edited_file_is_refused(tmp_path, flat_and_mask):
    flat, _ = flat_and_mask
    path = tmp_path / "flat.fits"
    write_flat(path, flat)
    raw = bytearray(path.read_bytes())
    with fits.open(path) as hdul:
        data_start = hdul.fileinfo(0)["datLoc"]
    raw[data_start + 1000] ^= 0x01
    bad = tmp_path / "bad.fits"
    bad.write_bytes(bytes(raw))
    with pytest.raises(ProvenanceError, match="checksum"):
        read_flat(bad)
    edited = tmp_path / "edited.fits"
    with fits.open(path) as hdul:
        hdul[0].header["INPAINT"] = "gemini"
        hdul.writeto(edited)  # no checksum update
    with pytest.raises(ProvenanceError):
        read_flat(edited)


def test_unicode_provenance_survives(tmp_path):
    flat = CCDData(np.ones((8, 8), np.float32), unit="", meta={
        "PROVJSON": json.dumps({"ai_prompt": "dust — ümlaut \n  trailing  ", "inpaint": "gemini"},
                               ensure_ascii=True)})
    write_flat(tmp_path / "f.fits", flat)
    prov = json.loads(read_flat(tmp_path / "f.fits").meta["PROVJSON"])
    assert prov["ai_prompt"] == "dust — ümlaut \n  trailing  "


def test_write_errors_and_mask_warning(tmp_path):
    write_flat(tmp_path / "adu.fits", CCDData(np.ones((4, 4)), unit="adu"))  # a master flat keeps its unit
    assert read_flat(tmp_path / "adu.fits").unit == u.adu
    with pytest.raises(InputError, match="CCDData"):
        write_flat(tmp_path / "a.fits", np.ones((4, 4)))
    masked = CCDData(np.ones((4, 4), np.float32), unit="", mask=np.eye(4, dtype=bool))
    with pytest.warns(AiflatUserWarning, match="mask is not written"):
        write_flat(tmp_path / "m.fits", masked)
    with fits.open(tmp_path / "m.fits") as hdul:
        assert "MASK" not in [h.name for h in hdul]
    with pytest.raises(InputError, match="exists"):
        write_flat(tmp_path / "m.fits", masked)


def test_read_refuses_other_files(tmp_path):
    path = tmp_path / "other.fits"
    fits.HDUList([fits.PrimaryHDU(np.ones((4, 4), np.float32)),
                  fits.ImageHDU(np.zeros((4, 4), np.uint8), name="MASK")]).writeto(path, checksum=True)
    with pytest.raises(InputError, match="not an aiflat flat"):
        read_flat(path)
    with pytest.raises(InputError, match="does not exist"):
        read_flat(tmp_path / "nope.fits")


def test_asdf_sidecar(tmp_path, flat_and_mask):
    from aiflat_astro.detection._base import DustDetection, empty_catalog

    flat, mask = flat_and_mask
    cat = empty_catalog()
    cat.add_row({"id": 1, "x_centroid": 40.0, "y_centroid": 30.0, "area": 300.0,
                 "equivalent_diameter": 20.0, "depth": 0.3, "confidence": 1.0, "review": False,
                 "method": "test"})
    det = DustDetection(dq=flat.flags & (DustDQ.DUST | DustDQ.DUST_HALO), weight=mask.astype(np.float32),
                        catalog=cat)
    write_flat_asdf(tmp_path / "flat.asdf", flat, detection=det)
    tree = read_flat_asdf(tmp_path / "flat.asdf")
    assert np.array_equal(tree["flat"], flat.data) and np.array_equal(tree["dq"], flat.flags)
    assert np.array_equal(tree["weight"], det.weight)
    assert np.array_equal(tree["uncertainty"], flat.uncertainty.array)
    assert len(tree["catalog"]) == 1 and tree["catalog"]["x_centroid"][0] == 40.0
    assert tree["provenance"]["inpaint"] == "local"
    assert tree["dq_bits"]["LOW_TRANS"] == 4 and tree["header"]["INPAINT"] == "local"


def test_tiff_uint16_and_float(tmp_path, flat_and_mask):
    import tifffile

    flat, _ = flat_and_mask
    assert flat.data.max() > 1.0  # the rim
    with pytest.warns(AiflatUserWarning, match="clipped to 65535"):
        n = write_flat_tiff(tmp_path / "f16.tif", flat)
    assert n == int(np.count_nonzero(np.rint(flat.data.astype(np.float64) * 65535) > 65535))
    img = tifffile.imread(tmp_path / "f16.tif")
    assert img.dtype == np.uint16 and np.all(img[flat.data == 1.0] == 65535)
    below = flat.data < 1.0
    assert np.abs(img[below] / 65535 - flat.data[below]).max() <= 0.5 / 65535 + 1e-9
    assert write_flat_tiff(tmp_path / "f32.tif", flat, dtype="float32") == 0
    assert np.array_equal(tifffile.imread(tmp_path / "f32.tif"), flat.data)
    with pytest.raises(InputError, match="TIFF dtype"):
        write_flat_tiff(tmp_path / "x.tif", flat, dtype="int8")


def test_uncertainty_type_written(tmp_path):
    flat = CCDData(np.ones((4, 4), np.float32), unit="",
                   uncertainty=StdDevUncertainty(np.full((4, 4), 0.01, np.float32)))
    write_flat(tmp_path / "u.fits", flat)
    assert read_flat(tmp_path / "u.fits").uncertainty.array[0, 0] == np.float32(0.01)
