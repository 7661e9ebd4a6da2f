"""A small ccdproc reduction that uses the aiflat flat (the recipe of docs/ccdproc.rst).

ImageFileCollection -> master bias and dark -> ccd_process (bias, dark) ->
flat_correct(..., norm_value=1) with the aiflat flat read back from flat.fits;
the flat's DQ as a science exclusion layer; and what ccd_process's own flat
step (mean normalisation) does to a dust flat.
"""

import numpy as np
import pytest
from astropy import units as u
from astropy.io import fits
from astropy.nddata import CCDData
from astropy.nddata.bitmask import bitfield_to_boolean_mask

import ccdproc
from aiflat_astro.dq import DustDQ
from aiflat_astro.flat import make_flat
from aiflat_astro.io.fits import write_flat

SHAPE = (64, 80)
BIAS, DARK_RATE, EXPTIME = 300.0, 2.0, 10.0   # adu, adu/s, s


def _transmission():
    y, x = np.mgrid[0:SHAPE[0], 0:SHAPE[1]]
    t = np.ones(SHAPE)
    for cy, cx, d, depth in ((20, 25, 14, 0.25), (45, 60, 10, 0.15)):
        r = np.hypot(y - cy, x - cx)
        t *= 1 - depth * np.clip((d / 2 - r) / 1.5 + 0.5, 0, 1)
    return t


@pytest.fixture
def raw_folder(tmp_path):
    """Bias, dark and dusty science frames as FITS files with IMAGETYP/EXPTIME/BUNIT."""
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:SHAPE[0], 0:SHAPE[1]]
    scene = 3000 * (1 + 0.2 * x / SHAPE[1])
    t = _transmission()
    for k in range(5):
        for kind, exptime, signal in (("BIAS", 0.0, 0.0), ("DARK", EXPTIME, DARK_RATE * EXPTIME),
                                      ("LIGHT", EXPTIME, DARK_RATE * EXPTIME)):
            data = BIAS + signal + rng.normal(0, 3, SHAPE)
            if kind == "LIGHT":
                data = data + scene * t + rng.normal(0, 5, SHAPE)
            hdr = fits.Header({"IMAGETYP": kind, "EXPTIME": exptime, "BUNIT": "adu"})
            fits.writeto(tmp_path / f"{kind.lower()}_{k}.fits", data.astype(np.float32), hdr)
    return tmp_path, scene, t


def _masters(ifc):
    bias = ccdproc.combine(list(ifc.ccds(imagetyp="BIAS")), method="median")
    darks = [ccdproc.subtract_bias(c, bias) for c in ifc.ccds(imagetyp="DARK")]
    dark = ccdproc.combine(darks, method="median")
    dark.meta["EXPTIME"] = EXPTIME
    return bias, dark


def _process(ifc, bias, dark):
    return [ccdproc.ccd_process(c, master_bias=bias, dark_frame=dark, exposure_key="EXPTIME",
                                exposure_unit=u.s, dark_scale=True)
            for c in ifc.ccds(imagetyp="LIGHT")]


def test_reduction_with_aiflat_flat(raw_folder, tmp_path):
    folder, scene, t = raw_folder
    ifc = ccdproc.ImageFileCollection(folder, keywords=["imagetyp", "exptime"])
    assert len(ifc.files_filtered(imagetyp="LIGHT")) == 5
    bias, dark = _masters(ifc)
    lights = _process(ifc, bias, dark)

    # the dust flat, from the median of the bias/dark-subtracted lights
    median = np.median([c.data for c in lights], axis=0).astype(np.float32)
    flat = make_flat(median, t < 0.999)
    write_flat(tmp_path / "flat.fits", flat)
    flat = CCDData.read(tmp_path / "flat.fits")            # dimensionless, no unit argument needed
    assert flat.unit == u.dimensionless_unscaled and flat.mask is None

    for light in lights:
        cal = ccdproc.flat_correct(light, flat, norm_value=1)
        untouched = flat.data == 1.0
        assert np.array_equal(cal.data[untouched], light.data[untouched])   # bit-identical outside the dust
        inside = t < 0.99
        before = np.sqrt(np.mean((light.data[inside] / scene[inside] - 1) ** 2))
        after = np.sqrt(np.mean((cal.data[inside] / scene[inside] - 1) ** 2))
        assert after < 0.1 * before
        assert cal.unit == u.adu


def test_dq_as_science_exclusion_layer(raw_folder, tmp_path):
    folder, _, t = raw_folder
    median = (3000 * t).astype(np.float32)
    median[5, 5] = 0.0                                       # one unusable pixel inside a fake shadow
    mask = t < 0.999
    mask[4:7, 4:7] = True
    with pytest.warns(UserWarning, match="below the floor"):
        flat = make_flat(median, mask, profile="none")
    write_flat(tmp_path / "flat.fits", flat)
    dq = fits.getdata(tmp_path / "flat.fits", extname="DQ")
    # corrected dust is fine for science; only LOW_TRANS (and REVIEW) pixels are excluded
    bad = bitfield_to_boolean_mask(dq, ignore_flags="DUST,DUST_HALO,GENERATED", flag_name_map=DustDQ)
    assert bad[5, 5] and not bad[20, 25]
    only_low = bitfield_to_boolean_mask(dq, ignore_flags="~LOW_TRANS", flag_name_map=DustDQ)
    assert only_low[5, 5] and only_low.sum() == np.count_nonzero(dq & DustDQ.LOW_TRANS)
    light = CCDData(np.full(t.shape, 1000.0), unit="adu")
    cal = ccdproc.flat_correct(light, CCDData.read(tmp_path / "flat.fits"), norm_value=1)
    cal.mask = bad
    assert cal.mask[5, 5]


def test_ccd_process_normalises_a_dust_flat_by_its_mean(raw_folder, tmp_path):
    folder, _, t = raw_folder
    ifc = ccdproc.ImageFileCollection(folder, keywords=["imagetyp", "exptime"])
    bias, dark = _masters(ifc)
    light = next(ifc.ccds(imagetyp="LIGHT"))
    flat = make_flat((3000 * t).astype(np.float32), t < 0.999)
    exact = ccdproc.flat_correct(
        ccdproc.ccd_process(light, master_bias=bias, dark_frame=dark, exposure_key="EXPTIME",
                            exposure_unit=u.s, dark_scale=True), flat, norm_value=1)
    via = ccdproc.ccd_process(light, master_bias=bias, dark_frame=dark, exposure_key="EXPTIME",
                              exposure_unit=u.s, dark_scale=True, master_flat=flat)
    ratio = via.data / exact.data
    mean = float(flat.data.mean())
    # one constant factor everywhere: the dust is corrected, the whole frame is scaled by mean(flat)
    assert np.allclose(ratio, mean, rtol=1e-6)
    # mean(flat) = 1 - (dust area fraction) x (mean depth): here 2 shadows on a small frame, about 1 %
    assert mean == pytest.approx(float(np.mean(t)), abs=1e-3) and mean < 1
    # undoing it restores the values (to rounding), but the outside pixels are no longer bit-identical
    assert np.allclose(via.data / mean, exact.data, rtol=1e-6)
