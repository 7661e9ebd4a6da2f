"""A night of videos: one shared flat, the dust-change check, in-process and on a dask.distributed cluster."""

import json
import os
import shutil
import signal
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from aiflat_astro.provenance import sha256_file
from aiflat_astro.utils.exceptions import AiflatUserWarning, InputError

distributed = pytest.importorskip("distributed")

SHAPE = (96, 128)
N_FRAMES = 30
#: three videos of one dust (seeds of the scene 1, 2, 3), the fourth of another dust
DUST_SEEDS = (11, 11, 11, 12)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    from aiflat_astro.datasets import make_dusty_video

    d = tmp_path_factory.mktemp("night_videos")
    paths, truths = [], []
    for k, dust_seed in enumerate(DUST_SEEDS):
        p = d / f"night{k}.ser"
        truths.append(make_dusty_video(p, shape=SHAPE, n_frames=N_FRAMES, n_dust=5, seed=k + 1,
                                       dust_seed=dust_seed, regime="solar-soft"))
        paths.append(p)
    return {"paths": paths, "truths": truths, "sha": [sha256_file(p) for p in paths]}


@pytest.fixture(scope="module")
def cluster():
    """A LocalCluster of 2 worker processes on 127.0.0.1, shut down at the end."""
    from aiflat_astro.night import local_cluster

    with warnings.catch_warnings():
        # distributed closes its comms after the event loop at shutdown and says so with these
        warnings.filterwarnings("ignore", category=ResourceWarning)
        warnings.filterwarnings("ignore", message=".*unclosed.*", category=RuntimeWarning)
        with local_cluster(2, mem_limit="256MB") as lc, distributed.Client(lc) as client:
            assert all(addr.startswith("tcp://127.0.0.1:") for addr in client.nthreads())
            assert lc.scheduler_address.startswith("tcp://127.0.0.1:")
            import psutil

            listening = [c.laddr.ip for c in psutil.Process().net_connections() if c.status == "LISTEN"]
            assert listening and set(listening) == {"127.0.0.1"}
            yield lc, client


@pytest.fixture(scope="module")
def in_process(videos, tmp_path_factory):
    from aiflat_astro.pipeline import run_pipeline

    out = tmp_path_factory.mktemp("night_in_process")
    with pytest.warns(AiflatUserWarning, match=r"dust does not match the shared flat in 1 of 4 videos") as rec:
        result = run_pipeline([str(p) for p in videos["paths"]], out)
    mismatch = [w for w in rec if "dust does not match" in str(w.message)]
    assert len(mismatch) == 1 and "night3.ser" in str(mismatch[0].message)
    assert "night0.ser" not in str(mismatch[0].message)
    return out, result


def _stack(paths):
    from aiflat_astro.io import SERReader

    frames = []
    for p in paths:
        with SERReader(p) as r:
            frames.extend(r.read(i) for i in range(r.n_frames))
    return np.stack(frames)


@pytest.mark.slow
def test_night_in_process(videos, in_process, tmp_path):
    from aiflat_astro.cli import main
    from aiflat_astro.io.fits import read_median

    out, result = in_process
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest == json.loads(json.dumps(result["manifest"]))
    status = [v["status"] for v in manifest["videos"]]
    assert status == ["calibrated", "calibrated", "calibrated", "dust-mismatch"]
    v3 = manifest["videos"][3]
    assert v3["output"] is None and v3["dust_check"]["n_missing"] >= 1 and "missing" in v3["message"]
    assert not (out / "night3_aiflat.ser").exists()
    # inputs untouched, hashes and counts recorded
    for entry, p, sha in zip(manifest["videos"], videos["paths"], videos["sha"]):
        assert sha256_file(p) == sha == entry["input_sha256"]
        assert entry["n_frames"] == N_FRAMES and entry["input"] == str(p)
    assert manifest["flat"]["sha256"] == sha256_file(out / "flat.fits")
    assert manifest["software"].startswith("aiflat_astro")
    # the shared median is the exact median of every frame of the four videos
    median = read_median(out / "median.fits")
    expected = np.median(_stack(videos["paths"]), axis=0).astype(np.float32)
    assert np.array_equal(median.data, expected)
    assert median.meta["NCOMBINE"] == 4 * N_FRAMES
    # each calibrated video byte for byte what `aiflat apply` of the shared flat gives
    for k in range(3):
        ref = tmp_path / f"ref{k}.ser"
        assert main(["-q", "apply", str(out / "flat.fits"), str(videos["paths"][k]), "-o", str(ref)]) == 0
        entry = manifest["videos"][k]
        assert Path(entry["output"]) == out / f"night{k}_aiflat.ser"
        assert (out / f"night{k}_aiflat.ser").read_bytes() == ref.read_bytes()
        assert entry["output_sha256"] == sha256_file(ref)
    for name in ("median.fits", "mask.fits", "flat.fits", "dust.ecsv", "dust.reg", "preview.png"):
        assert (out / name).stat().st_size > 0
    assert not list(out.rglob("*.part"))


