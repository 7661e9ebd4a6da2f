"""Confidence of a candidate: evidence terms (log-odds) from significance, shape, context, motion.

Each term is a log-odds contribution; the confidence is the logistic of
their sum.  The motion test, when the frames decide it, outweighs the rest:
dust stays on the sensor (``β ≈ 0``), the scene moves (``β ≈ 1``).  Without
frames (or when they cannot decide) the shape and context alone never give
more than about 0.9, so such shadows stay close to REVIEW.
"""

import numpy as np

#: Significance (robust sigmas of its scale) at which a candidate is even odds, median only.
Z_EVEN = 5.0
#: Deepest plausible large soft shadow: deeper large dark regions are scene (umbrae).
MAX_LARGE_DEPTH = 0.35
#: Diameter (px) above which a shadow is "large" (out of focus, soft, shallow).
LARGE = 80.0
#: Real specks are round: elongation (√ eigenvalue ratio) 1.15 median, 1.81 at 95 %.
ROUND = 1.6
#: A dip whose darkest surrounding sector keeps less than 15 % of its depth is isolated.
ISOLATED = 0.85
#: Surroundings this many of their noise sigmas brighter than the background: dust's Fresnel ring.
BRIGHT_RING = -2.0
#: Surroundings darker than the background by this many of their noise sigmas: not a speck's.
RING_DARK = 0.5
#: Small specks (below this diameter, px) are sharp and at least this deep (5 % of the real ones: 0.07).
SMALL, MIN_SMALL_DEPTH = 30.0, 0.05
#: Most log-odds a "fixed on the sensor" verdict adds (the sensor has its own fixed pattern).
MOTION_MAX = 3.0
#: Dust keeps its whole depth in every frame (β ≈ 0), a scene feature moves (β ≈ 1).  With a
#: drift or seeing jitter the template is taken from the median, scene included: a speck on a
#: scene dip (a pore, a plage lane) keeps its own share of the template's depth (β between), so
#: the verdict turns half-way, where both hypotheses are equally far.
BETA_SPLIT = 0.5
#: With offsets of hundreds of pixels the candidates come from the frames' static map, where the
#: scene is already gone: a speck there keeps its whole depth, and a dip that keeps less than 3/4
#: of it (β > 0.25) is a chance alignment of a few frames.
BETA_SPLIT_STATIC = 0.25
#: Shadows at least this large (px) that the frames cannot decide stay as REVIEW shadows.
UNDECIDED_LARGE = 20.0
#: A shadow is blurred by the optics: its core (darker than half its depth) covers at least a
#: 3 px disc, π 1.5² ≈ 7 px (the smallest real specks, notes §1: 5 % below 3.1 px).  Fewer: a defect.
MIN_CORE_AREA = 7
#: Its half-peak core (pixels connected to its darkest one, darker than half of it) then covers
#: at least that disc; the noise on the darkest pixel can halve it, never below 4 px.  Fewer is a
#: cold-pixel cluster (a few sensor pixels with full-depth steps to their neighbours: DQ COLD, not
#: a shadow), and being fixed on the sensor the frames do not rescue it.
MIN_PEAK_AREA = 4
#: A motion measurement decides when its uncertainty is below this.
BETA_DECISIVE = 0.1
#: Shape terms that describe a dip's *surroundings*, not the dip: on the median they are the scene
#: (a speck on a filament, in a plage lane, on an umbra's edge continues into it), which is what
#: the motion test decides.  A dip the frames find fixed on the sensor no longer pays for them.
SURROUNDINGS = ("continues outward", "not isolated")
#: From the median alone, a smaller dip that a candidate rejected as scene had replaced is judged on
#: its own when it stands this many sigmas out of the texture: the notes' simple threshold (k = 8
#: MAD sigmas, recall 0.94 at precision 0.84 on the real median), where texture dips are already rare.
RELEASE_Z = 8.0
#: Terms that reject a candidate as a large scene structure (an umbra, a penumbra, the limb's dark
#: band): from the median alone its smaller pieces stay with it, only the frames tell a speck there.
SCENE_STRUCTURE = ("inside a larger dark structure", "too deep for its size", "at the limb",
                   "where the disc is dim")
