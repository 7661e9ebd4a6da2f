"""Clean-estimate methods: the median without the dust, inside the dust mask.

* `~.local` — harmonic, biharmonic or ring-polynomial inpainting, the
  solar-disc model, photometric matching; the registry of methods by name;
* `~.jitter` — the scene's gradient measured from the seeing jitter;
* `~.measured` — the transmission measured from the image drift;
* ``gemini`` — a generative model's inpainting (through `aiflat_astro._gemini`).

Nothing is imported here: ``import aiflat_astro.flat`` stays light.
"""
