"""The command line with Gemini: ``aiflat detect/flat/run`` against a local fake server."""

import json

import pytest
from astropy.io import fits

from aiflat_astro.cli import main
from aiflat_astro.datasets import make_dusty_video
from aiflat_astro._gemini.fake_server import FakeGeminiServer, dark_pixel_mask, echo
from aiflat_astro.dq import DustDQ

KEY = "AIzaSy-TEST-cli-secret-987654"


def responder(request):
    """Masks for one-image requests (detection), the image back for two-image ones (inpainting)."""
    return echo(request) if len(request.images) == 2 else dark_pixel_mask(0.35)(request)


@pytest.fixture(autouse=True)
def clean_env(offline_gemini, monkeypatch):
    monkeypatch.setenv("GEMINI_API_KEY", KEY)


@pytest.fixture
def server():
    with FakeGeminiServer(responder) as fake:
        yield fake


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    path = tmp_path_factory.mktemp("video") / "sun.ser"
    make_dusty_video(path, shape=(96, 128), n_frames=12, regime="solar-soft", n_dust=4, seed=5, limb=False)
    return path


@pytest.fixture
def products(tmp_path, video):
    """median.fits and a (local) mask.fits made by the pipeline."""
    assert main(["run", str(video), "-o", str(tmp_path / "local"), "--no-apply"]) == 0
    return tmp_path / "local" / "median.fits", tmp_path / "local" / "mask.fits"


def assert_no_key(tmp_path, *texts):
    for text in texts:
        assert KEY not in text
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path


def test_flat_inpaint_gemini(tmp_path, server, products, capsys):
    median, mask = products
    out = tmp_path / "flat.fits"
    assert main(["flat", str(median), "--mask", str(mask), "-o", str(out), "--inpaint", "gemini",
                 "--gemini-base-url", server.url, "--gemini-image-size", "1K"]) == 0
    stdout, stderr = capsys.readouterr()
    assert len(server.requests) == 1 and len(server.requests[0].images) == 2
    assert server.requests[0].image_size == "1K"
    with fits.open(out) as hdul:
        header = hdul[0].header
        assert header["INPAINT"] == "gemini"
        assert header["AIMODEL"] == "gemini-3-pro-image-preview"
        assert len(header["PRMTSHA"]) == 64 and len(header["RESPSHA"]) == 64
        dq = hdul["DQ"].data
        weight_region = (dq & (DustDQ.DUST | DustDQ.DUST_HALO)) > 0
        assert ((dq & DustDQ.GENERATED) > 0)[weight_region].all()
        prov = json.loads(bytes(hdul["PROVJSON"].data).decode())
        assert prov["inpaint_info"]["gemini"]["requests"][0]["response_id"] == "fake-response"
    assert_no_key(tmp_path, stdout, stderr)


def test_flat_uses_sdk_base_url_variable(tmp_path, server, products, monkeypatch):
    median, mask = products
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", server.url)
    assert main(["flat", str(median), "--mask", str(mask), "-o", str(tmp_path / "flat.fits"),
                 "--inpaint", "gemini", "--gemini-image-size", "1K"]) == 0
    assert len(server.requests) == 1


def test_flat_missing_key(tmp_path, server, products, monkeypatch, capsys):
    median, mask = products
    monkeypatch.delenv("GEMINI_API_KEY")
    assert main(["flat", str(median), "--mask", str(mask), "-o", str(tmp_path / "flat.fits"),
                 "--inpaint", "gemini", "--gemini-base-url", server.url]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("aiflat flat: error: no Gemini API key") and "GEMINI_API_KEY" in err
    assert "\n" not in err
    assert server.requests == [] and not (tmp_path / "flat.fits").exists()


def test_flat_server_error_is_one_line(tmp_path, server, products, capsys):
    median, mask = products
    from aiflat_astro._gemini.fake_server import error_reply

    server.queue(error_reply(503))
    code = main(["flat", str(median), "--mask", str(mask), "-o", str(tmp_path / "flat.fits"), "--inpaint",
                 "gemini", "--gemini-base-url", server.url, "--gemini-retries", "1", "--gemini-timeout", "20"])
    stdout, stderr = capsys.readouterr()
    assert code == 1 and len(server.requests) == 1
    assert stderr.strip() == ("aiflat flat: error: Gemini API error 503 UNAVAILABLE: fake unavailable error "
                              "(server error; retry later)")
    assert not (tmp_path / "flat.fits").exists()
    assert_no_key(tmp_path, stdout, stderr)


@pytest.mark.slow
def test_run_with_gemini_detector_and_inpainting(tmp_path, server, video, capsys):
    out = tmp_path / "gem"
    args = ["run", str(video), "-o", str(out), "--detector", "gemini", "--inpaint", "gemini",
            "--gemini-base-url", server.url, "--gemini-image-size", "1K"]
    assert main(args) == 0
    n_requests = len(server.requests)
    assert n_requests == 2  # one mask, one inpainting
    with fits.open(out / "mask.fits") as hdul:
        assert hdul[0].header["DETECTOR"] == "gemini"
        assert hdul[0].header["AIMODEL"] == "gemini-3-pro-image-preview"
    with fits.open(out / "flat.fits") as hdul:
        assert hdul[0].header["INPAINT"] == "gemini"
    assert (out / "sun_aiflat.ser").exists()
    # a rerun reuses every product: no request at all
    assert main(args) == 0
    assert len(server.requests) == n_requests
    stdout, stderr = capsys.readouterr()
    assert "reused: median, mask, flat, apply" in stdout
    assert_no_key(tmp_path, stdout, stderr)


def test_run_with_consensus(tmp_path, server, video, capsys):
    out = tmp_path / "cons"
    assert main(["run", str(video), "-o", str(out), "--detector", "consensus", "--no-apply",
                 "--gemini-base-url", server.url, "--gemini-image-size", "1K", "--disputed", "review"]) == 0
    from astropy.table import Table

    catalog = Table.read(out / "dust.ecsv")
    assert "source" in catalog.colnames
    assert set(catalog["source"]) <= {"both", "local", "gemini"}
    assert list(catalog["review"]) == [s != "both" for s in catalog["source"]]
    with fits.open(out / "mask.fits") as hdul:
        assert hdul[0].header["DETECTOR"] == "consensus"
        dq = hdul[0].data
    if (catalog["source"] != "both").any():
        assert ((dq & DustDQ.REVIEW) > 0).any()


@pytest.mark.parametrize("detector", ["gemini", "consensus"])
def test_detect_command(tmp_path, server, products, detector, capsys):
    pytest.importorskip("aiflat_astro._commands.detect")
    median, _ = products
    out = tmp_path / f"{detector}.fits"
    assert main(["detect", str(median), "-o", str(out), "--detector", detector,
                 "--gemini-base-url", server.url, "--gemini-image-size", "1K"]) == 0
    assert len(server.requests) == 1
    with fits.open(out) as hdul:
        assert hdul[0].header["DETECTOR"] == detector
        assert hdul[0].header["AIMODEL"] == "gemini-3-pro-image-preview"
    stdout, stderr = capsys.readouterr()
    assert_no_key(tmp_path, stdout, stderr)
