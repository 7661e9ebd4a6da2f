"""mask.fits layout and round trip, catalog ECSV, DS9 regions, preview PNG, and the review loop."""

import numpy as np
import pytest
from astropy.io import fits
from astropy.nddata.bitmask import bitfield_to_boolean_mask
from astropy.table import Table
from PIL import Image
from regions import CirclePixelRegion, PixCoord, Regions

from aiflat_astro import DustDQ
from aiflat_astro.detection import (apply_region_edits, detect_dust, read_regions, write_catalog,
                                    write_preview, write_regions)
from aiflat_astro.io.fits import read_mask, write_mask
from aiflat_astro.utils.exceptions import InputError, ProvenanceError


def _image(seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:128, :160]
    t = np.ones((128, 160))
    for y, x, d, depth in ((40, 40, 12, 0.2), (90, 110, 16, 0.1)):
        t *= 1 - depth / (1 + np.exp((np.hypot(yy - y, xx - x) - d / 2) / 0.8))
    return (1500 * t + rng.normal(0, 2, t.shape)).astype(np.float32)


@pytest.fixture(name="det")
def fixture_det():
    image = _image()
    return image, detect_dust(image, f_ratio=30, pixel_size=3.75)


def test_mask_fits_layout_and_roundtrip(tmp_path, det):
    image, detection = det
    path = tmp_path / "mask.fits"
    hdr = fits.Header()
    hdr["OBSERVER"] = "tester"
    write_mask(path, detection, header=hdr)
    with fits.open(path) as hdul:
        assert [h.name for h in hdul] == ["DQ", "DQ_DEF", "WEIGHT", "PROVJSON"]
        primary = hdul[0]
        assert primary.header["BITPIX"] == 8 and primary.data.dtype == np.uint8
        assert "BZERO" not in primary.header and primary.header["BUNIT"] == ""  # CCDData.read needs no unit=
        for key in ("PROCSOFT", "DATE", "DETECTOR", "INPSHA", "MASKSHA", "ROWORDER", "NDUST", "OBSERVER"):
            assert key in primary.header, key
        assert primary.header["DETECTOR"] == "local" and primary.header["ROWORDER"] == "TOP-DOWN"
        assert hdul["WEIGHT"].header["BITPIX"] == -32
        assert list(hdul["DQ_DEF"].data["NAME"]) == [n for n in ("DUST", "DUST_HALO", "LOW_TRANS", "HOT",
                                                                 "COLD", "SATURATED", "REVIEW", "GENERATED")]
        for hdu in hdul:
            assert hdu.verify_checksum() == 1 and hdu.verify_datasum() == 1
    back = read_mask(path)
    assert np.array_equal(back.dq, detection.dq) and np.array_equal(back.weight, detection.weight)
    assert back.detector == "local" and len(back.catalog) == len(detection.catalog) == 2
    assert np.allclose(back.catalog["distance_mm"], detection.catalog["distance_mm"])
    assert np.array_equal(back.labels > 0, back.dust_mask)
    # science users read the bits with astropy's bitmask tools
    dust_only = bitfield_to_boolean_mask(back.dq, ignore_flags="~DUST", flag_name_map=DustDQ)
    assert np.array_equal(dust_only, back.dust_mask)
    # never overwrite without asking; refuse edited files
    with pytest.raises(InputError, match="exists"):
        write_mask(path, detection)
    write_mask(path, detection, overwrite=True)
    raw = bytearray(path.read_bytes())
    raw[2880 * 2 + 5] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(ProvenanceError):
        read_mask(path)


def test_read_mask_refuses_other_files(tmp_path):
    path = tmp_path / "plain.fits"
    fits.HDUList([fits.PrimaryHDU(np.zeros((8, 8), np.float32))]).writeto(path, checksum=True)
    with pytest.raises(InputError, match="not an aiflat mask"):
        read_mask(path)
    with pytest.raises(InputError, match="does not exist"):
        read_mask(tmp_path / "missing.fits")


