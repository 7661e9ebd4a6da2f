"""The night's shared mask and flat from each video's own evidence (aiflat_astro._nightflat)."""

import numpy as np
import pytest
from astropy.nddata import CCDData, StdDevUncertainty

from aiflat_astro._nightflat import combine_flats, merge_detections
from aiflat_astro.detection import DustDetection
from aiflat_astro.products import _catalog_from_rows
from aiflat_astro.dq import DustDQ

SHAPE = (80, 96)
Y, X = np.mgrid[:SHAPE[0], :SHAPE[1]]


def _disc(x, y, r):
    return np.hypot(X - x, Y - y) < r


def _detection(*spots):
    """A detection of round shadows ``(x, y, r)``: DUST inside, a 2-px halo, weight 1 on both."""
    from scipy import ndimage

    dq = np.zeros(SHAPE, np.uint8)
    rows = []
    for k, (x, y, r) in enumerate(spots, start=1):
        dust = _disc(x, y, r)
        halo = ndimage.binary_dilation(dust, iterations=2) & ~dust
        dq[dust] |= np.uint8(DustDQ.DUST)
        dq[halo] |= np.uint8(DustDQ.DUST_HALO)
        rows.append({"id": k, "x_centroid": float(x), "y_centroid": float(y), "area": float(dust.sum()),
                     "equivalent_diameter": 2.0 * r, "depth": 0.3, "confidence": 0.9, "review": False,
                     "method": "local"})
    weight = (dq > 0).astype(np.float32)
    return DustDetection(dq=dq, weight=weight, catalog=_catalog_from_rows(rows))


def _median(*dips, level=1000.0, rng=None):
    image = np.full(SHAPE, level)
    for x, y, r, depth in dips:
        image[_disc(x, y, r)] *= 1 - depth
    if rng is not None:
        image += rng.normal(0, 1.0, SHAPE)
    return image


class TestMergeDetections:
    def test_confirmed_kept_scene_rejected(self):
        """Dust that both videos show is kept; a dark spot of one video that the other lights and lacks is not."""
        rng = np.random.default_rng(1)
        a = _detection((20, 20, 4), (60, 50, 4))            # (60, 50): a sunspot of video a's scene
        b = _detection((20, 20, 4))
        med_a = _median((20, 20, 4, 0.3), (60, 50, 4, 0.4), rng=rng)
        med_b = _median((20, 20, 4, 0.3), rng=rng)
        merged, summary = merge_detections([a, b], [med_a, med_b])
        assert summary["found"] == [2, 1] and summary["kept"] == 1
        assert summary["rejected"] == [[0, 60.0, 50.0]]
        assert merged.dust_mask[20, 20] and not merged.dust_mask[50, 60]
        assert len(merged.catalog) == 1 and list(merged.catalog["id"]) == [1]

    def test_union_of_shadows_each_video_found(self):
        """A shadow only one video's detector found, that the other shows too, joins the shared mask."""
        rng = np.random.default_rng(2)
        a = _detection((20, 20, 4))
        b = _detection((70, 55, 5))
        dips = ((20, 20, 4, 0.25), (70, 55, 5, 0.2))
        merged, summary = merge_detections([a, b], [_median(*dips, rng=rng), _median(*dips, rng=rng)])
        assert summary["kept"] == 2 and not summary["rejected"]
        assert merged.dust_mask[20, 20] and merged.dust_mask[55, 70]
        # the halo bits come along
        assert (merged.dq[20, 25] & DustDQ.DUST_HALO) and merged.weight[20, 25] == 1.0

    def test_overlapping_shadows_one_row_and_unlit_others_do_not_vote(self):
        rng = np.random.default_rng(3)
        a = _detection((30, 30, 5))
        b = _detection((31, 30, 5))
        dark = _median(level=5.0, rng=rng)                 # sky: lights nothing
        merged, summary = merge_detections([a, b, _detection()],
                                           [_median((30, 30, 5, 0.3), rng=rng),
                                            _median((31, 30, 5, 0.3), rng=rng), dark])
        assert summary["kept"] == 1 and len(merged.catalog) == 1
        assert merged.dust_mask[30, 35]                    # the union of both outlines

    def test_bad_input(self):
        with pytest.raises(ValueError, match="one median a detection"):
            merge_detections([_detection()], [])


