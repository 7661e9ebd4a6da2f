"""Seeded fuzz test of the SER reader: >= 1,000 generated files, each decoded independently here.

Every generated file must either give exactly the frames of the independent
decoder below (written from the SER V3 layout and the documented rules of
docs/ser.rst, sharing no code with ``aiflat_astro.io.ser``), or raise one
clean `~aiflat_astro.utils.exceptions.SERFormatError`/`InputError` when the
file really cannot be read; a byte-order *guess* that turns out wrong is only
allowed with a warning naming the byte order (never a silent wrong decode).

Writers modelled (what real files are): LittleEndian flag 0 with
little-endian data (FireCapture, SharpCap, Siril, PIPP ... on x86), flag 1
with little-endian data (INDI, CSERIO: the spec-literal meaning) or
big-endian data (the de-facto meaning on a big-endian host), other flag
values with either.  Content: smooth images (per-channel or per-CFA-phase
gains), noise, constant frames, small values, MSB-aligned data, header
depths that lie.  Headers: every ColorID (unknown ones too), depths 0..17,
odd sizes, FrameCount 0 / too large / negative, truncated files, trailers
valid / garbage / short / too long, garbage strings and FileIDs.
"""

import datetime
import struct
import warnings

import numpy as np
import pytest

from aiflat_astro.io.ser import SERReader
from aiflat_astro.utils.exceptions import InputError, SERFormatWarning

N_FILES = 1200
SEED = 20261201

_HEADER = struct.Struct("<14s7i40s40s40sqq")  # the V3 layout, 178 bytes
_EPOCH = datetime.datetime(1, 1, 1)


def _ticks(dt):
    d = dt - _EPOCH
    return (d.days * 86400 + d.seconds) * 10_000_000 + d.microseconds * 10


_T1990, _T2100 = _ticks(datetime.datetime(1990, 1, 1)), _ticks(datetime.datetime(2100, 1, 1))


def reference_decode(raw, order):
    """Independent decode: ``None`` when the file cannot be read, else ``(n, frames)``.

    ``order`` is the byte order the data were written in (the truth).
    """
    if len(raw) < 178:
        return None
    (_, _, color, _, w, h, depth, count, *_rest) = _HEADER.unpack_from(raw)
    if not 1 <= depth <= 16 or w <= 0 or h <= 0:
        return None
    planes = 3 if color in (100, 101) else 1
    bps = 1 if depth <= 8 else 2
    fb = w * h * planes * bps
    payload = len(raw) - 178
    avail = payload // fb
    if 0 < count <= avail:
        n = count
    elif count <= 0:
        n = avail
        # documented rule: FrameCount 0 and tiny frames: frames + a trailer of valid dates
        if payload % (fb + 8) == 0:
            n_t = payload // (fb + 8)
            if 0 < n_t != avail:
                tail = np.frombuffer(raw, "<i8", count=n_t, offset=178 + n_t * fb) & ((1 << 62) - 1)
                if np.all((tail >= _T1990) & (tail <= _T2100)):
                    n = n_t
    else:
        n = avail
    if n == 0:
        return None
    dtype = np.dtype(order + "u2") if bps == 2 else np.dtype("u1")
    frames = np.frombuffer(raw, dtype, count=n * w * h * planes, offset=178).reshape(n, h, w, planes)
    if color == 101:
        frames = frames[..., ::-1]
    return n, (frames[..., 0] if planes == 1 else frames).astype(np.uint16 if bps == 2 else np.uint8)


