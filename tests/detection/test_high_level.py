"""`detect_dust`'s options: `DetectOptions` or keywords, the detector's own options, the deprecated ``mask=``."""

import numpy as np
import pytest

from aiflat_astro.detection import detect_dust
from aiflat_astro.detection._high_level import DetectOptions
from aiflat_astro.utils.exceptions import AiflatDeprecationWarning, InputError


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(7)
    y, x = np.mgrid[:96, :128]
    dust = (1 - 0.25 * (np.hypot(y - 40, x - 30) < 6)) * (1 - 0.2 * (np.hypot(y - 60, x - 95) < 5))
    return (1000 * dust + rng.normal(0, 3, (96, 128))).astype(np.float32)


def test_options_object_equals_keywords(image):
    by_keyword = detect_dust(image, dilate=4, soft_edge=2.0, f_ratio=30, pixel_size=3.75)
    by_object = detect_dust(image, options=DetectOptions(dilate=4, soft_edge=2.0, f_ratio=30, pixel_size=3.75))
    np.testing.assert_array_equal(by_keyword.dq, by_object.dq)
    np.testing.assert_array_equal(by_keyword.weight, by_object.weight)
    assert by_object.provenance["params"]["FRATIO"] == 30.0
    # a keyword overrides the object; dilation widens the soft weight
    wider = detect_dust(image, options=DetectOptions(dilate=2), dilate=6)
    assert (wider.weight > 0).sum() > (detect_dust(image, dilate=2).weight > 0).sum()


def test_detector_options_pass_through(image):
    from aiflat_astro.utils.exceptions import NoDustDetectedWarning

    with pytest.warns(NoDustDetectedWarning):
        strict = detect_dust(image, threshold=1e4)  # the local detector's own option
    assert len(strict.catalog) == 0 < len(detect_dust(image).catalog)
    with pytest.raises(InputError, match="f_ratio"):
        detect_dust(image, options=DetectOptions(f_ratio=-2))
    with pytest.raises(InputError, match="options must be a DetectOptions"):
        detect_dust(image, options={"dilate": 3})


def test_mask_is_deprecated_for_ignore(image):
    ignore = np.zeros(image.shape, bool)
    ignore[:, :64] = True
    new = detect_dust(image, ignore=ignore)
    with pytest.warns(AiflatDeprecationWarning, match=r"detect_dust\(mask=\.\.\.\).*ignore") as record:
        old = detect_dust(image, mask=ignore)
    assert record[0].filename == __file__
    np.testing.assert_array_equal(new.dq, old.dq)
    assert not new.dust_mask[:, :50].any() and new.dust_mask[:, 64:].any()
    with pytest.raises(InputError, match="not both"):
        detect_dust(image, ignore=ignore, mask=ignore)