def test_catalog_regions_preview(tmp_path, det):
    image, detection = det
    write_catalog(tmp_path / "dust.ecsv", detection)
    cat = Table.read(tmp_path / "dust.ecsv")
    assert cat.colnames[:8] == ["id", "x_centroid", "y_centroid", "area", "equivalent_diameter", "depth",
                                "confidence", "review"]
    assert str(cat["distance_mm"].unit) == "mm" and str(cat["area"].unit) == "pix2"
    assert "focal plane" in cat["distance_mm"].description
    assert cat.meta["f_ratio"] == 30 and cat.meta["n_shadows"] == 2
    write_regions(tmp_path / "dust.reg", detection)
    regs = read_regions(tmp_path / "dust.reg")
    assert len(regs) == 2
    assert any(abs(r.center.x - 40) < 2 and abs(r.center.y - 40) < 2 for r in regs)
    write_preview(tmp_path / "preview.png", image, detection)
    with Image.open(tmp_path / "preview.png") as png:
        assert png.format == "PNG" and png.size[0] > 100
    with pytest.raises(InputError, match="exists"):
        write_preview(tmp_path / "preview.png", image, detection)


def test_review_regions_are_coloured():
    from aiflat_astro.detection.outputs import _shadow_regions

    image = _image()
    det = detect_dust(image)
    det.catalog["review"][0] = True
    regs = _shadow_regions(det)
    assert regs[0].visual["color"] == "yellow" and regs[0].meta["text"].endswith("?")
    assert regs[1].visual["color"] == "green"


def test_exclude_and_include_regions(tmp_path, det):
    image, detection = det
    first = detection.catalog[0]
    ex = tmp_path / "ex.reg"
    Regions([CirclePixelRegion(PixCoord(first["x_centroid"], first["y_centroid"]), 5)]).write(
        str(ex), format="ds9")
    inc = tmp_path / "inc.reg"
    Regions([CirclePixelRegion(PixCoord(130, 20), 6)]).write(str(inc), format="ds9")
    edited = detect_dust(image, exclude_regions=ex, include_regions=inc)
    assert len(edited.catalog) == 2
    assert edited.dust_mask[20, 130] and not edited.dust_mask[int(first["y_centroid"]), int(first["x_centroid"])]
    row = edited.catalog[edited.catalog["method"] == "include-region"][0]
    assert row["confidence"] == 1 and not row["review"] and row["x_centroid"] == pytest.approx(130, abs=0.5)
    assert edited.provenance["params"]["NEXCL"] == 1 and edited.provenance["params"]["NINCL"] == 1
    # the halo follows the edited mask
    assert (edited.dq[20, 137] & DustDQ.DUST_HALO) > 0
    # the input detection is not modified
    assert detection.dust_mask[int(first["y_centroid"]), int(first["x_centroid"])]
    same = apply_region_edits(detection, image)
    assert np.array_equal(same.dq, detection.dq)


def test_sky_regions_refused(tmp_path):
    reg = tmp_path / "sky.reg"
    reg.write_text("fk5\ncircle(10.0,20.0,5\")\n")
    with pytest.raises(InputError, match="image"):
        read_regions(reg)
    bad = tmp_path / "bad.reg"
    bad.write_text("this is not a region file\n")
    with pytest.raises(InputError):
        read_regions(bad)


@pytest.mark.parametrize("fmt", ["fits", "png"])
def test_user_mask_replaces_detection(tmp_path, fmt):
    image = _image()
    mask = np.zeros(image.shape, bool)
    mask[30:50, 30:50] = True
    mask[100:104, 10:14] = True
    path = tmp_path / f"user.{fmt}"
    if fmt == "fits":
        fits.PrimaryHDU(mask.astype(np.int16)).writeto(path)
    else:
        Image.fromarray((mask * 255).astype(np.uint8)).save(path)
    det = detect_dust(image, user_mask=path)
    assert det.detector == "user" and len(det.catalog) == 2
    assert np.array_equal(det.dust_mask, mask)
    assert det.catalog["depth"][0] > 0.05          # measured on the median (the 20 % shadow is inside)
    with pytest.raises(InputError, match="pixels but the median"):
        detect_dust(image[:64], user_mask=path)


def test_user_mask_from_previous_mask_file(tmp_path, det):
    image, detection = det
    write_mask(tmp_path / "m.fits", detection)
    again = detect_dust(image, user_mask=tmp_path / "m.fits")
    assert np.array_equal(again.dust_mask, detection.dust_mask)
