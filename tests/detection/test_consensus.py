"""The consensus detector: agreed shadows are DUST, disputed ones REVIEW, listed with their source."""

import numpy as np
import pytest

from aiflat_astro.detection import DustDetection, catalog_from_mask, detect_dust
from aiflat_astro._gemini.fake_server import FakeGeminiServer, lookup_responder
from aiflat_astro._gemini.render import place, plan_requests
from aiflat_astro.detection.consensus import ConsensusDetector, combine_detections
from aiflat_astro.detection.gemini import GeminiDustDetector
from aiflat_astro.dq import DustDQ
from aiflat_astro.utils.exceptions import AiflatDeprecationWarning, InputError

KEY = "AIzaSy-TEST-consensus-key"
FAST = {"retries": 2, "initial_delay": 0.001, "max_delay": 0.002, "timeout": 30, "image_size": "1K"}


pytestmark = pytest.mark.usefixtures("offline_gemini")


def disc(shape, yc, xc, r):
    y, x = np.indices(shape)
    return np.hypot(y - yc, x - xc) < r


def as_detection(mask, name, confidence=0.9):
    dq = mask.astype(np.uint8) * np.uint8(DustDQ.DUST)
    from scipy import ndimage

    labels, n = ndimage.label(mask)
    rows = []
    for k, (cy, cx) in enumerate(ndimage.center_of_mass(mask, labels, range(1, n + 1)), start=1):
        rows.append({"id": k, "x_centroid": cx, "y_centroid": cy, "confidence": confidence})
    from aiflat_astro.products import _catalog_from_rows

    return DustDetection(dq=dq, weight=mask.astype(np.float32), catalog=_catalog_from_rows(rows), detector=name,
                         provenance={"detector": name, "ai_model": "m" if name == "gemini" else None},
                         labels=labels)


@pytest.fixture
def scene():
    shape = (96, 128)
    median = np.full(shape, 1000.0)
    a = disc(shape, 20, 20, 5)          # both
    b = disc(shape, 60, 90, 6)          # local only
    c = disc(shape, 30, 100, 4)         # gemini only
    median[a | b | c] *= 0.9
    local = a.copy()
    local[disc(shape, 21, 21, 4)] = True  # slightly different outline of the same shadow
    local |= b
    gemini = a | c
    return median, as_detection(local, "local"), as_detection(gemini, "gemini"), (a, b, c)


def test_sources_and_bits(scene):
    median, local, gemini, (a, b, c) = scene
    result = combine_detections(median, local, gemini)
    cat = result.catalog
    assert sorted(cat["source"]) == ["both", "gemini", "local"]
    assert list(cat["review"]) == [s != "both" for s in cat["source"]]
    dust = (result.dq & DustDQ.DUST) > 0
    review = (result.dq & DustDQ.REVIEW) > 0
    assert dust[a].all() and not review[a].any()
    assert review[b].all() and review[c].all()
    assert not dust[b].any() and not dust[c].any()  # disputed shadows are not corrected by default
    assert result.weight[b].max() == 0 and result.weight[a].min() == 1
    assert result.provenance["params"]["NAGREE"] == 1
    assert result.provenance["params"]["NLOCAL"] == 1 and result.provenance["params"]["NGEMINI"] == 1
    assert result.provenance["ai_model"] == "m"
    # every row sits on its own shadow, with an id matching the labels
    for row in cat:
        assert result.labels[int(round(row["y_centroid"])), int(round(row["x_centroid"]))] == row["id"]


def test_disputed_included(scene):
    median, local, gemini, (a, b, c) = scene
    result = combine_detections(median, local, gemini, disputed="include")
    dust = (result.dq & DustDQ.DUST) > 0
    review = (result.dq & DustDQ.REVIEW) > 0
    assert dust[a | b | c].all() and review[b | c].all() and not review[a].any()
    with pytest.raises(InputError, match="disputed"):
        combine_detections(median, local, gemini, disputed="maybe")


