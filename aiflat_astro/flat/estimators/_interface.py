"""`CleanEstimator`: the one small interface of the clean-estimate methods.

A clean estimate is the median without the dust; `~aiflat_astro.flat.make_flat`
divides the median by it.  An estimator is any callable::

    estimator(median, detection, *, frames=None, **options) -> clean or (clean, info)

(see `~aiflat_astro.flat.estimators.registry.register_inpainter` for ``info``).
The built-in ``measured`` and ``gemini`` methods are objects of this module:
their modules (and their dependencies: the drift registration, google-genai)
are imported when they are first called, by an ordinary ``import`` that the
layer test can see, instead of a ``'module:function'`` string.
"""

__all__ = ["CleanEstimator", "MeasuredEstimator", "GeminiEstimator"]


class CleanEstimator:
    """Base class of the clean-estimate methods (any callable with this signature will do).

    Examples
    --------
    >>> import numpy as np
    >>> class Identity(CleanEstimator):
    ...     name = "identity"
    ...     def __call__(self, median, detection, *, frames=None, **options):
    ...         return np.asarray(median, dtype=np.float32)
    >>> Identity()(np.ones((2, 2)), None).dtype
    dtype('float32')
    >>> Identity()
    <CleanEstimator 'identity'>
    """

    #: Registry name of the method (``make_flat(inpaint=name)``).
    name = None

    def __call__(self, median, detection, *, frames=None, **options):  # pragma: no cover
        raise NotImplementedError

    def __repr__(self):
        return f"<CleanEstimator {self.name!r}>"


class MeasuredEstimator(CleanEstimator):
    """The ``measured`` method: `~aiflat_astro.flat.estimators.measured.inpaint_measured`."""

    name = "measured"

    def __call__(self, median, detection, *, frames=None, **options):
        from .measured import inpaint_measured

        return inpaint_measured(median, detection, frames=frames, **options)


class GeminiEstimator(CleanEstimator):
    """The ``gemini`` method: `~aiflat_astro.flat.estimators.gemini.inpaint_gemini`."""

    name = "gemini"

    def __call__(self, median, detection, *, frames=None, **options):
        from .gemini import inpaint_gemini

        return inpaint_gemini(median, detection, frames=frames, **options)
