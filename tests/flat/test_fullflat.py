"""The full flat (whole gain table) from shifted images: simulated KLL sets with the truth, xu2016."""

import numpy as np
import pytest
from astropy.io import fits
from scipy import ndimage

from aiflat_astro.datasets.kll import make_kll_set
from aiflat_astro.evaluate import flat_errors
from aiflat_astro.dq import DustDQ
from aiflat_astro.flat.fullflat import full_flat, make_full_flat, solve_gain
from aiflat_astro.utils.exceptions import InputError


@pytest.fixture(scope="module")
def small_set():
    return make_kll_set(shape=(256, 256), n_frames=9, max_offset=80, n_dust=4, scene_style="soft", seed=21)


@pytest.fixture(scope="module")
def small_solution(small_set):
    return solve_gain(small_set.frames, small_set.shifts)


class TestSolveGain:
    def test_gain_recovered_to_the_noise(self, small_set, small_solution):
        gain, err, cov, levels, info = small_solution
        cover = cov >= 4
        assert cover.mean() > 0.3
        _, rms_plane = flat_errors(gain, small_set.gain, cover)
        noise = float(np.sqrt(np.mean(err[cover] ** 2)))
        assert rms_plane < 2.0 * noise  # noise-limited, within a factor 2
        assert rms_plane < 0.004
        # normalised to a median of 1 over the pixels it constrains (>= min_frames=2 offsets)
        assert np.median(gain[cov >= 2]) == pytest.approx(1.0, abs=1e-6)
        assert np.median(gain[cover]) == pytest.approx(1.0, abs=5e-3)
        # the frame levels (transparency) are recovered
        assert np.abs(levels / small_set.levels - 1).max() < 0.01

    def test_dust_inside_the_flat(self, small_set, small_solution):
        gain, err, cov, levels, info = small_solution
        dust = (small_set.transmission < 0.97) & (cov >= 4)
        assert dust.sum() > 20
        # the measured depth of the shadows: ratio to the local smooth gain
        ratio = gain / small_set.gain
        local = ndimage.median_filter(ratio, 25)
        assert np.sqrt(np.mean((ratio / local - 1)[dust] ** 2)) < 0.005

    def test_uncertainty_is_honest(self, small_set, small_solution):
        gain, err, cov, levels, info = small_solution
        cover = cov >= 4
        ratio = gain / small_set.gain
        z = (ratio / ndimage.median_filter(ratio, 25) - 1)[cover] / err[cover]
        assert 0.6 < np.std(z) < 1.6

    @pytest.mark.slow
    def test_robust_to_a_flare(self, small_set):
        frames = small_set.frames.copy()
        yy, xx = np.mgrid[0:256, 0:256]
        flare = 0.3 * np.exp(-0.5 * ((yy - 128) ** 2 + (xx - 120) ** 2) / 6.0**2)
        frames[3] *= (1 + flare).astype(np.float32)  # a brightening in one frame only
        near = flare > 0.01
        errs = {}
        for robust in (True, False):
            gain, _, cov, _, _ = solve_gain(frames, small_set.shifts, robust=robust)
            ratio = gain / small_set.gain
            errs[robust] = float(np.abs(ratio / np.median(ratio) - 1)[near].max())
        assert errs[True] < 0.5 * errs[False]
        assert errs[True] < 0.01

    def test_bad_input(self, small_set):
        with pytest.raises(InputError, match="shifts"):
            solve_gain(small_set.frames, small_set.shifts[:3])
        with pytest.raises(InputError, match="frames"):
            solve_gain(small_set.frames[0], small_set.shifts)
        with pytest.raises(InputError, match="no usable samples"):
            solve_gain(np.zeros((3, 20, 20)), np.zeros((3, 2)))


@pytest.fixture(scope="module")
def flat(small_set):
    mask = small_set.dust_labels > 0
    return make_full_flat(np.median(small_set.frames, axis=0), small_set.frames, detection=mask)


