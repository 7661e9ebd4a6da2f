"""Package-level behaviour: lazy public names, fast CLI start-up."""

import importlib
import subprocess
import sys

import aiflat_astro


def test_lazy_table_matches_module_all():
    for module, names in aiflat_astro._LAZY.items():
        mod = importlib.import_module(f"aiflat_astro.{module}")
        assert list(names) == list(mod.__all__), f"update aiflat_astro._LAZY[{module!r}]"


def test_every_public_name_resolves():
    for name in aiflat_astro.__all__:
        assert getattr(aiflat_astro, name) is not None
    namespace = {}
    exec("from aiflat_astro import *", namespace)
    assert {"median_combine", "make_flat", "detect_dust", "apply_flat", "read_ser"} <= set(namespace)


def test_builtin_names_match_registries():
    from aiflat_astro._constants import BUILTIN_DETECTORS, BUILTIN_INPAINTERS
    from aiflat_astro.detection import available_detectors
    from aiflat_astro.flat.estimators.registry import available_inpainters

    assert set(BUILTIN_DETECTORS) <= set(available_detectors())
    assert set(BUILTIN_INPAINTERS) <= set(available_inpainters())


def test_cli_start_does_not_import_heavy_subpackages():
    code = ("import sys, aiflat_astro.cli as c; c._build_parser(); "
            "print(sorted(m for m in ('scipy.signal', 'matplotlib', 'google.genai', 'skimage', "
            "'aiflat_astro.detection', 'aiflat_astro.registration', 'aiflat_astro.flat.estimators', "
            "'aiflat_astro.datasets', 'aiflat_astro.flat', 'aiflat_astro.pipeline') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_mask_io_does_not_load_the_detectors(tmp_path):
    """mask.fits is read and written through the data model (products) alone."""
    code = ("import sys, numpy as np; from aiflat_astro.io.fits import read_mask, write_mask; "
            "from aiflat_astro.products import DustDetection, empty_catalog; "
            "dq = np.zeros((32, 32), np.uint8); dq[4:8, 4:8] = 1; "
            f"p = {str(tmp_path / 'mask.fits')!r}; "
            "write_mask(p, DustDetection(dq=dq, weight=(dq > 0).astype(np.float32), catalog=empty_catalog())); "
            "d = read_mask(p); assert (d.dq == dq).all() and len(d.catalog) == 0; "
            "print(sorted(m for m in sys.modules if m.startswith('aiflat_astro.detection')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
