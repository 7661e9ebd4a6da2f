"""The hand on real dust: the xu2016 H-alpha set (skips when shared/data/real is absent).

The injected-speck case and the seed-like flat come from ``benchmarks/bench_flat_real.py``
(one definition, used by the benchmark and by these tests).
"""

import importlib.util
import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from aiflat_astro.dq import DustDQ
from aiflat_astro.evaluate import mask_from_flat, residual_contrast
from aiflat_astro.flat import make_flat


def _bench():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_flat_real.py"
    spec = importlib.util.spec_from_file_location("bench_flat_real", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def xu_mask(xu2016):
    return mask_from_flat(xu2016.paper_flat, xu2016.spots, min_depth=0.1, grow=2)


def test_xu2016_given_mask_holds_the_three_spots(xu2016, xu_mask):
    lab, n = ndimage.label(xu_mask)
    assert n == 3
    centres = np.array(ndimage.center_of_mass(xu_mask, lab, range(1, 4)))
    areas = ndimage.sum(xu_mask, lab, range(1, 4))
    assert np.all(np.hypot(*(centres - xu2016.spots).T) < 6)
    assert np.all((areas > 400) & (areas < 4000))     # 23-70 px across: the three soft spots of the set


@pytest.mark.slow
def test_xu2016_radial_flat_follows_the_transmission_seen_by_the_frames(xu2016, xu_mask):
    # the Sun moves by hundreds of px between the frames: the median over the frames of
    # frame / local plane is the spots' transmission with the scene averaged out, an estimate
    # that no flat method made; the flat made from the median alone must follow its radial mean
    bench = _bench()
    median = np.median(xu2016.frames, axis=0).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        flat = make_flat(median, xu_mask)
    proxy = bench.transmission_proxy(xu2016.frames, xu_mask)
    lab, _ = ndimage.label(xu_mask)
    for k in range(1, 4):
        core = lab == k
        cy, cx = np.argwhere(core).mean(axis=0)
        r_eq = np.sqrt(core.sum() / np.pi)
        yy, xx = np.mgrid[0:median.shape[0], 0:median.shape[1]]
        rr = np.hypot(yy - cy, xx - cx)
        diffs = []
        for a in np.arange(0, r_eq, 2.0):
            sel = (rr >= a) & (rr < a + 2) & np.isfinite(proxy)
            diffs.append(np.median(flat.data[sel]) - np.median(proxy[sel]))
        assert np.mean(np.abs(diffs)) < 0.012, (k, np.round(diffs, 3))
        assert 1 - flat.data[core].min() > 0.1                       # the spots are corrected, 14-24 % deep
    outside = (flat.flags & (DustDQ.DUST | DustDQ.DUST_HALO)) == 0
    assert np.all(flat.data[outside] == 1.0)
    # an independent image: each frame with the spot on the disc is less dusty after the median's flat
    cross = []
    for frame in xu2016.frames:
        ok = bench.on_disc(frame, xu_mask)
        cross += list(residual_contrast(frame / flat.data, frame, xu_mask)["per_shadow"][ok])
    assert len(cross) >= 15 and np.sqrt(np.mean(np.square(cross))) < 0.95


@pytest.mark.slow
def test_injected_real_specks_on_real_disc_texture(xu2016):
    bench = _bench()
    for case, k in enumerate(bench.INJECT_FRAMES[:2]):
        cy, cx = xu2016.centroids[k].astype(int)
        half = bench.CROP // 2
        bg = xu2016.frames[k, cy - half:cy + half, cx - half:cx + half].astype(np.float64)
        t, core = bench.inject_specks(bg.shape, np.random.default_rng(100 + case), 20)
        image = bg * t
        ours = bench.our_flat(image, core)
        seed = bench.seed_like_flat(image, core)
        grown = ndimage.distance_transform_edt(~core) <= 3

        def truth(f):
            return np.sqrt(np.mean((t[grown] / f[grown] - 1) ** 2) / np.mean((1 - t[grown]) ** 2))

        assert truth(ours) < 0.25 and truth(ours) < 0.6 * truth(seed), (truth(ours), truth(seed))
        # the contrast left is the scene's texture under the shadows: as low as the true flat leaves
        self_ours = residual_contrast(image / ours, image, core)["residual"]
        self_true = residual_contrast(image / t, image, core)["residual"]
        assert self_ours < self_true + 0.05, (self_ours, self_true)
        assert np.all(ours[ndimage.distance_transform_edt(~core) > 8] == 1.0)
