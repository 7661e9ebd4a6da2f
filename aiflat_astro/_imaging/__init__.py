"""Small image-processing cores shared by the detectors and the flat (array in, array out).

* `~.robust` — robust scatter (`astropy.stats.mad_std`) and block means
  (`astropy.nddata.block_reduce`);
* `~.disc` — the circle fit of a solar or lunar limb;
* `~.shift` — a fast bilinear sub-pixel shift of an image.

Nothing here reads files, knows about detections or imports above
`aiflat_astro.utils`, so every layer from `aiflat_astro.dq` up may use it;
``tests/test_architecture.py`` checks it.
"""