def _content(rng, n, h, w, planes, color, depth, bps):
    """Stored samples (n, h, w*planes) in file channel order, and a name for the kind."""
    top = (1 << (8 * bps)) - 1
    vmax = (1 << min(max(depth, 1), 8 * bps)) - 1
    if rng.random() < 0.15:  # the header lies: data use all the bits
        vmax = top
    kind = rng.choice(["smooth", "smooth", "smooth", "noise", "constant", "small", "msb"])
    y, x = np.indices((h, w * planes))
    if kind == "smooth":
        gx, gy = rng.uniform(0.2, 40), rng.uniform(0.2, 40)
        base = rng.uniform(0.05, 0.6) * vmax + gx * (x // planes) + gy * y
        gain = np.ones((h, w * planes))
        if planes == 3:
            gain = np.array(rng.uniform(0.3, 1.0, 3))[x % 3]
        elif 8 <= color <= 19:
            g = rng.uniform(0.3, 1.0, 4)
            gain = g[(y % 2) * 2 + x % 2]
        data = np.stack([base * gain + k * rng.uniform(0, 3) + rng.normal(0, 1.0, base.shape)
                         for k in range(n)])
    elif kind == "noise":
        data = rng.integers(0, vmax + 1, size=(n, h, w * planes))
    elif kind == "constant":
        data = np.full((n, h, w * planes), rng.integers(0, vmax + 1))
    elif kind == "small":
        data = rng.integers(0, min(256, vmax + 1), size=(n, h, w * planes))
    else:  # MSB-aligned data of a smaller depth
        d = int(rng.integers(1, 8 * bps + 1))
        shift = 8 * bps - d
        data = (rng.integers(0, 1 << d, size=(n, h, w * planes)) << shift)
    return np.clip(np.rint(data), 0, top).astype(np.uint16 if bps == 2 else np.uint8), kind


def make_case(rng, k):
    """One random file: its bytes, the true byte order, and a description."""
    color = int(rng.choice([0, 0, 0, 8, 9, 10, 11, 16, 17, 18, 19, 100, 101, 100, 101,
                            int(rng.integers(-5, 300))]))
    depth = int(rng.choice([1, 4, 7, 8, 8, 9, 10, 12, 12, 14, 16, 16, 16])) if rng.random() > 0.04 \
        else int(rng.choice([0, 17, -1, 99]))
    w, h = int(rng.integers(1, 25)), int(rng.integers(1, 21))
    r = rng.random()
    if r < 0.02:
        w = int(rng.choice([0, -3, 1 << 20]))
    elif r < 0.04:
        h = int(rng.choice([0, -1, 1 << 24]))
    n = int(rng.integers(1, 5))
    planes = 3 if color in (100, 101) else 1
    bps = 1 if depth <= 8 else 2
    flag = int(rng.choice([0, 0, 1, 1, int(rng.integers(2, 1000))]))
    order = "<" if flag == 0 else str(rng.choice(["<", ">"]))
    body = b""
    kind = "none"
    if w > 0 and h > 0 and w * h < 10_000:
        stored, kind = _content(rng, n, h, w, planes, color, depth, bps)
        body = stored.astype(order + "u2").tobytes() if bps == 2 else stored.tobytes()
    count = n
    c = rng.random()
    if c < 0.1:
        count = 0
    elif c < 0.15:
        count = n + int(rng.integers(1, 5))
    elif c < 0.18:
        count = int(rng.choice([-1, -(1 << 31), (1 << 31) - 1]))
    t = rng.random()
    t0 = _ticks(datetime.datetime(2024, 4, 8, 18, 0, 0))
    if t < 0.45:
        trailer = np.array([t0 + i * 200_000 for i in range(n)], "<i8").tobytes()
    elif t < 0.55:
        trailer = rng.integers(0, 256, size=8 * n, dtype=np.uint8).tobytes()
    elif t < 0.62:
        trailer = np.array([t0 + i * 200_000 for i in range(n)], "<i8").tobytes()[:-int(rng.integers(1, 8))]
    elif t < 0.67:
        trailer = np.array([t0 + i * 200_000 for i in range(n)], "<i8").tobytes() + b"\x01" * 5
    else:
        trailer = b""
    file_id = b"LUCAM-RECORDER" if rng.random() > 0.1 else rng.integers(0, 256, 14, dtype=np.uint8).tobytes()

    def text():
        if rng.random() < 0.3:
            return rng.integers(0, 256, 40, dtype=np.uint8).tobytes()
        return b"Observer\0junk\x07"[:40]

    dt = int(rng.choice([0, -1, t0, t0 + 2 * 3600 * 10_000_000, int(rng.integers(-(1 << 62), 1 << 62))]))
    header = _HEADER.pack(file_id, 0, color, flag, w, h, depth, count, text(), text(), text(), dt, t0)
    raw = header + body + trailer
    if rng.random() < 0.08:  # truncated
        raw = raw[:int(rng.integers(0, len(raw) + 1))]
    return raw, order, f"case {k}: color {color} depth {depth} {w}x{h} n {n} flag {flag} order {order} " \
                       f"content {kind} count {count} size {len(raw)}"


def test_fuzzed_ser_files(tmp_path):
    rng = np.random.default_rng(SEED)
    stats = {"decoded": 0, "refused": 0, "guessed_wrong_with_warning": 0}
    path = tmp_path / "fuzz.ser"
    for k in range(N_FILES):
        raw, order, what = make_case(rng, k)
        path.write_bytes(raw)
        want = reference_decode(raw, order)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                with SERReader(path) as ser:
                    got = [ser.read(i) for i in range(ser.n_frames)]
                    n = ser.n_frames
            except InputError as exc:  # SERFormatError included
                message = str(exc)
                assert want is None, f"{what}: refused a readable file: {message}"
                assert message and "\n" not in message and "fuzz.ser" in message, what
                stats["refused"] += 1
                continue
        assert want is not None, f"{what}: read a file the reference refuses"
        n_want, frames = want
        assert n == n_want, f"{what}: {n} frames, reference {n_want}"
        equal = all(np.array_equal(g, f) for g, f in zip(got, frames))
        if not equal:
            # allowed only as a guess that was said out loud
            said = [str(w.message) for w in caught if issubclass(w.category, SERFormatWarning)
                    and "--byte-order" in str(w.message)]
            assert said, f"{what}: silent wrong decode"
            stats["guessed_wrong_with_warning"] += 1
        stats["decoded"] += 1
        assert all(g.shape == frames.shape[1:] for g in got)
    assert stats["decoded"] + stats["refused"] == N_FILES
    # the generator covers both outcomes well
    assert stats["decoded"] > 0.7 * N_FILES and stats["refused"] > 20, stats
    print(stats)


@pytest.mark.parametrize("color_id, phase", [(100, "rgb"), (101, "bgr"), (8, "cfa"), (9, "cfa"),
                                             (10, "cfa"), (11, "cfa")])
@pytest.mark.parametrize("seed", range(20))
def test_colour_flag1_little_endian_decoded(tmp_path, color_id, phase, seed):
    """The issue's silent wrong decode: 16-bit colour/Bayer, flag 1 (spec-literal), little-endian data."""
    rng = np.random.default_rng(seed)
    h, w = 48, 64
    planes = 3 if phase in ("rgb", "bgr") else 1
    y, x = np.indices((h, w * planes))
    base = rng.uniform(2000, 30000) + rng.uniform(0.5, 3) * (x // planes) + rng.uniform(0.5, 3) * y
    if planes == 3:
        gain = np.array(rng.uniform(0.4, 1.0, 3))[x % 3]
    else:
        gain = rng.uniform(0.4, 1.0, 4)[(y % 2) * 2 + x % 2]
    frames = np.stack([base * gain + k for k in range(3)]).round().astype("<u2")
    header = _HEADER.pack(b"LUCAM-RECORDER", 0, color_id, 1, w, h, 16, 3, b"", b"", b"", 0, 0)
    path = tmp_path / "indi.ser"
    path.write_bytes(header + frames.tobytes())
    with pytest.warns(SERFormatWarning, match="clearly little-endian"):
        ser = SERReader(path)
    assert ser.byte_order == "<"
    n, want = reference_decode(path.read_bytes(), "<")
    for i in range(n):
        np.testing.assert_array_equal(ser.read(i), want[i])
