"""aiflat_astro: synthetic dust flats for astropy and ccdproc reductions.

An eye (a local detector or Google Gemini) locates sensor dust shadows in the
temporal median of a video or image stack; deterministic math sets the pixel
values of a synthetic flat that is exactly 1.0 outside the dust, written as
FITS with full provenance and applied with `ccdproc.flat_correct`.

Every public name is imported on first use (PEP 562), so that ``import
aiflat_astro`` and the ``aiflat`` command start without loading astropy: the
command starts copying a video before the libraries are loaded.  The ``'ser'``
format is registered with `~astropy.nddata.CCDData` as soon as
`astropy.nddata` is imported (see ``_registry_hook``).  ``from aiflat_astro
import *`` sees every public name.
"""

try:
    from ._version import version as __version__
except ImportError:  # pragma: no cover - only without setuptools_scm metadata
    __version__ = ""

from . import _registry_hook
from .utils._lazy import lazy_attributes

_registry_hook.install()

#: Public names of the lazily imported subpackages (each module's ``__all__``;
#: ``tests/test_package.py`` checks that this table matches them).
_LAZY = {
    "utils.exceptions": (
        'AiflatError', 'SERFormatError', 'InputError', 'DetectionError', 'GeminiError',
        'ProvenanceError', 'AiflatWarning', 'AiflatUserWarning', 'SERFormatWarning',
        'NoDustDetectedWarning', 'DetectorFallbackWarning', 'AiflatDeprecationWarning',
    ),
    "dq": (
        'DustDQ', 'DQ_BITS', 'dq_definitions_table', 'expand_mask', 'static_defects',
    ),
    "io": (
        'read_ser', 'SERReader', 'write_ser', 'SERWriter', 'SERHeader', 'open_frames',
        'FrameSource', 'write_flat', 'read_flat', 'write_flat_asdf', 'read_flat_asdf',
        'write_flat_tiff',
    ),
    "combine": (
        'median_combine',
    ),
    "datasets": (
        'shadow_diameter', 'shadow_depth', 'shadow_profile', 'make_dust_transmission',
        'measure_dust', 'DUST_REGIMES', 'LABEL_FRACTION', 'make_solar_scene', 'make_deepsky_scene',
        'make_vignetting', 'DustyVideoTruth', 'VideoOptions', 'make_dusty_video', 'write_truth',
        'read_truth',
    ),
    "detection": (
        'DustDetection', 'DustDetector', 'detect_dust', 'DetectOptions', 'register_detector',
        'available_detectors', 'empty_catalog', 'CATALOG_COLUMNS', 'LocalDustDetector',
        'expected_diameters', 'darkness_map', 'read_regions', 'apply_region_edits',
        'detection_from_mask', 'catalog_from_mask', 'read_user_mask', 'write_catalog',
        'write_regions', 'write_preview', 'REGION_COLORS', 'GeminiDustDetector',
        'gemini_cache_dir', 'DEFAULT_GEMINI_MODEL', 'ConsensusDetector',
        'DISPUTED_POLICIES',
    ),
    "flat.estimators.local": (
        'inpaint_local', 'solar_disc_background', 'match_photometry', 'LOCAL_METHODS', 'MATCH_METHODS',
    ),
    "flat.estimators.registry": (
        'register_inpainter', 'get_inpainter', 'available_inpainters', 'run_inpainter',
    ),
    "flat.estimators.gemini": (
        'inpaint_gemini',
    ),
    "flat.estimators.jitter": (
        'JITTER_MIN_R2', 'jitter_clean', 'JitterOptions',
    ),
    "flat": (
        'make_flat', 'FlatOptions', 'multiply_master_flat', 'evaluate_flat', 'FLAT_PROFILES',
    ),
    "registration": (
        'DriftPath', 'register_frames', 'RegisterOptions', 'measure_shift', 'shift_extent', 'drift_constraint',
        'plot_drift',
    ),
    "flat.estimators.measured": (
        'MeasuredTransmission', 'measure_transmission', 'inpaint_measured',
        'add_flat_method', 'write_measured_catalog', 'MeasureOptions',
    ),
    "apply": (
        'apply_flat', 'apply_to_file', 'flat_boxes',
    ),
    "pipeline": (
        'run_pipeline', 'RunOptions',
    ),
}
_LAZY_NAMES = {name: module for module, names in _LAZY.items() for name in names}

__all__ = list(_LAZY_NAMES)


#: Subpackages and modules reachable as attributes (``aiflat_astro.io.read_ser``).
_SUBMODULES = frozenset({"apply", "combine", "datasets", "detection", "dq", "evaluate", "flat", "io", "pipeline",
                         "products", "provenance", "registration", "utils"})


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY_NAMES, submodules=_SUBMODULES)