#: A disc's light below this fraction of its typical level (the median over the disc): the limb's
#: dim band (limb darkening, the seeing-blurred edge, spicules) or an umbra.  There the scene's
#: contrast is at its strongest against a speck's and the median alone cannot tell them: only a
#: decisive motion verdict keeps a shadow there.
DIM_LIGHT = 0.5


def sigmoid(x):
    """Logistic function."""
    return 1.0 / (1.0 + np.exp(-np.clip(x, -50, 50)))


def significance_term(c):
    """More sigmas, more belief: +1 log-odds per 1.5 sigma above `Z_EVEN`, capped."""
    return float(np.clip((c.z - Z_EVEN) / 1.5, -6.0, 4.0))


def shape_terms(c):
    """Shape of real dust: round-ish (fibres allowed but doubted), isolated, a ring, a plausible depth."""
    terms = {}
    if c.elongation > ROUND:
        terms["elongated"] = -2.0 * (c.elongation - ROUND)
    if c.isolation < 0.6:
        terms["not isolated"] = -10.0 * (0.6 - c.isolation)
    elif c.isolation > ISOLATED:
        terms["isolated"] = 1.0
    if c.ring < BRIGHT_RING:
        terms["ring"] = 1.0
    elif c.ring > RING_DARK:
        # real dust has a bright ring (T > 1) or at least a clear surrounding: a dip whose
        # surroundings are darker than the background continues into the scene
        terms["continues outward"] = -(c.ring - RING_DARK)
    if c.peak_area < MIN_PEAK_AREA:
        terms["a cold-pixel cluster"] = -8.0
    elif c.core_area < MIN_CORE_AREA:
        terms["sharper than a shadow"] = -4.0
    if c.diameter < SMALL and c.depth < MIN_SMALL_DEPTH:
        terms["too faint for a speck"] = -(MIN_SMALL_DEPTH - c.depth) / 0.01
    if c.diameter > LARGE and c.depth > MAX_LARGE_DEPTH:
        terms["too deep for its size"] = -8.0 * (c.depth - MAX_LARGE_DEPTH) / 0.1
    return {k: float(np.clip(v, -8.0, 2.0)) for k, v in terms.items()}


def context_terms(c, *, has_limb):
    """Scene context: the edge of a much larger dark (umbra) or bright (plage) structure; the limb."""
    terms = {}
    if c.context < 0.9:
        terms["inside a larger dark structure"] = -25.0 * (0.9 - c.context)
    if c.context > 1.12 and c.elongation > 1.6:
        terms["dark lane between bright ridges"] = -20.0 * (c.context - 1.12)
    if has_limb and c.edge < 0.5 * c.diameter + 8:
        terms["at the limb"] = -2.0
    if has_limb and c.light < DIM_LIGHT:
        terms["where the disc is dim"] = -1.0     # and no more than -0.1 in all without the frames (`score`)
    return {k: float(max(v, -10.0)) for k, v in terms.items()}


def motion_term(c, beta_split=BETA_SPLIT):
    """The motion test: log-odds from β and its uncertainty; None when the frames cannot tell."""
    if not (np.isfinite(c.beta) and np.isfinite(c.beta_sigma)) or c.beta_sigma > BETA_DECISIVE:
        return None
    return float(np.clip((beta_split - c.beta) / max(c.beta_sigma, 0.05), -10.0, 10.0))


