"""Prompts sent to generative image models, in one place and versioned.

Every product made with a model records the exact prompt text (``AIPROMPT``),
its SHA-256 (``PRMTSHA``) and `PROMPT_VERSION`.  Any change of wording,
however small, must bump `PROMPT_VERSION`: the response cache is keyed by the
prompt's hash, so a new wording never reuses answers given to an old one.

The wording describes the image exactly as aiflat renders it (see
`~aiflat_astro.detection.gemini`): the temporal median divided by its own
large-scale background and stretched, so that mid-grey is the mean sensor
response and 1 % shadows are clearly darker.

Examples
--------
>>> from aiflat_astro._gemini.prompts import MASK_PROMPT, PROMPT_VERSION, prompt_sha256
>>> PROMPT_VERSION
'1'
>>> len(prompt_sha256(MASK_PROMPT))
64
"""

import hashlib

__all__ = ["PROMPT_VERSION", "MASK_PROMPT", "INPAINT_PROMPT", "prompt_sha256"]

#: Version of the wording below; bump on every change of any prompt.
PROMPT_VERSION = "1"

#: Prompt for the dust mask: one image in, one black-and-white mask out.
MASK_PROMPT = """\
You are helping to calibrate an astronomical camera.

The image is the temporal median of many frames of a video (solar, lunar, \
planetary or deep-sky). It has been divided by its own smooth large-scale \
background and contrast-stretched: mid-grey is the average sensor response, \
darker grey means less light reached the sensor. Any uniform grey band along \
an edge is padding and contains nothing.

Dust on the sensor window or on a filter close to the sensor casts shadows \
that stay fixed on the sensor while the sky moves. In this image they appear \
as soft-edged, roughly circular dark discs, or as dark rings ("doughnuts") \
with a lighter centre, from a few pixels to a few hundred pixels across, \
often only slightly darker than their surroundings. They do not belong to the \
scene: sunspots, pores, granulation, filaments, prominences, the solar or \
lunar limb, craters, stars, galaxies, nebulae, noise and smooth brightness \
gradients are NOT dust.

First state in one sentence what kind of astronomical image this is. Then \
return a dust mask as an image with exactly the same framing and aspect \
ratio as the input: pure black (0) everywhere, and pure white (255) over \
every dust shadow. Cover each whole shadow, including a ring's lighter \
centre and its faint outer edge, but keep the white tight around the shadow \
and never cover clean areas. Do not add text, labels, borders, outlines or \
any other marks. If you see no dust, return an all-black image."""

#: Prompt for inpainting: two images in (the image, then the mask), one image out.
INPAINT_PROMPT = """\
You are helping to calibrate an astronomical camera.

The first image is the temporal median of many frames of a video (solar, \
lunar, planetary or deep-sky), divided by its own smooth large-scale \
background and contrast-stretched: mid-grey is the average sensor response. \
Dust on the sensor casts dark shadows on it. The second image is a mask of \
the same size: white marks the pixels covered by dust shadows, black marks \
clean pixels.

Return the first image with every white region of the mask reconstructed as \
it would look without the dust: continue the brightness, gradient and texture \
of the surrounding clean pixels smoothly across the region, so that no dark \
disc, ring or edge of a shadow remains and the transition is seamless. Leave \
every black-mask pixel exactly as it is. Keep exactly the same framing, size \
and aspect ratio, keep it greyscale, and do not add text, labels, borders or \
any other marks."""


def prompt_sha256(prompt):
    """Return the SHA-256 hex digest of a prompt's exact UTF-8 bytes.

    Hash the text itself, never a copy read back from a FITS header: header
    strings lose trailing spaces and non-ASCII characters.

    Parameters
    ----------
    prompt : str
        The prompt text as sent.

    Returns
    -------
    str
        64 lowercase hexadecimal digits.

    Examples
    --------
    >>> prompt_sha256("abc")[:16]
    'ba7816bf8f01cfea'
    """
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()
