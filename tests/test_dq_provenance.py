import numpy as np
import pytest
from astropy.io import fits
from astropy.nddata.bitmask import bitfield_to_boolean_mask, interpret_bit_flags

from aiflat_astro import DustDQ
from aiflat_astro.cli import main
from aiflat_astro.dq import dq_definitions_table
from aiflat_astro.provenance import add_provenance_cards, provjson_hdu, read_provjson, verify_checksums
from aiflat_astro.utils.exceptions import ProvenanceError


def test_dq_bits_match_contract():
    assert interpret_bit_flags("DUST|LOW_TRANS", flag_name_map=DustDQ) == 5
    t = dq_definitions_table()
    assert list(t["VALUE"]) == [1, 2, 4, 8, 16, 32, 64, 128]
    assert [DustDQ[n] for n in t["NAME"]] == list(t["VALUE"])
    dq = np.array([0, 1, 2, 64 | 1], dtype=np.uint8)
    assert list(bitfield_to_boolean_mask(dq, ignore_flags="~DUST", flag_name_map=DustDQ)) == [False, True, False, True]


def test_provjson_roundtrip_and_checksums(tmp_path):
    prov = {"ai_prompt": "line one\nline two — with trailing   ", "detector": "local"}
    hdr = fits.Header()
    add_provenance_cards(hdr, prov)
    hdul = fits.HDUList([fits.PrimaryHDU(np.ones((4, 4), np.float32), header=hdr), provjson_hdu(prov)])
    path = tmp_path / "p.fits"
    hdul.writeto(path, checksum=True)
    with fits.open(path) as h:
        verify_checksums(h)
        assert read_provjson(h) == prov
        assert h[0].header["PROCSOFT"].startswith("aiflat_astro")
    raw = bytearray(path.read_bytes())
    raw[2880 + 10] ^= 0xFF  # flip a data byte of the primary HDU
    path.write_bytes(bytes(raw))
    with fits.open(path) as h, pytest.raises(ProvenanceError):
        verify_checksums(h)


def test_cli_version(capsys):
    assert main(["--version"]) == 0
    assert "aiflat_astro" in capsys.readouterr().out