@pytest.mark.slow
def test_rerun_skips_and_force(videos, in_process, tmp_path):
    from aiflat_astro.pipeline import run_pipeline

    src, first = in_process
    out = tmp_path / "again"
    shutil.copytree(src, out)
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.is_file()}
    with pytest.warns(AiflatUserWarning, match="1 of 4 videos"):
        again = run_pipeline(videos["paths"], out)
    assert again["computed"] == []
    assert {"median", "mask", "flat"} <= set(again["reused"])
    for name in ("median.fits", "mask.fits", "flat.fits", "night0_aiflat.ser", "dust.ecsv"):
        assert (out / name).stat().st_mtime_ns == before[name]
    # --force: the mismatched video is calibrated too, the others are reused
    with pytest.warns(AiflatUserWarning, match="calibrated anyway"):
        forced = run_pipeline(videos["paths"], out, force=True)
    assert forced["computed"] == ["apply night3.ser"]
    v3 = forced["videos"][3]
    assert v3["status"] == "calibrated" and "anyway" in v3["message"]
    assert v3["output_sha256"] == sha256_file(out / "night3_aiflat.ser")


@pytest.mark.slow
def test_one_failed_video_fails_its_entry(videos, in_process, tmp_path):
    from aiflat_astro.pipeline import run_pipeline

    src, first = in_process
    out = tmp_path / "with_bad"
    shutil.copytree(src, out)
    bad = tmp_path / "broken.ser"
    bad.write_bytes(b"not a SER video at all")
    with pytest.warns(AiflatUserWarning, match="1 of 5 videos"):
        result = run_pipeline(videos["paths"] + [bad], out)
    status = [v["status"] for v in result["videos"]]
    assert status == ["calibrated", "calibrated", "calibrated", "dust-mismatch", "failed"]
    assert "cannot read" in result["videos"][4]["message"]
    # the broken file takes no part: the median, mask and flat of the four are reused
    assert {"median", "mask", "flat"} <= set(result["reused"])
    assert json.loads((out / "manifest.json").read_text())["videos"][4]["status"] == "failed"


def test_bad_inputs(videos, tmp_path):
    from aiflat_astro.pipeline import run_pipeline

    twin = tmp_path / "other"
    twin.mkdir()
    shutil.copy(videos["paths"][0], twin / "night0.ser")
    with pytest.raises(InputError, match="both be calibrated"):
        run_pipeline([videos["paths"][0], twin / "night0.ser"], tmp_path / "out")
    with pytest.raises(InputError, match="no video"):
        run_pipeline([], tmp_path / "out")
    with pytest.raises(InputError, match="no readable video"):
        run_pipeline([tmp_path / "missing1.ser", tmp_path / "missing2.ser"], tmp_path / "out2")


@pytest.mark.slow
def test_cluster_same_products(videos, in_process, cluster, tmp_path):
    from aiflat_astro.io.fits import read_flat, read_mask, read_median
    from aiflat_astro.pipeline import run_pipeline

    ref_out, ref = in_process
    _, client = cluster
    out = tmp_path / "cluster"
    # the mismatch warning is the driver's (tasks return results; workers do not warn here)
    with pytest.warns(AiflatUserWarning, match="1 of 4 videos"):
        result = run_pipeline(videos["paths"], out, client=client)
    assert [v["status"] for v in result["videos"]] == [v["status"] for v in ref["videos"]]
    assert [v["output_sha256"] for v in result["videos"]] == [v["output_sha256"] for v in ref["videos"]]
    assert [v["input_sha256"] for v in result["videos"]] == videos["sha"]
    assert np.array_equal(read_median(out / "median.fits").data, read_median(ref_out / "median.fits").data)
    assert np.array_equal(read_mask(out / "mask.fits").dq, read_mask(ref_out / "mask.fits").dq)
    assert np.array_equal(read_flat(out / "flat.fits").data, read_flat(ref_out / "flat.fits").data)
    assert (out / "dust.ecsv").read_text() == (ref_out / "dust.ecsv").read_text()
    assert [sha256_file(p) for p in videos["paths"]] == videos["sha"]
    # the median bands were cut for the 2 workers and their pieces removed
    assert not list((out / ".aiflat_parts").glob("median_*"))


@pytest.mark.slow
def test_cli_scheduler_and_workers(videos, in_process, cluster, tmp_path, capsys):
    from aiflat_astro.cli import main

    src, ref = in_process
    lc, _ = cluster
    out = tmp_path / "cli"
    shutil.copytree(src, out)
    args = ["run", *map(str, videos["paths"]), "-o", str(out)]  # not -q: it silences the warning line
    assert main(args + ["--scheduler", lc.scheduler_address]) == 0
    captured = capsys.readouterr()
    lines = [ln for ln in captured.err.splitlines() if "dust does not match" in ln]
    assert len(lines) == 1 and "night3.ser" in lines[0]
    assert "dust-mismatch" in captured.out and "computed: nothing" in captured.out
    # --workers N: a LocalCluster of its own, closed at the end
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=ResourceWarning)
        assert main(args + ["--workers", "1", "--force"]) == 0
    assert (out / "night3_aiflat.ser").exists()
    assert main(["-q", "run", str(videos["paths"][0]), "-o", str(tmp_path / "x"), "--workers", "0"]) == 1
    assert main(["-q", "run", str(videos["paths"][0]), "-o", str(tmp_path / "y"),
                 "--scheduler", "tcp://127.0.0.1:1"]) == 1
    assert "cannot reach the scheduler" in capsys.readouterr().err


