"""The registry of clean-estimate methods by name: ``make_flat(inpaint=name)``, ``--inpaint``.

Built in: ``local`` (`aiflat_astro.flat.estimators.local`), ``measured`` and
``gemini`` (objects of `aiflat_astro.flat.estimators._interface`, whose
modules load on first use).  Other packages add theirs with
`register_inpainter`.
"""

import numpy as np

from ...utils._lazy import resolve
from ...utils.exceptions import InputError
from ._interface import GeminiEstimator, MeasuredEstimator
from .local import _local_inpainter

__all__ = ["register_inpainter", "get_inpainter", "available_inpainters", "run_inpainter"]

_INPAINTERS = {}


def register_inpainter(name, func, *, overwrite=False):
    """Register a clean-estimate method under ``name`` for `~aiflat_astro.flat.make_flat`.

    Parameters
    ----------
    name : str
        Method name used by ``make_flat(..., inpaint=name)`` and ``--inpaint``.
    func : callable or str
        ``func(median, detection, *, frames=None, **options)`` where
        ``median`` is a 2-D float32 array, ``detection`` a
        `~aiflat_astro.detection.DustDetection` (its ``weight``, ``dq`` and
        ``catalog``), ``frames`` an open frame source or None.  It returns the
        clean estimate (2-D array, same shape), or a tuple ``(clean, info)``
        with ``info`` a dict that may hold ``'generated'`` (bool or boolean
        array: values from a generative model, sets the ``GENERATED`` DQ bit),
        ``'provenance'`` (dict merged into the product's provenance, e.g.
        ``ai_model``, ``ai_prompt``, ``prompt_sha256``, ``response_sha256``),
        ``'params'`` (dict of parameters to record) and any other
        JSON-serialisable entries (kept in ``PROVJSON``).  A string
        ``'package.module:function'`` is imported on first use, so heavy
        dependencies stay lazy.
    overwrite : bool, optional
        Replace an existing registration of ``name``.

    Examples
    --------
    >>> def flat_estimate(median, detection, *, frames=None):
    ...     return median
    >>> register_inpainter("doc-identity", flat_estimate)
    >>> "doc-identity" in available_inpainters()
    True
    """
    if not isinstance(name, str) or not name:
        raise InputError("an inpainter name must be a non-empty string")
    if name in _INPAINTERS and not overwrite:
        raise InputError(f"an inpainter named {name!r} is already registered")
    if not (callable(func) or (isinstance(func, str) and ":" in func)):
        raise InputError("an inpainter must be a callable or a 'module:function' string")
    _INPAINTERS[name] = func


def available_inpainters():
    """Return the sorted names of the registered clean-estimate methods."""
    return sorted(_INPAINTERS)


def get_inpainter(name):
    """Return the callable registered under ``name`` (importing it if registered lazily)."""
    try:
        func = _INPAINTERS[name]
    except KeyError:
        raise InputError(f"unknown inpainting method {name!r}; available: "
                         f"{', '.join(available_inpainters())}") from None
    if isinstance(func, str):
        func = _INPAINTERS[name] = resolve(func, what=f"inpainting method {name!r}")
    return func


def run_inpainter(name, median, detection, *, frames=None, **options):
    """Run the method ``name`` and normalise its answer to ``(clean, info)``.

    The clean estimate is checked (shape, finiteness inside the weight) and
    pixels with weight 0 are reset to the median, so that no method can
    change them.

    Returns
    -------
    clean : `~numpy.ndarray`
        float32 clean estimate.
    info : dict
        Method information (see `register_inpainter`), with ``'method'`` set.
    """
    func = get_inpainter(name)
    median = np.asarray(median, dtype=np.float32)
    result = func(median, detection, frames=frames, **options)
    clean, info = result if isinstance(result, tuple) else (result, {})
    clean = np.asarray(getattr(clean, "data", clean), dtype=np.float32)
    if clean.shape != median.shape:
        raise InputError(f"inpainter {name!r} returned shape {clean.shape}, expected {median.shape}")
    weight = np.asarray(detection.weight)
    inside = weight > 0
    if not np.all(np.isfinite(clean[inside])):
        raise InputError(f"inpainter {name!r} returned non-finite values inside the dust mask")
    clean = np.where(inside, clean, median).astype(np.float32)
    info = dict(info or {})
    info.setdefault("method", name)
    return clean, info


register_inpainter("local", _local_inpainter)
register_inpainter("measured", MeasuredEstimator())
register_inpainter("gemini", GeminiEstimator())
