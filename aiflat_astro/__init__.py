"""aiflat_astro: synthetic dust flats for astropy and ccdproc reductions.

An eye (a local detector or Google Gemini) locates sensor dust shadows in the
temporal median of a video or image stack; deterministic math sets the pixel
values of a synthetic flat that is exactly 1.0 outside the dust, written as
FITS with full provenance and applied with `ccdproc.flat_correct`.

Exceptions, DQ bits and I/O (which registers the ``'ser'`` format with
astropy's I/O registry) are imported eagerly; the heavier subpackages are
imported on first use of one of their names (PEP 562), so that the ``aiflat``
command starts fast.  ``from aiflat_astro import *`` sees every public name.
"""

import importlib

try:
    from ._version import version as __version__
except ImportError:  # pragma: no cover - only without setuptools_scm metadata
    __version__ = ""

from .utils.exceptions import *  # noqa: F401,F403
from .dq import *  # noqa: F401,F403
from .io import *  # noqa: F401,F403
from .utils import exceptions as _exceptions
from . import dq as _dq, io as _io

#: Public names of the lazily imported subpackages (each module's ``__all__``;
#: ``tests/test_package.py`` checks that this table matches them).
_LAZY = {
    "combine": (
        'median_combine',
    ),
    "datasets": (
        'shadow_diameter', 'shadow_depth', 'shadow_profile', 'make_dust_transmission',
        'DUST_REGIMES', 'LABEL_FRACTION', 'make_solar_scene', 'make_deepsky_scene',
        'make_vignetting', 'DustyVideoTruth', 'make_dusty_video', 'write_truth',
        'read_truth',
    ),
    "detection": (
        'DustDetection', 'DustDetector', 'detect_dust', 'register_detector',
        'available_detectors', 'empty_catalog', 'CATALOG_COLUMNS', 'LocalDustDetector',
        'expected_diameters', 'darkness_map', 'read_regions', 'apply_region_edits',
        'detection_from_mask', 'catalog_from_mask', 'read_user_mask', 'write_catalog',
        'write_regions', 'write_preview', 'REGION_COLORS', 'GeminiDustDetector',
        'inpaint_gemini', 'gemini_cache_dir', 'DEFAULT_GEMINI_MODEL', 'ConsensusDetector',
        'DISPUTED_POLICIES',
    ),
    "inpaint": (
        'inpaint_local', 'solar_disc_background', 'match_photometry', 'register_inpainter',
        'get_inpainter', 'available_inpainters', 'run_inpainter', 'LOCAL_METHODS', 'MATCH_METHODS',
    ),
    "flat": (
        'make_flat', 'multiply_master_flat', 'evaluate_flat', 'FLAT_PROFILES',
    ),
    "registration": (
        'DriftPath', 'register_frames', 'measure_shift', 'shift_extent', 'drift_constraint',
        'plot_drift',
    ),
    "measured": (
        'MeasuredTransmission', 'measure_transmission', 'inpaint_measured',
        'add_flat_method', 'write_measured_catalog',
    ),
    "apply": (
        'apply_flat', 'apply_to_file', 'flat_boxes',
    ),
    "pipeline": (
        'run_pipeline',
    ),
}
_LAZY_NAMES = {name: module for module, names in _LAZY.items() for name in names}

__all__ = [*_exceptions.__all__, *_dq.__all__, *_io.__all__, *_LAZY_NAMES]


def __getattr__(name):
    module = _LAZY_NAMES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
