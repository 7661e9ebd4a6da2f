"""Byte order of 16-bit SER data: de-facto flag prior checked by the byte-smoothness test."""

import numpy as np
import pytest
from scipy import ndimage

from aiflat_astro.io.ser import SERReader, decide_byte_order, write_ser
from aiflat_astro.utils.exceptions import SERFormatWarning


def solar_disc(shape=(96, 128), seed=0):
    """A limb-darkened solar disc with granulation, a spot and sky; values 0..1."""
    rng = np.random.default_rng(seed)
    y, x = np.indices(shape, dtype=float)
    r0 = 0.42 * min(shape)
    r = np.hypot(y - shape[0] * 0.55, x - shape[1] * 0.45) / r0
    mu = np.sqrt(np.clip(1 - r**2, 0, 1))
    disc = np.where(r < 1, 0.4 + 0.6 * mu, 0.0)
    gran = ndimage.gaussian_filter(rng.normal(size=shape), 1.5)
    spot = 1 - 0.7 * np.exp(-((y - 40) ** 2 + (x - 60) ** 2) / 20)
    return np.clip(disc * (1 + 0.03 * gran) * spot + 0.02, 0, 1)


def dusty_field(shape=(96, 128), seed=1):
    """A vignetted flat field with dark dust specks (like a dusty temporal median)."""
    rng = np.random.default_rng(seed)
    y, x = np.indices(shape, dtype=float)
    vign = 1 - 0.3 * (np.hypot(y - shape[0] / 2, x - shape[1] / 2) / max(shape)) ** 2
    dust = np.ones(shape)
    for _ in range(6):
        cy, cx, s = rng.uniform(0, shape[0]), rng.uniform(0, shape[1]), rng.uniform(1.5, 4)
        dust *= 1 - 0.4 * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * s**2))
    return 0.85 * vign * dust


def quantise(image, bits, align, seed=0):
    """Scale to ``bits`` with noise; LSB- or MSB-aligned in 16-bit samples."""
    rng = np.random.default_rng(seed)
    full = 2**bits - 1
    v = image * 0.9 * full
    v = v + rng.normal(0, 1, image.shape) * np.sqrt(np.maximum(v, 1) / 4 + 2)
    v = np.clip(np.rint(v), 0, full).astype(np.uint16)
    return v << (16 - bits) if align == "msb" else v


@pytest.mark.parametrize("scene", [solar_disc, dusty_field])
@pytest.mark.parametrize("bits, align", [(10, "lsb"), (12, "lsb"), (14, "lsb"), (16, "lsb"),
                                         (10, "msb"), (12, "msb"), (14, "msb")])
@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("flag", [0, 1])
def test_decision_on_realistic_images(tmp_path, scene, bits, align, order, flag):
    frames = np.stack([quantise(scene(), bits, align, seed=k) for k in range(3)])
    path = tmp_path / "v.ser"
    write_ser(path, frames, pixel_depth=bits, byte_order=order, little_endian_flag=flag)
    prior = "<" if flag == 0 else ">"
    if prior == order:
        ser = SERReader(path)
        assert "data agree" in ser.byte_order_reason
    else:  # the data overrule the flag, with a warning (INDI-style flag 1 + LE data, ...)
        with pytest.warns(SERFormatWarning, match="data are clearly"):
            ser = SERReader(path)
    assert ser.byte_order == order
    assert ser.file_dtype == np.dtype(order + "u2")
    assert ser.dtype == np.dtype(np.uint16)
    np.testing.assert_array_equal(ser.read(2), frames[2])
    assert ser.measured_depth == (bits if align == "lsb" else 16)
    if align == "msb":
        assert ser.unused_low_bits == 16 - bits
    assert ser.header.pixel_depth == bits  # the header value is reported, never used to rescale


def test_direct_decision_and_ratio_thresholds():
    img = quantise(solar_disc(), 12, "lsb")
    le = img.astype("<u2").view(np.uint8).reshape(*img.shape, 2)
    be = img.astype(">u2").view(np.uint8).reshape(*img.shape, 2)
    assert decide_byte_order([le], 0)[:1] == ("<",)
    assert decide_byte_order([be], 1)[:1] == (">",)
    order, reason, disagree = decide_byte_order([be], 0)
    assert (order, disagree) == (">", True) and "clearly big-endian" in reason
    # an image whose two bytes are equally rough is ambiguous: the prior stands
    rng = np.random.default_rng(3)
    noise = rng.integers(0, 256, size=(32, 32, 2), dtype=np.uint8)
    for flag, prior in [(0, "<"), (1, ">")]:
        order, reason, disagree = decide_byte_order([noise], flag)
        assert (order, disagree) == (prior, False) and "inconclusive" in reason


