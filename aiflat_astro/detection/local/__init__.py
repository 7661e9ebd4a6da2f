"""The local dust detector: offline, deterministic, fast.

Model: the median is ``scene × transmission``.  Dust shadows are compact dark
dips of the transmission that stay fixed on the sensor; everything else
(granulation, plage, pores, sunspots, filaments, the limb, stars, nebulae)
belongs to the scene.  The package, one concern a module:

* `~.background` — the usable region and robust backgrounds at several scales;
* `~.candidates` — darkness relative to them, the significance at each scale,
  candidate extraction; the `~.candidates.Candidate` dataclass;
* `~.shape` — size, depth, roundness, ring and scene context of a candidate;
* `~.motion` — the motion test with the frames (dust stays on the sensor);
* `~.scoring` — confidence and REVIEW;
* `~.detector` — `LocalDustDetector`.
"""

from .background import darkness_map
from .detector import LocalDustDetector, expected_diameters

__all__ = ["LocalDustDetector", "expected_diameters", "darkness_map"]