def score(c, *, has_limb, frames_used, beta_split=BETA_SPLIT):
    """Fill ``c.terms`` and ``c.confidence`` (``beta_split``: where the motion verdict turns)."""
    c.terms = {"significance": significance_term(c)}
    c.terms.update(shape_terms(c))
    context = context_terms(c, has_limb=has_limb)
    c.terms.update(context)
    logit = sum(c.terms.values())
    motion = motion_term(c, beta_split) if frames_used else None
    if motion is not None:
        c.terms["motion"] = motion
        # the frames decide whether it moves; they do not make a faint or misshapen dip a speck:
        # what stays on the sensor must still stand out as dust does.  The scene context (the
        # edge of an umbra, a lane between ridges) is what the frames test: a dip fixed on the
        # sensor is not the scene's, so it no longer counts against a speck on an umbra
        if motion > 0:
            # ... nor do its surroundings, unless a smaller dip inside it (a child) would explain it:
            # a region grown into the scene around a speck still pays, and gives way to the speck
            exempt = set(context) if c.children else set(context) | set(SURROUNDINGS)
            scene = [v for k, v in c.terms.items() if k in exempt and v < 0]
            logit = min(motion, MOTION_MAX) + logit - sum(scene)
        else:
            logit = motion + min(logit, 0.5)
    else:
        logit = min(logit, 2.2)
        if c.embedded:
            # a compact part of a larger dark region (a speck on a filament, or a piece of an umbra,
            # a filament, a lane): from the median alone they look alike, only the frames tell
            logit = _capped(c, "part of a larger dark region", logit, -0.1)
        if "where the disc is dim" in c.terms:
            # the limb's dim band or an umbra: only the frames tell a speck there from the scene
            logit = _capped(c, "where the disc is dim", logit, -0.1)
        if frames_used:
            # the frames were given but cannot tell here (too faint, at the limb): left for review
            # (too faint, at the edge of what the frames cover): a small speck is left out (the
            # frames resolve any speck that is there), a large soft shadow is left for review
            cap = 1.0 if c.diameter >= UNDECIDED_LARGE and np.isfinite(c.beta) else -0.1
            logit = _capped(c, "unverified", logit, cap)
    if "a cold-pixel cluster" in c.terms:
        # a sensor defect, whatever the frames say
        logit = min(logit, c.terms["a cold-pixel cluster"])
    c.confidence = float(sigmoid(logit))
    return c


def _capped(c, term, logit, cap):
    """``logit`` held at most at ``cap``; what that takes off is added to ``c.terms[term]``."""
    c.terms[term] = c.terms.get(term, 0.0) + min(0.0, cap - logit)
    return min(logit, cap)


def released_children(c, *, frames_used):
    """The smaller candidates a rejected candidate ``c`` replaced that are judged on their own.

    With the frames, all of them: the motion test tells a speck on an umbra, a
    filament or beside a moving pore from the scene.  From the median alone a
    candidate rejected as a fibril, a lane or a dip that continues outward is
    often a speck that merged with the texture at the low hysteresis level; its
    children are judged each on its own when they stand out of the texture at
    least as far as `RELEASE_Z` sigmas.  A candidate rejected as a large scene
    structure (`SCENE_STRUCTURE`: inside a larger dark structure, too deep for
    its size, at the limb — an umbra, a penumbra, the limb's dark band) keeps
    them: its pieces look like specks and only the frames can tell.

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> kids = [SimpleNamespace(z=12.0), SimpleNamespace(z=5.0)]
    >>> lane = SimpleNamespace(children=kids, terms={"continues outward": -3.0})
    >>> [k.z for k in released_children(lane, frames_used=False)]
    [12.0]
    >>> umbra = SimpleNamespace(children=kids, terms={"inside a larger dark structure": -4.0})
    >>> len(released_children(umbra, frames_used=False)), len(released_children(umbra, frames_used=True))
    (0, 2)
    """
    if frames_used:
        return list(c.children)
    if any(term in c.terms for term in SCENE_STRUCTURE):
        return [k for k in c.children if k.z >= RELEASE_Z and _stands_alone(k)]
    return [k for k in c.children if k.z >= RELEASE_Z]


def _stands_alone(c):
    """Whether a dip is brighter-rimmed in every direction and round: a speck, not a piece of a structure."""
    return getattr(c, "isolation", 0.0) > ISOLATED and getattr(c, "elongation", np.inf) <= ROUND