class TestFullFlatProduct:
    @pytest.mark.slow
    def test_product(self, flat, small_set):
        assert flat.meta["FLATTYPE"] == "FULL"
        data = np.asarray(flat.data)
        assert np.mean(data != 1.0) > 0.3  # not 1.0 outside the dust
        un = (flat.flags & DustDQ.LOW_TRANS) > 0
        assert un.any() and np.all(data[un] == 1.0)
        assert np.all(flat.uncertainty.array[~un] > 0)
        assert np.all((flat.flags[small_set.dust_labels > 0] & DustDQ.DUST) > 0)

    @pytest.mark.slow
    def test_write_and_apply(self, flat, small_set, tmp_path):
        from aiflat_astro.apply import apply_flat, flat_boxes
        from aiflat_astro.io.fits import write_flat

        path = tmp_path / "flat.fits"
        write_flat(path, flat)
        with fits.open(path) as hdul:
            assert hdul[0].header["FLATTYPE"] == "FULL"
            assert "UNCERT" in hdul and "DQ" in hdul
        # apply's boxes cover every pixel where the full flat is not 1.0
        boxes = flat_boxes(flat.data)
        covered = np.zeros(flat.shape, bool)
        for b in boxes:
            covered[b] = True
        assert np.all(covered[np.asarray(flat.data) != 1.0])
        out = apply_flat(small_set.frames[0], str(path))
        np.testing.assert_allclose(out.data, small_set.frames[0] / flat.data, rtol=1e-6)

    @pytest.mark.slow
    def test_make_flat_hook(self, small_set):
        from aiflat_astro.flat import make_flat

        flat = make_flat(np.median(small_set.frames, axis=0), small_set.dust_labels > 0,
                         frames=small_set.frames, full=True)
        assert flat.meta["FLATTYPE"] == "FULL"

    def test_needs_frames(self, small_set):
        with pytest.raises(InputError, match="shifted frames"):
            make_full_flat(None, None)


@pytest.mark.slow
def test_cli_full_flat(small_set, tmp_path):
    from aiflat_astro.cli import main

    fits.writeto(tmp_path / "cube.fits", small_set.frames)
    fits.writeto(tmp_path / "median.fits", np.median(small_set.frames, axis=0).astype(np.float32))
    assert main(["detect", str(tmp_path / "median.fits"), "-o", str(tmp_path / "mask.fits")]) == 0
    assert main(["flat", str(tmp_path / "median.fits"), "--mask", str(tmp_path / "mask.fits"),
                 "-o", str(tmp_path / "flat.fits"), "--full-flat", "--video",
                 str(tmp_path / "cube.fits"), "--drift-plot", str(tmp_path / "drift.png")]) == 0
    assert fits.getheader(tmp_path / "flat.fits")["FLATTYPE"] == "FULL"
    assert (tmp_path / "drift.png").stat().st_size > 0
    assert main(["flat", str(tmp_path / "median.fits"), "--mask", str(tmp_path / "mask.fits"),
                 "-o", str(tmp_path / "f2.fits"), "--full-flat"]) != 0


@pytest.mark.slow
def test_sixteen_frames_large_offsets():
    """16 frames, offsets 5-200 px on a 512 px sensor: registration and solve from the frames alone."""
    s = make_kll_set(shape=(512, 512), n_frames=16, max_offset=200, seed=5)
    ff = full_flat(s.frames)
    cover = ff.coverage >= 4
    _, rms_plane = flat_errors(ff.gain, s.gain, cover)
    assert rms_plane < 0.002
    assert ff.params["n_frames_used"] == 16


@pytest.fixture(scope="module")
def solved(xu2016):
    return full_flat(xu2016.frames)


@pytest.mark.slow
class TestXu2016FullFlat:
    def test_structure_matches_the_paper_flat(self, solved, xu2016):
        """Band-passed (3..30 px) log-flats correlate on the disc-covered area.

        The paper's flat is an 8-bit JPEG without pixel-scale structure (its
        JPEG blocks and smoothing), so scales below ~3 px are left out.
        """
        paper = np.maximum(xu2016.paper_flat.astype(np.float64), 1.0)
        ours = solved.gain.astype(np.float64)
        area = ndimage.binary_erosion(solved.coverage >= 4, iterations=20) & (paper > 20)
        assert area.mean() > 0.3

        def bandpass(img):
            base = np.where(area, np.log(img), np.median(np.log(img[area])))
            return ndimage.gaussian_filter(base, 3) - ndimage.gaussian_filter(base, 30)

        c = np.corrcoef(bandpass(ours)[area], bandpass(paper)[area])[0, 1]
        assert c > 0.6

    def test_spot_depths_in_the_same_order(self, solved, xu2016):
        """The three spots' dips (local level - minimum, 2 px smoothing) rank alike.

        The paper flat's scale is undocumented (an affine map to 8 bits):
        absolute dips keep their order under it, relative depths do not.
        """
        def dips(img):
            out = []
            for y, x in xu2016.spots.astype(int):
                sm = ndimage.gaussian_filter(img[y - 60:y + 61, x - 60:x + 61], 2)
                out.append(np.median(sm) - sm[50:71, 50:71].min())
            return np.array(out)

        ours = dips(solved.gain.astype(np.float64))
        theirs = dips(xu2016.paper_flat.astype(np.float64))
        assert np.all(ours > 0.05)  # each spot at least 5 % deep in our flat
        assert list(np.argsort(ours)) == list(np.argsort(theirs))