def _flat(data, *, unc=0.01, flags=None):
    return CCDData(data.astype(np.float32), unit="",
                   flags=np.zeros(SHAPE, np.uint8) if flags is None else flags,
                   uncertainty=StdDevUncertainty(np.full(SHAPE, unc, np.float32)))


class TestCombineFlats:
    def test_spoiled_video_weighs_little(self):
        truth = np.where(_disc(40, 40, 6), 0.7, 1.0)
        spoiled = np.where(_disc(40, 40, 6), 0.95, 1.0)    # its scene hid the shadow from its clean estimate
        flat, weights = combine_flats([_flat(truth), _flat(truth * 1.002 ** _disc(40, 40, 6)), _flat(spoiled)])
        inside = _disc(40, 40, 6)
        assert np.all(np.abs(flat.data[inside] - 0.7) < 0.003)
        assert weights[0][2] < 0.01 and flat.meta["NFLATS"][0] == 3
        assert np.all(flat.data[~inside] == 1.0)          # exactly 1.0 outside the dust

    def test_unlit_video_does_not_count_and_floor_flagged(self):
        inside = _disc(30, 60, 5)
        deep = np.where(inside, 0.05, 1.0)
        review = np.where(inside, DustDQ.REVIEW, 0).astype(np.uint8)
        unlit = np.where(inside, 0.5, 1.0)
        flat, weights = combine_flats([_flat(deep), _flat(unlit, flags=review)], floor=0.05)
        assert weights == [[1.0, 0.0]]
        assert np.all(flat.data[inside] == pytest.approx(0.05))
        assert np.all(flat.flags[inside] & DustDQ.LOW_TRANS)

    def test_weighted_by_measured_noise(self):
        inside = _disc(50, 30, 5)
        quiet = _flat(np.where(inside, 0.80, 1.0), unc=0.002)
        noisy = _flat(np.where(inside, 0.84, 1.0), unc=0.05)
        flat, weights = combine_flats([quiet, noisy])
        assert weights[0][0] > 0.8
        assert abs(float(flat.data[30, 50]) - 0.80) < 0.01

    def test_precise_video_decides_against_a_biased_middle_one(self):
        """Three videos: a precise one, one biased by its scene with a small σ (the middle value), a poor one.

        A plain median of three is the biased middle value and gave it the
        weight (held-out solar dust 61, a shadow at the limb: residual 0.80
        of the uncorrected, the precise video alone 0.01).
        """
        inside = _disc(40, 40, 5)
        precise = _flat(np.where(inside, 0.80, 1.0), unc=0.006)
        biased = _flat(np.where(inside, 0.90, 1.0), unc=0.012)
        poor = _flat(np.where(inside, 0.97, 1.0), unc=0.145)
        flat, weights = combine_flats([precise, biased, poor])
        assert weights[0][0] > 0.9
        assert abs(float(flat.data[40, 40]) - 0.80) < 0.01

    def test_one_precise_video_does_not_outvote_five_that_agree(self):
        """A speck cleaned off in one video (its flat 1.0 there, precisely): the five that show it decide."""
        inside = _disc(40, 40, 5)
        shown = [_flat(np.where(inside, 0.64 + 0.004 * k, 1.0), unc=0.02) for k in range(5)]
        cleaned = _flat(np.where(inside, 0.999, 1.0), unc=0.001)
        flat, weights = combine_flats(shown + [cleaned])
        assert weights[0][5] < 0.01
        assert abs(float(flat.data[40, 40]) - 0.648) < 0.01

    def test_review_flagged_video_votes_without_weight(self):
        """Two usable videos disagree; a third, flagged REVIEW there, tells which one its scene spoiled."""
        inside = _disc(40, 40, 5)
        review = np.where(inside, DustDQ.REVIEW, 0).astype(np.uint8)
        spoiled = _flat(np.where(inside, 0.10, 1.0))
        good = _flat(np.where(inside, 0.85, 1.0))
        third = _flat(np.where(inside, 0.86, 1.0), flags=review)
        flat, weights = combine_flats([spoiled, good, third])
        assert weights[0][0] < 0.01 and weights[0][2] == 0.0
        assert abs(float(flat.data[40, 40]) - 0.85) < 0.005
