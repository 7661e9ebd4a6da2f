"""SIGKILL in the middle of ``aiflat apply`` and ``aiflat run``: nothing left behind after the next run."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from aiflat_astro.io import write_ser
from aiflat_astro.utils._atomic import clean_stale_parts, temporary_path

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc and SIGKILL")


def _aiflat(*args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "aiflat_astro.cli", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


def _finish(proc):
    """Wait for ``proc``; return (exit status, stderr text); the pipes are closed."""
    _, err = proc.communicate()
    return proc.returncode, err.decode()


def _leftovers(folder):
    return sorted(p.name for p in Path(folder).iterdir() if p.name.endswith(".part"))


def _writing_into(pid, folder):
    """Whether process ``pid`` holds a file open in ``folder`` that has no name yet (or a .part)."""
    folder = os.path.realpath(folder)
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith(folder + "/") and ("(deleted)" in target or target.endswith(".part")):
            return True
    return False


def _kill_when_writing(proc, folder, timeout=60):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout and proc.poll() is None:
        if _writing_into(proc.pid, folder):
            proc.send_signal(signal.SIGKILL)
            _finish(proc)
            return True
        time.sleep(0.002)
    _finish(proc)
    return False


@pytest.fixture
def video_and_flat(tmp_path):
    n, h, w = 400, 256, 256  # 52 MB
    rng = np.random.default_rng(1)
    frame = (2000 + 4 * np.add.outer(np.arange(h), np.arange(w))).astype(np.uint16)
    frames = np.broadcast_to(frame, (n, h, w)) + rng.integers(0, 4, (n, 1, 1)).astype(np.uint16)
    video = tmp_path / "in" / "sun.ser"
    video.parent.mkdir()
    write_ser(video, frames, pixel_depth=14)
    flat = np.ones((h, w), np.float32)
    for y, x in [(40, 40), (120, 200), (200, 90)]:
        flat[y - 12:y + 12, x - 12:x + 12] = 0.7
    from astropy.nddata import CCDData

    from aiflat_astro.io.fits import write_flat

    flat_path = tmp_path / "in" / "flat.fits"
    write_flat(flat_path, CCDData(flat, unit=""))
    return video, flat_path


@pytest.mark.slow
def test_apply_killed_leaves_nothing(tmp_path, video_and_flat):
    video, flat = video_and_flat
    out = tmp_path / "out"
    out.mkdir()
    reference = tmp_path / "ref.ser"
    rc, err = _finish(_aiflat("apply", flat, video, "-o", reference))
    assert rc == 0, err
    before = video.read_bytes()
    killed = 0
    for attempt in range(5):
        proc = _aiflat("apply", flat, video, "-o", out / "cal.ser", "--overwrite")
        killed += _kill_when_writing(proc, out)
        # killed mid-write: no temporary file and no partial output under the final name
        assert _leftovers(out) == []
        assert not (out / "cal.ser").exists() or (out / "cal.ser").read_bytes() == reference.read_bytes()
    assert killed >= 3, "the apply runs ended before they could be killed"
    rc, err = _finish(_aiflat("apply", flat, video, "-o", out / "cal.ser", "--overwrite"))
    assert rc == 0, err
    assert _leftovers(out) == [] and sorted(os.listdir(out)) == ["cal.ser"]
    assert (out / "cal.ser").read_bytes() == reference.read_bytes()
    assert video.read_bytes() == before  # the input is never changed


@pytest.mark.slow
def test_run_killed_then_rerun_leaves_nothing(tmp_path):
    video = tmp_path / "demo.ser"
    rc, err = _finish(_aiflat("simulate", "-o", video, "--seed", "3"))
    assert rc == 0, err
    outdir = tmp_path / "run"
    kills, left = 0, set()
    for _ in range(4):  # each kill lands on the first product being written; reruns go further
        proc = _aiflat("run", video, "-o", outdir, "--step", "2")
        outdir.mkdir(exist_ok=True)
        kills += _kill_when_writing(proc, outdir)
        left.update(_leftovers(outdir))
    rc, err = _finish(_aiflat("run", video, "-o", outdir, "--step", "2"))
    assert rc == 0, err
    assert _leftovers(outdir) == [], "a killed run left temporary files that the rerun kept"
    assert (outdir / "flat.fits").is_file() and (outdir / "demo_aiflat.ser").is_file()
    assert kills >= 2 and left, (kills, left)  # the kills did leave named temporary files behind


@pytest.mark.slow
def test_stale_parts_of_dead_processes_removed_at_command_start(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f".median.fits.aiflat-{dead.pid}-abcd1234.part"
    stale.write_bytes(b"x" * 100)
    old = time.time() - 3600
    os.utime(stale, (old, old))
    live = Path(temporary_path(tmp_path / "other.fits"))  # this process: alive, never removed
    live.write_bytes(b"y")
    os.utime(live, (old, old))
    foreign = tmp_path / ".notes.txt.part"  # not our pattern: left alone
    foreign.write_bytes(b"z")
    os.utime(foreign, (old, old))
    fresh = tmp_path / f".x.fits.aiflat-{dead.pid}-freshfil.part"  # newer than the run: left alone
    fresh.write_bytes(b"w")
    assert clean_stale_parts(tmp_path, before=time.time() - 60) == [stale.name]
    assert live.exists() and foreign.exists() and fresh.exists() and not stale.exists()
    # the command line does it in each output folder before the work
    stale.write_bytes(b"x")
    os.utime(stale, (old, old))
    rc, err = _finish(_aiflat("simulate", "-o", tmp_path / "s.ser", "--seed", "1"))
    assert rc == 0, err
    assert not stale.exists() and live.exists()
