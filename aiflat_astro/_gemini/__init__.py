"""The Gemini client shared by the eye (dust masks) and the hand (inpainting).

* `~.client` — the one place that talks to the API (google-genai): the
  client, the content-addressed response cache, one image-generation call;
* `~.settings` — `~.settings.GeminiSettings`, the connection and tiling
  options both roles take, and the provenance summary of the answers;
* `~.render` — the 8-bit stretch, padding to the model's aspect ratios,
  tiling and exact resampling back onto the sensor grid;
* `~.prompts` — the versioned prompts;
* `~.keys` — API-key resolution (never written, logged or cached);
* `~.fake_server` — a local HTTP stand-in for the API, for tests and doctests.

Nothing here knows about dust detections or flats; `aiflat_astro.detection.gemini`
and the Gemini clean estimate build on it.
"""
