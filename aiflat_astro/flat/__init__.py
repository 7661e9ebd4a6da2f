"""The synthetic flat (the "hand"): `make_flat` and the clean-estimate methods it uses.

* ``_high_level`` — `make_flat`, `multiply_master_flat`, `evaluate_flat`;
* ``fullflat`` — the whole-sensor gain solved from an image drift;
* ``estimators/`` — the clean-estimate methods (``local``, ``jitter``,
  ``measured``, ``gemini``) and their registry.
"""

from ._high_level import *  # noqa: F401,F403

from . import _high_level  # noqa: E402

__all__ = list(_high_level.__all__)
