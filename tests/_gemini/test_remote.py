"""Smoke test against the real Gemini API (skipped unless ``--remote-data`` and a key are given).

Run with::

    GEMINI_API_KEY=... pytest tests/test_gemini_remote.py --remote-data=any

It costs a few image generations.  The answer is cached in a temporary
folder only.
"""

import os

import numpy as np
import pytest

from aiflat_astro.products import DustDetection, empty_catalog
from aiflat_astro.detection.gemini import GeminiDustDetector
from aiflat_astro.flat.estimators.gemini import inpaint_gemini
from aiflat_astro.dq import DustDQ


def _key_or_skip():
    if not (os.environ.get("GEMINI_API_KEY") or os.environ.get("GOOGLE_API_KEY")):
        pytest.skip("no GEMINI_API_KEY or GOOGLE_API_KEY in the environment")


def _frame():
    y, x = np.indices((384, 512), dtype=float)
    rng = np.random.default_rng(0)
    field = 2000 * (1 - 0.08 * (((y - 192) / 192) ** 2 + ((x - 256) / 256) ** 2))
    transmission = np.ones(y.shape)
    centres = [(100, 120, 14, 0.12), (260, 380, 22, 0.06), (300, 140, 9, 0.2)]
    for yc, xc, r, depth in centres:
        transmission *= 1 - depth * np.clip(r + 1 - np.hypot(y - yc, x - xc), 0, 2) / 2
    return (field * transmission + rng.normal(0, 4, y.shape)).astype(np.float32), centres


@pytest.mark.remote_data
def test_real_gemini_mask_and_inpaint(tmp_path):
    _key_or_skip()
    median, centres = _frame()
    detector = GeminiDustDetector(image_size="1K", cache_dir=tmp_path, timeout=600)
    detection = detector(median)
    assert detection.provenance["response_sha256"]
    found = 0
    for yc, xc, _, _ in centres:
        d = np.hypot(detection.catalog["x_centroid"] - xc, detection.catalog["y_centroid"] - yc)
        found += bool(len(d) and d.min() < 10)
    assert found >= 2, detection.catalog
    dq = np.zeros(median.shape, np.uint8)
    y, x = np.indices(median.shape)
    for yc, xc, r, _ in centres:
        dq[np.hypot(y - yc, x - xc) < r + 2] = DustDQ.DUST
    truth = DustDetection(dq=dq, weight=(dq > 0).astype(np.float32), catalog=empty_catalog()).expanded()
    clean, info = inpaint_gemini(median, truth, image_size="1K", cache_dir=tmp_path, timeout=600)
    flat = median / clean
    yc, xc, r, depth = centres[0]
    core = np.hypot(y - yc, x - xc) < r - 2
    assert abs(np.median(flat[core]) - (1 - depth)) < 0.03
