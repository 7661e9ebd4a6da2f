"""Flat error added by the Gemini inpainting round trip (8-bit encoding, resizing).

A local fake generateContent server (driven through the real google-genai SDK)
answers every inpainting request with the TRUE dust-free image of a simulated
video, encoded exactly like a model answer: background-normalised with
aiflat's own stretch, resized to the model's output size (bilinear, as an
image model renders at its own resolution), quantised to an 8-bit PNG.  The
flat made from that answer would be perfect without the round trip, so

    error = flat - T      (T: true transmission, on the pixels with weight > 0)

is what the round trip adds.  To separate it from what the flat cannot
represent whatever the clean estimate (the soft edge of the weight, bright
diffraction rims outside the mask, unlit sky), each flat is compared with the
flat `make_flat` builds from the exact true clean image (an "oracle"
inpainter): ``added = flat(gemini) - flat(oracle)``.  Two transmission models
are reported: ``profile='none'`` (plain ratio median / clean) and the default
``profile='radial'``.  For comparison, the seed's encoding (median scaled by
its maximum to 8 bits, resized, no stretch) is measured the same way.

Usage::

    python benchmarks/bench_gemini_roundtrip.py [--seeds 3] [--image-size 1K]
"""

import argparse
import warnings

import numpy as np

from aiflat_astro.datasets import make_dusty_video
from aiflat_astro.detection._base import DustDetection, empty_catalog
from aiflat_astro._gemini.fake_server import FakeGeminiServer
from aiflat_astro.flat.estimators.gemini import clean_image_responder
from aiflat_astro._gemini.render import resample
from aiflat_astro.dq import DustDQ
from aiflat_astro.flat import make_flat
from aiflat_astro.flat.estimators.registry import register_inpainter

KEY = "benchmark-key"


def detection_from_truth(labels):
    dq = (labels > 0).astype(np.uint8) * np.uint8(DustDQ.DUST)
    return DustDetection(dq=dq, weight=dq.astype(np.float32), catalog=empty_catalog(), detector="truth").expanded()


def seed_encoding_answer(clean, out_shape):
    """The seed's round trip: 8-bit scaled by the maximum, resized to the output and back."""
    scale = float(clean.max())
    answer = np.rint(np.clip(resample(clean / scale, out_shape), 0, 1) * 255) / 255
    return resample(answer, clean.shape) * scale


def flat_with(name, median, detection, profile, options=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return make_flat(median, detection, inpaint=name, profile=profile, inpaint_options=options)


def stats(error):
    error = error[np.isfinite(error)]
    return float(np.sqrt(np.mean(error ** 2))), float(np.percentile(np.abs(error), 99)), float(np.abs(error).max())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--image-size", default="1K")
    parser.add_argument("--shape", type=int, nargs=2, default=(256, 320))
    args = parser.parse_args(argv)
    options = {"image_size": args.image_size, "retries": 1}
    print(f"{'regime':8} {'seed':>4} {'half-width':>10} {'step':>9} | {'none rms':>9} {'p99':>9} {'max':>9} | "
          f"{'radial rms':>10} {'p99':>9} | {'seed-enc rms':>12} | {'vs truth':>9}")
    for regime in ("deepsky", "solar"):
        rows = []
        for seed in range(args.seeds):
            truth = make_dusty_video(None, shape=tuple(args.shape), n_frames=2, regime=regime, seed=seed)
            clean = (truth.scene * truth.vignetting * 3000).astype(np.float64)
            median = (clean * truth.transmission).astype(np.float32)
            detection = detection_from_truth(truth.labels)
            region = detection.weight > 0
            responder, stretch = clean_image_responder(median, detection, clean, api_key=KEY, **options)
            results = {}
            with FakeGeminiServer(responder) as server:
                options_here = {"api_key": KEY, "base_url": server.url, "cache": False, **options}
                for profile in ("none", "radial"):
                    register_inpainter("oracle", lambda m, d, frames=None, c=clean: c, overwrite=True)
                    oracle = flat_with("oracle", median, detection, profile)
                    flat = flat_with("gemini", median, detection, profile, options_here)
                    good = region & ((np.asarray(oracle.flags) & (DustDQ.LOW_TRANS | DustDQ.REVIEW)) == 0)
                    results[profile] = stats((flat.data - oracle.data)[good])
                    if profile == "none":
                        total = stats((flat.data - truth.transmission)[good])
                        seed_clean = seed_encoding_answer(clean, server.requests[0].output_shape)
                        register_inpainter("oracle", lambda m, d, frames=None, c=seed_clean: c,
                                           overwrite=True)
                        seed_err = stats((flat_with("oracle", median, detection, profile).data - oracle.data)[good])
            rows.append((results["none"], results["radial"], seed_err))
            print(f"{regime:8} {seed:4d} {stretch.hi - 1:10.4f} {stretch.step:9.2e} | "
                  f"{results['none'][0]:9.2e} {results['none'][1]:9.2e} {results['none'][2]:9.2e} | "
                  f"{results['radial'][0]:10.2e} {results['radial'][1]:9.2e} | {seed_err[0]:12.2e} | "
                  f"{total[0]:9.2e}")
        mean = np.mean([[r[0][0], r[1][0], r[2][0]] for r in rows], axis=0)
        print(f"{regime:8} mean rms: none {mean[0]:.2e}, radial {mean[1]:.2e}, seed encoding {mean[2]:.2e}")


if __name__ == "__main__":
    main()