def test_nothing_found(scene):
    median = scene[0]
    empty = as_detection(np.zeros(median.shape, bool), "local")
    result = combine_detections(median, empty, as_detection(np.zeros(median.shape, bool), "gemini"))
    assert len(result.catalog) == 0 and not result.dq.any()
    assert "source" in result.catalog.colnames


def test_consensus_detector_with_fake_gemini(tmp_path):
    """Gemini sees one shadow the local detector misses and misses one it finds."""
    shape = (160, 200)
    y, x = np.indices(shape, dtype=float)
    median = 1000 * (1 - 0.05 * (((y - 80) / 80) ** 2 + ((x - 100) / 100) ** 2))
    strong1, strong2 = disc(shape, 40, 50, 7), disc(shape, 110, 150, 6)
    median = median * np.where(strong1 | strong2, 0.85, 1.0)
    fake_only = disc(shape, 120, 40, 5)  # nothing there in the data: a hallucination
    answer_mask = strong1 | fake_only    # Gemini misses strong2
    gemini = GeminiDustDetector(api_key=KEY, **FAST)
    sent = gemini.render(median)[0]
    (request,) = plan_requests(shape, image_size="1K")
    with FakeGeminiServer(lookup_responder({place(sent, request, 128).tobytes():
                                            place(answer_mask.astype(float), request, 0.0)})) as server:
        detector = ConsensusDetector(api_key=KEY, base_url=server.url, **FAST)
        result = detector(median)

    def source_at(xc, yc):
        d = np.hypot(result.catalog["x_centroid"] - xc, result.catalog["y_centroid"] - yc)
        assert d.min() < 1
        return str(result.catalog["source"][np.argmin(d)]), bool(result.catalog["review"][np.argmin(d)])

    assert source_at(50, 40) == ("both", False)
    assert source_at(150, 110) == ("local", True)
    assert source_at(40, 120) == ("gemini", True)
    dq = result.dq
    assert ((dq & DustDQ.DUST) > 0)[strong1].all()
    assert not ((dq & DustDQ.DUST) > 0)[strong2 | fake_only].any()
    assert ((dq & DustDQ.REVIEW) > 0)[fake_only].all()
    assert result.detector == "consensus"
    assert result.provenance["detector"] == "consensus"
    assert result.provenance["consensus"]["gemini"]["detector"] == "gemini"


def test_registry_and_detect_dust(tmp_path):
    """detect_dust(detector='consensus') builds the detector from options, like the CLI."""
    shape = (128, 160)
    median = 1000 * np.where(disc(shape, 64, 80, 7), 0.85, 1.0)
    gemini = GeminiDustDetector(api_key=KEY, **FAST)
    sent = gemini.render(median)[0]
    (request,) = plan_requests(shape, image_size="1K")
    answer = place(disc(shape, 64, 80, 7).astype(float), request, 0.0)
    with FakeGeminiServer(lookup_responder({place(sent, request, 128).tobytes(): answer})) as server:
        result = detect_dust(median, detector="consensus", api_key=KEY, base_url=server.url, **FAST)
        gem = detect_dust(median, detector="gemini", api_key=KEY, base_url=server.url, **FAST)
    assert list(result.catalog["source"]) == ["both"]
    assert result.provenance["detector"] == "consensus" and gem.provenance["detector"] == "gemini"
    assert len(server.requests) == 1  # the second call came from the cache


def test_options_conflict():
    with pytest.raises(InputError, match="either"):
        ConsensusDetector(gemini=GeminiDustDetector(api_key=KEY), model="x")


