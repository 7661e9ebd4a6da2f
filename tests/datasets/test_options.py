"""`KLLSetOptions` and `VideoOptions`: an options object gives what the keywords give."""

import numpy as np
import pytest

from aiflat_astro.datasets.kll import KLLSetOptions, make_kll_set
from aiflat_astro.datasets.simulate import VideoOptions, make_dusty_video
from aiflat_astro.utils.exceptions import InputError


def test_kll_set_options_equal_keywords():
    keywords = dict(shape=(64, 72), n_frames=4, max_offset=15, n_dust=1, transparency=0.05, seed=3)
    by_keyword = make_kll_set(**keywords)
    by_object = make_kll_set(options=KLLSetOptions(**keywords))
    np.testing.assert_array_equal(by_keyword.frames, by_object.frames)
    np.testing.assert_array_equal(by_keyword.levels, by_object.levels)
    # a keyword overrides the object
    other = make_kll_set(options=KLLSetOptions(**keywords), seed=4)
    assert not np.array_equal(other.frames, by_keyword.frames)
    with pytest.raises(InputError, match="unknown option"):
        make_kll_set(n_frame=4)


def test_video_options_equal_keywords(tmp_path):
    keywords = dict(shape=(48, 64), n_frames=3, n_dust=2, drift=2.0, seed=11)
    a = make_dusty_video(tmp_path / "a.ser", **keywords)
    b = make_dusty_video(tmp_path / "b.ser", options=VideoOptions(**keywords))
    assert (tmp_path / "a.ser").read_bytes() == (tmp_path / "b.ser").read_bytes()
    np.testing.assert_array_equal(a.transmission, b.transmission)
    control = make_dusty_video(None, options=VideoOptions(**keywords), dust_free=True)
    assert control.params["dust_free"] and (control.transmission == 1).all()
    np.testing.assert_array_equal(control.shifts, a.shifts)
    with pytest.raises(InputError, match="options must be a VideoOptions"):
        make_dusty_video(None, options=keywords)
    with pytest.raises(InputError, match="regime"):
        make_dusty_video(None, options=VideoOptions(regime="lunar"))