@pytest.mark.slow
def test_worker_killed_mid_run(videos, in_process, cluster, tmp_path):
    """SIGKILL a worker while it runs a task of the night: the run completes (the task is redone)."""
    from aiflat_astro.pipeline import run_pipeline

    src, ref = in_process
    lc, client = cluster
    out = tmp_path / "killed"
    # the shared median, mask and flat are reused: the checks and calibrations run again (on the cluster)
    shutil.copytree(src, out)
    state = json.loads((out / "aiflat_run.json").read_text())
    del state["night"]["check"]
    for name in [n for n in state["products"] if n.startswith("calibrated:")]:
        del state["products"][name]
    (out / "aiflat_run.json").write_text(json.dumps(state))
    for p in out.glob("*_aiflat.ser"):
        p.unlink()
    killed = {}

    def killer():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not killed:
            busy = [addr for addr, tasks in client.processing().items() if tasks]
            if busy:
                pids = client.run(os.getpid, workers=busy[:1])
                pid = pids[busy[0]]
                os.kill(pid, signal.SIGKILL)
                killed["pid"] = pid
                return
            time.sleep(0.05)

    thread = threading.Thread(target=killer)
    thread.start()
    try:
        with pytest.warns(AiflatUserWarning, match="dust does not match"):
            result = run_pipeline(videos["paths"], out, client=client)
    finally:
        thread.join()
    assert killed, "no worker was busy"
    assert {"median", "mask", "flat"} <= set(result["reused"])
    client.wait_for_workers(2, timeout=30)  # the nanny restarts it: the cluster stays whole
    for entry, want in zip(result["videos"], ref["videos"]):
        if entry["status"] == "failed":  # a task can give up after the kills: then only its entry fails
            assert entry["message"] and not (out / f"{Path(entry['input']).stem}_aiflat.ser").exists()
        else:
            assert entry["status"] == want["status"]
            assert entry["output_sha256"] == want["output_sha256"]
    assert not list(out.glob(".*.part")) and not list(out.glob("*.part"))
    assert [sha256_file(p) for p in videos["paths"]] == videos["sha"]


def test_concat_frames_rows_and_selection(videos):
    from aiflat_astro.combine import median_combine
    from aiflat_astro.night import ConcatFrames

    paths = videos["paths"][:2]
    sel = [range(0, N_FRAMES, 3), [1, 4, 29]]
    stack = _stack(paths)
    want = np.concatenate([stack[list(sel[0])], stack[[N_FRAMES + i for i in sel[1]]]])
    with ConcatFrames(paths, selections=sel, rows=(10, 50)) as src:
        assert src.n_frames == len(want) and src.frame_shape == (40, SHAPE[1])
        idx = [0, 1, 2, 9, 10, 11, 12, 5]
        assert np.array_equal(src.read_rows(idx, 3, 17), want[idx, 13:27])
        assert np.array_equal(src.read(11), want[11, 10:50])
        band = median_combine(src, mem_limit="1MB")
    assert np.array_equal(band.data, np.median(want[:, 10:50], axis=0).astype(np.float32))


def test_check_dust_new_and_missing():
    """A speck cleaned off is missing; a new dip without the frames to place it on the sensor is unverified.

    (With frames the motion test decides: ``tests/test_night_check.py`` and
    the night above, whose fourth video of another dust is a mismatch.)
    """
    from aiflat_astro.night import check_dust

    rng = np.random.default_rng(3)
    y, x = np.mgrid[:96, :96]
    old = (x - 30) ** 2 + (y - 30) ** 2 < 25
    new = (x - 70) ** 2 + (y - 60) ** 2 < 25
    flat = np.where(old, 0.7, 1.0)
    sky = 1000 + rng.normal(0, 2, (96, 96))
    dq = old.astype(np.uint8)
    same = check_dust(sky * flat, sky * flat, dq, flat)
    assert same["match"] and same["n_tested"] == 1 and same["n_new"] == 0 and same["n_unverified"] == 0
    extra = check_dust(sky * flat * np.where(new, 0.7, 1.0), sky * flat, dq, flat)
    assert extra["match"] and extra["n_new"] == 0 and extra["n_unverified"] == 1 and extra["n_missing"] == 0
    gone = check_dust(sky, sky * flat, dq, flat)
    assert not gone["match"] and gone["n_missing"] == 1
    assert abs(gone["missing"][0][0] - 30) < 2 and abs(gone["missing"][0][1] - 30) < 2
    with pytest.raises(InputError, match="shapes differ"):
        check_dust(sky[:10], sky, dq, flat)
