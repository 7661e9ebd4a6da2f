"""Loaders for the real observations used to check the methods (not shipped).

The real sets live outside the package, in ``shared/data/real/`` beside the
project (see its README for their sources and licences).  These functions only
*read* them; nothing is copied into the package.  Set the environment variable
``AIFLAT_REAL_DATA`` to point at another copy of that folder.
"""

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..utils.exceptions import InputError

__all__ = ["real_data_dir", "Xu2016Set", "load_xu2016", "XU2016_CENTROIDS", "XU2016_SPOTS"]

#: Disc centroids (row, col) of the nine ``xu2016`` frames, from the set's README.
XU2016_CENTROIDS = np.array([(1013, 1014), (695, 860), (684, 1152), (801, 1315), (1075, 1354),
                             (1290, 1264), (1356, 1011), (1279, 760), (1026, 678)], float)
#: The three clear dust spots (row, col) of the ``xu2016`` flat, from the set's README.
XU2016_SPOTS = np.array([(507, 966), (682, 998), (728, 1362)], float)
_XU2016_FRAMES = ["h619l.jpg"] + [f"h619l0{i}.jpg" for i in range(1, 9)]


def real_data_dir(*parts):
    """The folder of real observations, or `None` when it is not on this machine.

    Looks at ``$AIFLAT_REAL_DATA``, then ``../shared/data/real`` beside the
    project checkout and beside the working directory.

    Parameters
    ----------
    *parts : str
        Sub-folder names appended to the found folder (``"xu2016"``).

    Returns
    -------
    pathlib.Path or None

    Examples
    --------
    >>> d = real_data_dir("xu2016")
    >>> d is None or d.is_dir()
    True
    """
    candidates = []
    if os.environ.get("AIFLAT_REAL_DATA"):
        candidates.append(Path(os.environ["AIFLAT_REAL_DATA"]))
    root = Path(__file__).resolve().parents[2]
    candidates += [root.parent / "shared" / "data" / "real", Path.cwd().parent / "shared" / "data" / "real"]
    for base in candidates:
        path = base.joinpath(*parts)
        if path.exists():
            return path
    return None


@dataclass(frozen=True)
class Xu2016Set:
    """The real full-disc H-alpha drift set of Xu et al. (2016), as arrays.

    Attributes
    ----------
    frames : ndarray, shape (9, 2032, 2032), float32
        The nine frames, dark-subtracted when loaded so (DN of the 8-bit JPEGs).
    dark : ndarray, float32
        The dark frame.
    paper_flat : ndarray, float32
        The paper's gain table (8-bit JPEG scale, not normalised).
    centroids : ndarray, shape (9, 2)
        Disc centroids (row, col) from the set's README.
    spots : ndarray, shape (3, 2)
        The three clear dust spots (row, col) from the set's README.
    """

    frames: np.ndarray
    dark: np.ndarray
    paper_flat: np.ndarray
    centroids: np.ndarray
    spots: np.ndarray


def _read_jpeg(path):
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("L"), dtype=np.float32)


def load_xu2016(directory=None, *, dark_subtract=True):
    """Read the ``xu2016`` set (nine frames, dark, the paper's flat).

    Parameters
    ----------
    directory : path-like, optional
        The ``xu2016`` folder; default `real_data_dir` ``("xu2016")``.
    dark_subtract : bool, optional
        Subtract the dark frame from each frame (default `True`).

    Returns
    -------
    Xu2016Set

    Raises
    ------
    aiflat_astro.utils.exceptions.InputError
        When the folder or one of its files is missing.

    Examples
    --------
    >>> if real_data_dir("xu2016") is not None:
    ...     s = load_xu2016()
    ...     print(s.frames.shape)
    ... else:
    ...     print((9, 2032, 2032))
    (9, 2032, 2032)
    """
    folder = Path(directory) if directory is not None else real_data_dir("xu2016")
    if folder is None or not folder.is_dir():
        raise InputError("the real xu2016 set was not found (set AIFLAT_REAL_DATA to shared/data/real)")
    missing = [n for n in _XU2016_FRAMES + ["h619d.jpg", "hd61900f.jpg"] if not (folder / n).is_file()]
    if missing:
        raise InputError(f"{folder}: missing {', '.join(missing)}")
    dark = _read_jpeg(folder / "h619d.jpg")
    frames = np.stack([_read_jpeg(folder / n) for n in _XU2016_FRAMES])
    if dark_subtract:
        frames -= dark
    return Xu2016Set(frames=frames, dark=dark, paper_flat=_read_jpeg(folder / "hd61900f.jpg"),
                     centroids=XU2016_CENTROIDS.copy(), spots=XU2016_SPOTS.copy())