def test_flat_errors_plane_and_bad_input():
    yy, xx = np.mgrid[0:40, 0:50]
    truth = 1 - 0.2 * (np.hypot(yy - 20, xx - 25) < 5)
    cover = np.ones(truth.shape, bool)
    tilted = 3.0 * truth * np.exp(2e-3 * yy - 1e-3 * xx)     # another level and a plane
    rms, rms_plane = flat_errors(tilted, truth, cover)
    assert rms > 0.01 and rms_plane < 1e-12
    rms, rms_plane = flat_errors(np.ones(truth.shape), truth, cover)   # the dust missed
    assert rms_plane > 0.03
    with pytest.raises(InputError, match="one shape"):
        flat_errors(truth[:-1], truth, cover)
    with pytest.raises(InputError, match="positive and finite"):
        flat_errors(truth - 1, truth, cover)


@pytest.fixture(scope="module")
def tiny():
    return make_kll_set(shape=(64, 64), n_frames=5, max_offset=20, n_dust=2, scene_style="soft", seed=5)


class TestOptions:
    """`FullFlatOptions` and the keywords of `solve_gain` / `full_flat` give the same result."""

    def test_options_object_equals_keywords(self, tiny):
        from aiflat_astro.flat.fullflat import FullFlatOptions

        by_keyword = solve_gain(tiny.frames, tiny.shifts, robust=False, n_iter=20)
        by_object = solve_gain(tiny.frames, tiny.shifts, options=FullFlatOptions(robust=False, n_iter=20))
        np.testing.assert_array_equal(by_keyword[0], by_object[0])
        # a keyword overrides the object
        mixed = solve_gain(tiny.frames, tiny.shifts, options=FullFlatOptions(robust=True, n_iter=20), robust=False)
        np.testing.assert_array_equal(by_keyword[0], mixed[0])
        assert by_keyword[4]["iterations"] <= 40

    def test_full_flat_options(self, tiny):
        from aiflat_astro.flat.fullflat import FullFlatOptions

        a = full_flat(tiny.frames, robust=False, max_frames=4)
        b = full_flat(tiny.frames, options=FullFlatOptions(robust=False, max_frames=4))
        np.testing.assert_array_equal(a.gain, b.gain)
        assert a.params["n_frames_used"] == 4 and a.params["robust"] == "none"

    def test_unknown_and_bad_options(self, tiny):
        with pytest.raises(InputError, match="unknown option"):
            solve_gain(tiny.frames, tiny.shifts, max_frames=3)  # a full_flat option, not the solver's
        with pytest.raises(InputError, match="unknown option"):
            full_flat(tiny.frames, n_frames=3)
        with pytest.raises(InputError, match="max_frames"):
            full_flat(tiny.frames, max_frames=1)
        with pytest.raises(InputError, match="options must be"):
            full_flat(tiny.frames, options={"robust": False})

    def test_valid_is_deprecated_for_ignore(self, tiny):
        from aiflat_astro.utils.exceptions import AiflatDeprecationWarning

        keep = np.ones(tiny.frames.shape[1:], bool)
        keep[:, :8] = False
        new = solve_gain(tiny.frames, tiny.shifts, ignore=~keep, robust=False, n_iter=20)
        with pytest.warns(AiflatDeprecationWarning, match=r"valid=.*ignore=~valid") as record:
            old = solve_gain(tiny.frames, tiny.shifts, valid=keep, robust=False, n_iter=20)
        assert record[0].filename == __file__  # stacklevel at the caller
        np.testing.assert_array_equal(new[0], old[0])
        assert (new[2][:, :8] == 0).all()
        with pytest.raises(InputError, match="not both"):
            solve_gain(tiny.frames, tiny.shifts, ignore=~keep, valid=keep)


def test_make_full_flat_dust_mask_is_deprecated(tiny):
    from aiflat_astro.utils.exceptions import AiflatDeprecationWarning

    mask = tiny.transmission < 0.97
    median = np.median(tiny.frames, axis=0)
    new = make_full_flat(median, tiny.frames, detection=mask, robust=False)
    with pytest.warns(AiflatDeprecationWarning, match=r"make_full_flat\(dust_mask="):
        old = make_full_flat(median, tiny.frames, dust_mask=mask, robust=False)
    np.testing.assert_array_equal(new.data, old.data)
    np.testing.assert_array_equal(new.flags, old.flags)
    assert ((new.flags & DustDQ.DUST) > 0).sum() == mask.sum()