def test_review_workflow_include_then_exclude(tmp_path):
    """The documented loop: accept the disputed shadows, then drop the false ones with regions."""
    shape = (160, 200)
    median = 1000 * np.where(disc(shape, 40, 50, 7) | disc(shape, 110, 150, 6), 0.85, 1.0)
    answer_mask = disc(shape, 40, 50, 7) | disc(shape, 120, 40, 5)  # misses one, invents one
    gemini = GeminiDustDetector(api_key=KEY, **FAST)
    sent = gemini.render(median)[0]
    (request,) = plan_requests(shape, image_size="1K")
    regions = tmp_path / "false.reg"
    regions.write_text("# Region file format: DS9\nimage\ncircle(41,121,8)\n")  # 1-based x, y
    table = {place(sent, request, 128).tobytes(): place(answer_mask.astype(float), request, 0.0)}
    with FakeGeminiServer(lookup_responder(table)) as server:
        result = detect_dust(median, detector="consensus", disputed="include", api_key=KEY,
                             base_url=server.url, exclude_regions=regions, **FAST)
    dust = (result.dq & DustDQ.DUST) > 0
    review = (result.dq & DustDQ.REVIEW) > 0
    assert dust[disc(shape, 40, 50, 7)].all() and not review[disc(shape, 40, 50, 7)].any()
    assert dust[disc(shape, 110, 150, 6)].all() and review[disc(shape, 110, 150, 6)].all()
    assert not dust[disc(shape, 120, 40, 5)].any() and not review[disc(shape, 120, 40, 5)].any()
    assert sorted(result.catalog["source"]) == ["both", "local"]


def test_mask_is_deprecated_for_ignore():
    """``ConsensusDetector(mask=)`` warns, and both detectors get the pixels as ``ignore``."""
    shape = (64, 80)
    median = np.full(shape, 1000.0)
    median[20:26, 30:36] = 850
    seen = []

    class Recorder:
        name = "recorder"

        def __call__(self, data, *, frames=None, ignore=None, f_ratio=None, pixel_size=None):
            seen.append(ignore)
            dq = np.where(data < 900, DustDQ.DUST, 0).astype(np.uint8) * ~ignore
            return DustDetection(dq=dq, weight=(dq > 0).astype(np.float32), catalog=catalog_from_mask(dq),
                                 detector=self.name)

    ignore = np.zeros(shape, bool)
    ignore[:, 33:] = True
    detector = ConsensusDetector(local=Recorder(), gemini=Recorder())
    new = detector(median, ignore=ignore)
    with pytest.warns(AiflatDeprecationWarning, match=r"ConsensusDetector\(mask=\.\.\.\).*ignore") as record:
        old = detector(median, mask=ignore)
    assert record[0].filename == __file__
    assert len(seen) == 4 and all(s is ignore for s in seen)
    np.testing.assert_array_equal(new.dq, old.dq)
    assert new.dust_mask[20:26, 30:33].all() and not new.dust_mask[:, 33:].any()
    with pytest.raises(InputError, match="not both"):
        detector(median, ignore=ignore, mask=ignore)


def test_a_local_detector_of_the_old_protocol():
    """A detector of one's own taking ``mask=`` (not ``ignore=``) still works as the consensus' local eye."""
    shape = (64, 80)
    median = np.full(shape, 1000.0)
    median[20:26, 30:36] = 850
    got = {}

    class Old:
        name = "old"

        def __call__(self, data, *, frames=None, mask=None, f_ratio=None, pixel_size=None):
            got[self.name] = mask
            return self.dark(data)

        def dark(self, data):
            dq = np.where(data < 900, DustDQ.DUST, 0).astype(np.uint8)
            return DustDetection(dq=dq, weight=(dq > 0).astype(np.float32), catalog=catalog_from_mask(dq),
                                 detector=self.name)

    class New(Old):
        name = "new"

        def __call__(self, data, *, frames=None, ignore=None, f_ratio=None, pixel_size=None):
            got[self.name] = ignore
            return self.dark(data)

    ignore = np.zeros(shape, bool)
    with pytest.warns(AiflatDeprecationWarning, match="'old' takes mask=") as record:
        result = ConsensusDetector(local=Old(), gemini=New())(median, ignore=ignore)
    assert record[0].filename == __file__
    assert got["old"] is ignore and got["new"] is ignore and result.dust_mask[20:26, 30:36].all()
