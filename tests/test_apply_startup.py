"""The ``aiflat apply`` fast start: light package import, registry hook, background copy."""

import os
import subprocess
import sys
import threading

import numpy as np
import pytest
from astropy.nddata import CCDData

from aiflat_astro.cli import main
from aiflat_astro.io import SERReader, write_ser
from aiflat_astro.io.fits import write_flat
from aiflat_astro.utils._copy import BackgroundCopy


def _run(code):
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def _video(path, n=6, shape=(24, 32)):
    rng = np.random.default_rng(0)
    frames = np.clip(rng.normal(2000, 40, (n,) + shape), 0, 4095).astype(np.uint16)
    write_ser(path, frames, pixel_depth=12)
    return frames


def _flat_file(path, shape=(24, 32)):
    flat = np.ones(shape, np.float32)
    flat[5:11, 7:15] = 0.6
    write_flat(path, CCDData(flat, unit=""))
    return flat


def test_package_and_command_line_start_without_astropy():
    # importing the package and building the command line parser load neither NumPy nor astropy
    out = _run("import sys, aiflat_astro, aiflat_astro.cli as c; c._build_parser(); "
               "print(sorted(m for m in ('numpy', 'astropy', 'astropy.nddata', 'scipy') if m in sys.modules))")
    assert out == "[]"


@pytest.mark.slow
def test_public_names_still_resolve_lazily():
    out = _run("import sys, aiflat_astro as a; d = a.DustDQ; r = a.read_ser; e = a.InputError; "
               "print(a.io.SERReader is a.SERReader, issubclass(e, ValueError), int(d.DUST), "
               "'astropy.nddata' in sys.modules)")
    assert out == "True True 1 True"


def test_dustdq_is_built_once_from_dq_bits():
    import pickle

    from astropy.nddata.bitmask import BitFlagNameMap

    import aiflat_astro
    from aiflat_astro import dq

    assert aiflat_astro.DustDQ is dq.DustDQ and issubclass(dq.DustDQ, BitFlagNameMap)
    assert [(name, int(getattr(dq.DustDQ, name))) for _, _, name, _ in dq.DQ_BITS] == \
        [(name, value) for _, value, name, _ in dq.DQ_BITS]
    assert dq.DustDQ.__qualname__ == "DustDQ" and dq.DustDQ.__module__ == "aiflat_astro.dq"
    assert pickle.loads(pickle.dumps(dq.DustDQ)) is dq.DustDQ
    with pytest.raises(AttributeError):
        dq.DustDQ.DUST = 3  # a BitFlagNameMap stays read-only


@pytest.mark.parametrize("order", ["aiflat first", "astropy first", "io.ser first"])
@pytest.mark.slow
def test_ccddata_ser_format_registered_in_any_import_order(tmp_path, order):
    path = tmp_path / "v.ser"
    _video(path)
    first = {"aiflat first": "import aiflat_astro; from astropy.nddata import CCDData",
             "astropy first": "from astropy.nddata import CCDData; import aiflat_astro",
             "io.ser first": "import aiflat_astro.io.ser; from astropy.nddata import CCDData"}[order]
    out = _run(f"{first}; a = CCDData.read({str(path)!r}, format='ser', frame=2); "
               f"b = CCDData.read({str(path)!r}, frame=2); "
               "print(a.shape, a.unit, int(a.data[0, 0]) == int(b.data[0, 0]))")
    assert out == "(24, 32) adu True"


def test_background_copy_copies_and_can_be_cancelled(tmp_path):
    src = tmp_path / "a.bin"
    data = os.urandom(3 << 20)
    src.write_bytes(data)
    copy = BackgroundCopy(src, tmp_path / "b.bin")
    copy.finish()
    assert (tmp_path / "b.bin").read_bytes() == data and copy.done

    gate = threading.Event()

    class Gated(BackgroundCopy):
        CHUNK = 4096

        def _run(self):
            gate.wait()  # the copy starts only once the test has asked for the cancel
            super()._run()

    copy = Gated(src, tmp_path / "c.bin")
    copy._cancelled.set()
    gate.set()
    copy.cancel()
    assert copy.done
    if copy.sequential:
        assert os.path.getsize(tmp_path / "c.bin") < len(data)
        with pytest.raises(OSError, match="cancelled"):
            copy.finish()


