# Sphinx configuration for aiflat_astro (sphinx-astropy v3 defaults).
import datetime

from sphinx_astropy.conf.v3 import *  # noqa: F401,F403

from aiflat_astro import __version__

project = "aiflat_astro"
author = "aiflat_astro developers"
copyright = f"{datetime.date.today().year}, {author}"
version = __version__.split("+")[0]
release = __version__

extensions += ["sphinx_automodapi.automodapi", "sphinx_automodapi.smart_resolver"]  # noqa: F405
automodapi_toctreedirnm = "api"
exclude_patterns += ["_build", "**.ipynb_checkpoints"]  # noqa: F405
html_title = f"{project} v{release}"
intersphinx_mapping.update({  # noqa: F405
    "ccdproc": ("https://ccdproc.readthedocs.io/en/latest/", None),
    "photutils": ("https://photutils.readthedocs.io/en/stable/", None),
})
nitpicky = False