def test_constant_frames_keep_the_flag(tmp_path):
    frames = np.full((2, 8, 8), 0x0102, np.uint16)
    path = tmp_path / "flat.ser"
    write_ser(path, frames, pixel_depth=16, byte_order=">", little_endian_flag=1)
    # the data cannot tell: the flag decides, and the guess is said out loud
    with pytest.warns(SERFormatWarning, match=r"inconclusive.*reading big-endian.*--byte-order '<'"):
        ser = SERReader(path)
    assert ser.byte_order == ">" and "nearly constant" in ser.byte_order_reason
    assert ser.byte_order_inconclusive and ser.info()["byte_order_inconclusive"]
    assert ser.read(0)[0, 0] == 0x0102
    # the same big-endian bytes flagged 0: without evidence in the data the flag decides
    write_ser(path, frames, pixel_depth=16, byte_order=">", little_endian_flag=0, overwrite=True)
    ser = SERReader(path)  # flag 0 is little-endian for every known x86 writer: no warning
    assert ser.byte_order == "<" and ser.warnings_list == [] and ser.byte_order_inconclusive
    assert ser.read(0)[0, 0] == 0x0201
    # both bytes equal: both orders give the same values, nothing to warn about
    write_ser(path, np.full((2, 8, 8), 0x0707, np.uint16), pixel_depth=16, overwrite=True)
    ser = SERReader(path)
    assert ser.warnings_list == [] and not ser.byte_order_inconclusive


def test_constant_frames_decided_by_header_depth(tmp_path):
    # 800 = 0x0320 fits 12 bits; read big-endian it would be 0x2003 = 8195: too large, low bits set
    frames = np.full((2, 8, 8), 800, np.uint16)
    path = tmp_path / "c12.ser"
    write_ser(path, frames, pixel_depth=12, byte_order="<", little_endian_flag=1)
    with pytest.warns(SERFormatWarning, match="clearly little-endian"):
        ser = SERReader(path)
    assert ser.byte_order == "<" and "header depth of 12 bits" in ser.byte_order_reason
    np.testing.assert_array_equal(ser.read(1), frames[1])


def test_constant_high_byte_decides(tmp_path):
    rng = np.random.default_rng(0)
    frames = rng.integers(300, 360, size=(2, 16, 16)).astype(np.uint16)  # high byte always 1
    path = tmp_path / "dark.ser"
    write_ser(path, frames, pixel_depth=12, byte_order="<", little_endian_flag=1)
    with pytest.warns(SERFormatWarning, match="clearly little-endian"):
        ser = SERReader(path)
    np.testing.assert_array_equal(ser.read(1), frames[1])


@pytest.mark.parametrize("flag", [0, 1])
def test_zero_byte_is_undecidable(tmp_path, flag):
    # values below 256 in one order have the same bytes as MSB-aligned 8-bit data in the other
    rng = np.random.default_rng(0)
    small = rng.integers(10, 200, size=(2, 16, 16)).astype(np.uint16)
    path = tmp_path / "small.ser"
    order = "<" if flag == 0 else ">"
    write_ser(path, small, pixel_depth=16, byte_order=order, little_endian_flag=flag)
    if flag:
        with pytest.warns(SERFormatWarning, match="inconclusive"):
            ser = SERReader(path)
    else:
        ser = SERReader(path)
    assert ser.byte_order == order and "inconclusive" in ser.byte_order_reason
    assert len(ser.warnings_list) == flag
    np.testing.assert_array_equal(ser.read(0), small[0])
    # MSB-aligned 8-bit data in 16-bit samples, flagged by the de-facto convention
    write_ser(path, small << 8, pixel_depth=16, byte_order=order, little_endian_flag=flag,
              overwrite=True)
    if flag:
        with pytest.warns(SERFormatWarning, match="inconclusive"):
            ser = SERReader(path)
    else:
        ser = SERReader(path)
    assert ser.byte_order == order and ser.unused_low_bits == 8 and ser.measured_depth == 16
    np.testing.assert_array_equal(ser.read(0), small[0] << 8)


def test_override_byte_order(tmp_path):
    frames = np.stack([quantise(solar_disc(), 12, "lsb")] * 2)
    path = tmp_path / "o.ser"
    write_ser(path, frames, pixel_depth=12, byte_order="<", little_endian_flag=1)
    ser = SERReader(path, byte_order="<")  # forced: no warning despite the flag
    assert ser.byte_order == "<" and "forced" in ser.byte_order_reason
    assert ser.warnings_list == []
    wrong = SERReader(path, byte_order=">")  # forcing the wrong order swaps the bytes
    np.testing.assert_array_equal(wrong.read(0), frames[0].byteswap())
    with pytest.raises(ValueError, match="byte_order"):
        SERReader(path, byte_order="middle")


def test_odd_flag_value(tmp_path):
    frames = np.stack([quantise(dusty_field(), 12, "lsb")] * 2)
    path = tmp_path / "odd.ser"
    write_ser(path, frames, pixel_depth=12, byte_order=">", little_endian_flag=7)
    with pytest.warns(SERFormatWarning, match="flag 7"):
        ser = SERReader(path)
    assert ser.byte_order == ">"
    np.testing.assert_array_equal(ser.read(0), frames[0])


def test_8bit_ignores_flag(tmp_path):
    frames = np.arange(2 * 4 * 4, dtype=np.uint8).reshape(2, 4, 4)
    path = tmp_path / "b8.ser"
    write_ser(path, frames, little_endian_flag=1)
    ser = SERReader(path)
    assert ser.file_dtype == np.dtype("u1") and "does not apply" in ser.byte_order_reason
    assert ser.warnings_list == []
    np.testing.assert_array_equal(ser.read(1), frames[1])