def test_copy_error_is_raised_in_the_caller(tmp_path):
    with pytest.raises(FileNotFoundError):
        BackgroundCopy(tmp_path / "missing.bin", tmp_path / "out.bin")
    assert not (tmp_path / "out.bin").exists()


def test_apply_command_starts_the_copy_early_and_cleans_up_on_errors(tmp_path, capsys):
    src = tmp_path / "in.ser"
    frames = _video(src)
    flat = _flat_file(tmp_path / "flat.fits")
    out = tmp_path / "out" / "cal.ser"
    out.parent.mkdir()
    # a corrupted flat: refused after the copy started; nothing is left in the output folder
    raw = bytearray((tmp_path / "flat.fits").read_bytes())
    raw[2880 + 100] ^= 0xFF
    (tmp_path / "bad.fits").write_bytes(bytes(raw))
    assert main(["apply", str(tmp_path / "bad.fits"), str(src), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "checksum" in err
    assert list(out.parent.iterdir()) == []
    # a flat of another shape: refused by the header check, nothing left either
    _flat_file(tmp_path / "small.fits", shape=(10, 10))
    assert main(["apply", str(tmp_path / "small.fits"), str(src), "-o", str(out)]) == 1
    assert "does not match the flat" in capsys.readouterr().err
    assert list(out.parent.iterdir()) == []
    # the good flat: the early copy is adopted and patched
    assert main(["apply", str(tmp_path / "flat.fits"), str(src), "-o", str(out)]) == 0
    assert [p.name for p in out.parent.iterdir()] == ["cal.ser"]
    with SERReader(out) as cal:
        for i in range(len(frames)):
            expected = np.clip(np.rint(frames[i] / flat.astype(np.float64)), 0, 4095).astype(np.uint16)
            assert np.array_equal(cal.read(i), expected)
    assert out.read_bytes()[:178] == src.read_bytes()[:178]


def test_apply_command_early_copy_of_a_damaged_video_is_replaced_by_a_repaired_one(tmp_path):
    import warnings

    src = tmp_path / "in.ser"
    rng = np.random.default_rng(1)
    frames = np.clip(rng.normal(2000, 40, (5, 24, 32)), 0, 4095).astype(np.uint16)
    write_ser(src, frames, pixel_depth=12, frame_count=9)  # FrameCount disagrees with the file
    flat = _flat_file(tmp_path / "flat.fits")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["apply", str(tmp_path / "flat.fits"), str(src), "-o", str(tmp_path / "cal.ser")]) == 0
        with SERReader(tmp_path / "cal.ser") as cal:
            assert cal.header.frame_count == cal.n_frames == 5
            got = cal.read(3)
    assert np.array_equal(got, np.clip(np.rint(frames[3] / flat.astype(np.float64)), 0, 4095).astype(np.uint16))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cal.ser", "flat.fits", "in.ser"]


def _full_flat(path, shape=(24, 32)):
    """A flat as make_flat writes it: DQ, UNCERT, PROVJSON, long provenance cards."""
    from astropy.nddata import StdDevUncertainty

    flat = np.ones(shape, np.float32)
    flat[5:11, 7:15] = 0.6
    flat[6, 8] = 1.03
    dq = (flat != 1).astype(np.uint8)
    meta = {"PARAMSHA": "0123456789abcdef", "AIPROMPT": "a long prompt " * 20, "OBJECT": "it's the Sun"}
    write_flat(path, CCDData(flat, unit="", flags=dq, uncertainty=StdDevUncertainty(flat * 0.01), meta=meta))
    return flat, dq


def test_fast_flat_reader_agrees_with_astropy(tmp_path):
    from aiflat_astro.io._fastflat import read_flat_fast
    from aiflat_astro.io.fits import read_flat

    flat, dq = _full_flat(tmp_path / "flat.fits")
    fast = read_flat_fast(tmp_path / "flat.fits")
    ref = read_flat(tmp_path / "flat.fits")
    assert fast is not None
    assert np.array_equal(fast[0], ref.data) and fast[0].dtype == np.float32 and np.array_equal(fast[0], flat)
    assert np.array_equal(fast[1], ref.flags) and np.array_equal(fast[1], dq)
    for key in ("PARAMSHA", "OBJECT", "BUNIT", "ROWORDER"):
        assert fast[2][key] == ref.meta[key], key


@pytest.mark.parametrize("damage", ["data bit", "header card", "no checksum", "mask extension", "float64",
                                    "truncated", "not fits"])
def test_fast_flat_reader_leaves_every_doubt_to_astropy(tmp_path, damage):
    from astropy.io import fits

    from aiflat_astro.io._fastflat import read_flat_fast

    path = tmp_path / "flat.fits"
    _full_flat(path)
    raw = bytearray(path.read_bytes())
    if damage == "data bit":
        with fits.open(path) as hdul:
            start = hdul.fileinfo(0)["datLoc"]
        raw[start + 5 * 32 * 4 + 40] ^= 0x01
        path.write_bytes(bytes(raw))
    elif damage == "header card":
        at = raw.index(b"OBJECT  = ")
        raw[at + 12:at + 15] = b"XYZ"
        path.write_bytes(bytes(raw))
    elif damage == "no checksum":
        with fits.open(path) as hdul:
            for hdu in hdul:
                for key in ("CHECKSUM", "DATASUM"):
                    hdu.header.remove(key, ignore_missing=True)
            hdul.writeto(tmp_path / "plain.fits")
        path = tmp_path / "plain.fits"
    elif damage == "mask extension":
        with fits.open(path) as hdul:
            hdul.append(fits.ImageHDU(np.zeros((24, 32), np.uint8), name="MASK"))
            hdul.writeto(tmp_path / "mask.fits", checksum=True)
        path = tmp_path / "mask.fits"
    elif damage == "float64":
        with fits.open(path) as hdul:
            hdul[0].data = hdul[0].data.astype(np.float64)
            hdul.writeto(tmp_path / "f64.fits", checksum=True)
        path = tmp_path / "f64.fits"
    elif damage == "truncated":
        path.write_bytes(bytes(raw[:-2880]))
    else:
        path.write_bytes(b"SIMPLE  =  nothing like FITS" * 200)
    assert read_flat_fast(path) is None


def test_fast_flat_card_values():
    from aiflat_astro.io._fastflat import _value

    def card(text):
        return text.ljust(80).encode("ascii")

    assert _value(card("NAXIS   =                    2 / number of axes")) == 2
    assert _value(card("BZERO   =              32768.0")) == 32768.0
    assert _value(card("SIMPLE  =                    T")) is True
    assert _value(card("OBJECT  = 'it''s / the Sun  '  / a comment")) == "it's / the Sun"
    assert _value(card("BUNIT   = ''")) == ""
    assert _value(card("COMMENT no value here")) is None


def test_apply_command_reads_a_ser_video_without_astropy_io_fits(tmp_path):
    src = tmp_path / "in.ser"
    _video(src)
    _full_flat(tmp_path / "flat.fits")
    out = _run("import sys; from aiflat_astro.cli import main; "
               f"rc = main(['-q', 'apply', {str(tmp_path / 'flat.fits')!r}, {str(src)!r}, '-o', "
               f"{str(tmp_path / 'out.ser')!r}]); "
               "print(rc, sorted(m for m in ('astropy.io.fits', 'astropy.units', 'astropy.nddata') "
               "if m in sys.modules))")
    assert out.splitlines()[-1] == "0 []"
    assert (tmp_path / "out.ser").exists()
