"""Constants needed both by the library and by the CLI's argument parser.

Kept in a module without heavy imports so that building the ``aiflat``
parser does not import the detectors.
"""

#: Default Gemini image model (the "Nano Banana Pro" image model).
DEFAULT_GEMINI_MODEL = "gemini-3-pro-image-preview"

#: Detectors that ship with aiflat_astro (others may be registered at run time).
BUILTIN_DETECTORS = ("consensus", "gemini", "local")

#: Clean-estimate methods that ship with aiflat_astro (``make_flat(inpaint=...)``).
BUILTIN_INPAINTERS = ("gemini", "local", "measured")
