"""Simulated dusty SER videos with their ground truth.

`make_dusty_video` renders a static scene (solar disc or deep-sky field),
moves it on the sensor by seeing jitter and an optional 2-D drift, multiplies
by vignetting and by the dust transmission, adds shot and read noise,
quantises, and streams the frames to a SER file one by one.  The ground truth
(`DustyVideoTruth`) is returned and can be saved as FITS with `write_truth`.

Frame model, for frame k with scene shift (dy_k, dx_k)::

    frame_k(y, x) = gain · scene(y − dy_k, x − dx_k) · vignetting(y, x) · transmission(y, x)
                    + noise
"""

import dataclasses
import logging
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table

from ..provenance import provjson_hdu, read_provjson, software_id, utc_now
from ..utils._atomic import atomic_output, check_output_path
from ..utils._options import merged_options
from ..utils.exceptions import InputError
from .dust import (
    DUST_REGIMES,
    NOMINAL_PIXEL_SIZE,
    _check_shape,
    _shadow_table,
    make_dust_transmission,
)
from .scenes import _solar_scene, _solar_scene_real, make_deepsky_scene, make_vignetting

__all__ = ["DustyVideoTruth", "VideoOptions", "make_dusty_video", "write_truth", "read_truth"]

log = logging.getLogger(__name__)

#: Electrons at full scale and read noise (e⁻) of the simulated camera.
FULL_WELL = 15000.0
READ_NOISE = 2.5
#: Start of the simulated recording (UTC) and the default frame rate (Hz).
START_TIME = "2024-06-21T09:00:00"
#: Granulation and mottles of the 'solar' scene relative to a single sharp frame's (3 %, 4 % rms):
#: what a temporal median of a video keeps of them.  Set so that the median's darkness scatter
#: (1 - median / 25 px median filter) is the real dusty median's, ~0.011 (notes, real-dust.md §1:
#: the notes' k = 8 threshold finds 94 % there); 1.0 gave 0.045 (bench_simulate_calibration.py).
MEDIAN_TEXTURE = 0.2

_EXTENSIONS = ("LABELS", "VIGNET", "SCENE", "SHADOWS", "SHIFTS", "PARAMS")


@dataclasses.dataclass(eq=False)
class DustyVideoTruth:
    """Ground truth of a simulated dusty video.

    Attributes
    ----------
    transmission : `numpy.ndarray`
        float32 (H, W): dust only (no vignetting), exactly 1.0 outside the
        shadows, above 1.0 on bright diffraction rims.
    vignetting : `numpy.ndarray`
        float32 (H, W), the smooth optical vignetting (not dust).
    labels : `numpy.ndarray`
        int32 (H, W): shadow id where the shadow darkens the pixel by more
        than 2 % of its own depth (`~aiflat_astro.datasets.LABEL_FRACTION`), 0 elsewhere.
    shadows : `~astropy.table.Table`
        One row a shadow (see `make_dust_transmission`).
    shifts : `numpy.ndarray`
        float64 (n_frames, 2): (dy, dx) of the scene on the sensor per frame.
    scene : `numpy.ndarray`
        float32 (H, W): the static scene on the sensor grid at zero shift.
    params : dict
        Every parameter of the simulation, including the derived ``gain``
        (ADU per scene unit) and the camera's ``e_per_adu`` and ``read_noise``.
    path : `pathlib.Path` or None
        The simulated video.
    """

    transmission: np.ndarray
    vignetting: np.ndarray
    labels: np.ndarray
    shadows: Table
    shifts: np.ndarray
    scene: np.ndarray
    params: dict = dataclasses.field(default_factory=dict)
    path: Path | None = None

    @property
    def n_frames(self):
        """Number of frames of the video."""
        return len(self.shifts)

    def model_image(self):
        """Noise-free frame at zero shift, in ADU: gain · scene · vignetting · transmission."""
        model = self.params["gain"] * self.scene * self.vignetting * self.transmission
        return model.astype(np.float32)


def _shift_path(rng, n_frames, drift, jitter):
    """Scene shifts (dy, dx): a Lissajous drift of peak-to-peak ``drift`` plus Gaussian jitter.

    The drift visits both axes (1.5 periods in y against 1 in x) so that a
    measured flat sees every direction; the jitter is clipped at 4 σ.
    """
    t = np.linspace(0.0, 1.0, n_frames) if n_frames > 1 else np.zeros(1)
    path = 0.5 * drift * np.column_stack([np.sin(3 * np.pi * t), np.sin(2 * np.pi * t)])
    noise = np.clip(rng.normal(0.0, 1.0, (n_frames, 2)), -4, 4) * jitter
    return path + noise


class _FrameSynth:
    """Renders noisy frames from a padded scene; frame by frame, buffers reused."""

    def __init__(self, big, margin, gain_map, *, full_scale, dtype, noise, e_per_adu,
                 read_noise_adu, rng):
        self.big, self.margin, self.gain_map = big, margin, gain_map
        self.shape = gain_map.shape
        self.full_scale, self.dtype, self.noise, self.rng = full_scale, dtype, noise, rng
        self.inv_e, self.rn2 = 1.0 / e_per_adu, read_noise_adu**2
        self.e_per_adu, self.read_noise_adu = e_per_adu, read_noise_adu
        self._out = np.empty(self.shape, np.float32)
        self._tmp = np.empty(self.shape, np.float32)

    def _shifted(self, dy, dx):
        """Bilinear sample of the scene shifted by (dy, dx) onto the sensor grid."""
        h, w = self.shape
        oy, ox = self.margin - dy, self.margin - dx
        iy, ix = int(np.floor(oy)), int(np.floor(ox))
        fy, fx = oy - iy, ox - ix
        out, tmp = self._out, self._tmp
        out.fill(0.0)
        for ddy, wy in ((0, 1 - fy), (1, fy)):
            for ddx, wx in ((0, 1 - fx), (1, fx)):
                if wy * wx > 1e-9:
                    window = self.big[iy + ddy:iy + ddy + h, ix + ddx:ix + ddx + w]
                    np.multiply(window, np.float32(wy * wx), out=tmp)
                    out += tmp
        return out

    def frame(self, dy, dx):
        signal = self._shifted(dy, dx)
        signal *= self.gain_map
        if self.noise == "normal":       # shot noise (normal approximation) + read noise
            sigma = self._tmp
            np.multiply(signal, np.float32(self.inv_e), out=sigma)
            sigma += np.float32(self.rn2)
            np.sqrt(sigma, out=sigma)
            sigma *= self.rng.standard_normal(self.shape, dtype=np.float32)
            signal += sigma
        elif self.noise == "poisson":
            counts = self.rng.poisson(np.maximum(signal, 0) * self.e_per_adu)
            signal[...] = counts * self.inv_e
            signal += self.read_noise_adu * self.rng.standard_normal(self.shape, dtype=np.float32)
        np.rint(signal, out=signal)
        np.clip(signal, 0, self.full_scale, out=signal)
        return signal.astype(self.dtype)


def _check_options(shape, n_frames, regime, bit_depth, drift, jitter, noise, level, frame_rate):
    shape = _check_shape(shape)
    if regime not in DUST_REGIMES:
        raise InputError(f"regime must be one of {', '.join(DUST_REGIMES)}, got {regime!r}")
    if int(n_frames) != n_frames or n_frames < 1:
        raise InputError(f"n_frames must be a positive integer, got {n_frames!r}")
    if int(bit_depth) != bit_depth or not 8 <= bit_depth <= 16:
        raise InputError(f"bit_depth must be an integer from 8 to 16, got {bit_depth!r}")
    for name, value in (("drift", drift), ("jitter", jitter)):
        if not (np.isfinite(value) and value >= 0):
            raise InputError(f"{name} must be a non-negative number of pixels, got {value!r}")
    modes = {True: "normal", False: None, "normal": "normal", "poisson": "poisson", None: None}
    if noise not in modes:
        raise InputError(f"noise must be True, False, 'normal' or 'poisson', got {noise!r}")
    if not 0 < level < 1:
        raise InputError(f"level must be a fraction of full scale in (0, 1), got {level!r}")
    if not frame_rate > 0:
        raise InputError(f"frame_rate must be positive, got {frame_rate!r}")
    return shape, modes[noise]


def _check_seed(seed, name="seed"):
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"{name} must be a non-negative integer or None, got {seed!r}")
    return int(seed)


@dataclasses.dataclass(frozen=True)
class VideoOptions:
    """What `make_dusty_video` simulates: its options besides the outputs (the same names as its keywords).

    Parameters
    ----------
    shape, n_frames, regime, f_ratio, pixel_size, obstruction, n_dust, drift, jitter, bit_depth, noise, level, \
limb, dust_free, seed, dust_seed, frame_rate, texture
        See `make_dusty_video`.

    Examples
    --------
    >>> VideoOptions(regime="deepsky").n_frames
    40
    """

    shape: tuple = (256, 320)
    n_frames: int = 40
    regime: str = "solar"
    f_ratio: object = None
    pixel_size: float = NOMINAL_PIXEL_SIZE
    obstruction: object = None
    n_dust: object = None
    drift: float = 0.0
    jitter: float = 1.0
    bit_depth: int = 12
    noise: object = True
    level: float = 0.55
    limb: bool = True
    dust_free: bool = False
    seed: object = 0
    dust_seed: object = None
    frame_rate: float = 50.0
    texture: object = None


def make_dusty_video(path, *, options=None, truth_path=None, overwrite=False, progress_bar=False, **keywords):
    """Write a simulated dusty SER video and return its ground truth.

    A static scene is sampled on a grid larger than the sensor, shifted per
    frame by Gaussian seeing jitter plus an optional Lissajous drift
    (bilinear sub-pixel interpolation), multiplied by vignetting and by the
    dust transmission, scaled so that the mean illuminated level is ``level``
    of full scale, given shot noise (15 000 e⁻ full well) and 2.5 e⁻ read
    noise, quantised to ``bit_depth`` bits (LSB-aligned) and streamed to a
    mono SER file with UTC timestamps.  Only one frame is in memory at a time.

    Dust follows geometric optics (`make_dust_transmission`): each shadow is
    the grain silhouette convolved with the pupil footprint of diameter
    Δz/(N p), plateau depth (grain area)/(footprint area), discs, fibres,
    clumps or donuts, with a faint bright Fresnel ring (transmission > 1)
    in the solar scenarios.

    Parameters
    ----------
    path : str, `os.PathLike` or None
        Output SER file; with None only the ground truth is computed.
    options : `VideoOptions`, optional
        The simulation's options below as one object; keywords given as
        well override it.
    shape : tuple of int, optional
        Frame ``(height, width)``.
    n_frames : int, optional
        Number of frames.
    regime : {'solar', 'solar-soft', 'deepsky'}, optional
        The scenario (`DUST_REGIMES`).  ``'solar'`` (default): dust drawn
        from the distributions measured on a real dusty solar median (about
        100 small sharp specks per Mpx, 3–40 px, 7–56 % deep, some fibres
        and clumps, Fresnel ring), f/40, over a scene with the real hard
        negatives: a sunspot umbra and penumbra far larger than the dust,
        pores, plage ridges with dark lanes between them, filaments,
        faculae, granulation, smooth large-scale structure, the limb.
        ``'solar-soft'``: the former solar scenario, a few large soft discs
        (4–60 px) at f/30 over a scene whose features scale with the frame.
        ``'deepsky'``: sky with stars and a gradient, f/5, large faint donuts.
    f_ratio : float, optional
        Focal ratio; 40 (solar), 30 (solar-soft) or 5 (deep-sky) by default.
    pixel_size : float, optional
        Pixel size in µm.
    obstruction : float, optional
        Linear central obstruction; 0 (solar) or 0.35 (deep-sky) by default.
    n_dust : int, optional
        Number of dust shadows (fewer if they do not fit without overlapping).
        Default: drawn from 100 per Mpx of the disc in the frame (``'solar'``),
        10 otherwise.
    drift : float, optional
        Peak-to-peak amplitude, in pixels, of a 2-D Lissajous drift of the
        scene over the video (both axes); 0 for none.
    jitter : float, optional
        rms per axis, in pixels, of the random seeing jitter of each frame.
    bit_depth : int, optional
        8 to 16; frames are uint8 for 8 bits, else uint16 with values up to
        2**bit_depth − 1.
    noise : bool or {'normal', 'poisson'}, optional
        Shot and read noise.  True draws shot noise from the normal
        approximation of the Poisson law (≥ 100 e⁻ per pixel here, and 3×
        faster); ``'poisson'`` draws it exactly; False gives noise-free frames.
    level : float, optional
        Mean illuminated signal as a fraction of full scale.
    limb : bool, optional
        Solar regime: show the limb and some sky in a corner (dust is only
        put on the disc, away from the limb by more than the motion).
    dust_free : bool, optional
        A control video: the same scene, vignetting, motion and noise, no dust.
    seed : int or None, optional
        Seed of all random draws; None draws fresh entropy, recorded in
        ``params['seed']`` so the video can be reproduced.
    frame_rate : float, optional
        Frames per second for the timestamps.
    truth_path : str or `os.PathLike`, optional
        Also save the ground truth there (`write_truth`).
    overwrite : bool, optional
        Replace existing output files.
    progress_bar : bool, optional
        Show a tqdm progress bar.
    texture : float, optional
        ``'solar'`` regime: contrast of the granulation and mottles relative to
        a single sharp frame's (3 % and 4 % rms).  Default `MEDIAN_TEXTURE`
        (0.2): what a temporal median keeps, calibrated so that the median's
        darkness scatter at the pixel scale is the real dusty median's (about
        1.1 %, see ``docs/simulate.rst``); 1.0 gives the former, four times
        rougher scene.

    Returns
    -------
    `DustyVideoTruth`

    Raises
    ------
    `~aiflat_astro.InputError`
        Invalid option, or an output exists and ``overwrite`` is false.

    Examples
    --------
    >>> import tempfile, os
    >>> d = tempfile.mkdtemp()
    >>> truth = make_dusty_video(os.path.join(d, "demo.ser"), shape=(64, 80), n_frames=5,
    ...                          n_dust=3, seed=1)
    >>> truth.n_frames, len(truth.shadows), truth.transmission.shape
    (5, 3, (64, 80))
    >>> from aiflat_astro.io import SERReader
    >>> with SERReader(os.path.join(d, "demo.ser")) as ser:
    ...     ser.n_frames, ser.dtype.name, ser.header.pixel_depth
    (5, 'uint16', 12)
    """
    o = merged_options(VideoOptions, options, keywords, "make_dusty_video")
    shape, noise_mode = _check_options(o.shape, o.n_frames, o.regime, o.bit_depth, o.drift, o.jitter, o.noise,
                                       o.level, o.frame_rate)
    o = dataclasses.replace(o, shape=shape, n_frames=int(o.n_frames), bit_depth=int(o.bit_depth),
                            seed=_check_seed(o.seed),
                            dust_seed=None if o.dust_seed is None else _check_seed(o.dust_seed, "dust_seed"))
    path, truth_path = _checked_outputs(path, truth_path, overwrite)
    cfg = DUST_REGIMES[o.regime]
    o = dataclasses.replace(o, f_ratio=float(cfg["f_ratio"] if o.f_ratio is None else o.f_ratio),
                            obstruction=float(cfg["obstruction"] if o.obstruction is None else o.obstruction))
    seq = np.random.SeedSequence(o.seed)
    # independent streams: a dust-free control shares scene, vignetting, motion and noise
    rng_scene, rng_vign, rng_dust, rng_shift, rng_noise = map(np.random.default_rng, seq.spawn(5))
    if o.dust_seed is not None:   # shared dust: its own stream, placed independently of the scene
        rng_dust = np.random.default_rng(np.random.SeedSequence(o.dust_seed).spawn(5)[2])
    shifts = _shift_path(rng_shift, o.n_frames, float(o.drift), float(o.jitter))
    margin = int(np.ceil(np.abs(shifts).max(initial=0.0))) + 2
    big, scene, allowed, features = _simulated_scene(shape, margin, o.regime, rng_scene, limb=o.limb,
                                                     texture=o.texture)
    vign_amp = float(rng_vign.uniform(*cfg["vignetting"]))
    vignetting = make_vignetting(shape, amplitude=vign_amp, seed=rng_vign)
    transmission, labels, shadows = _simulated_dust(o, allowed, rng_dust)
    full_scale = 2**o.bit_depth - 1
    lit = scene > 0.1 * np.percentile(scene, 99)
    gain = o.level * full_scale / float(np.mean((scene * vignetting)[lit]))
    params = _video_params(o, noise_mode, seq, shadows, features, gain, full_scale, vign_amp, margin, path)
    truth = DustyVideoTruth(transmission=transmission, vignetting=vignetting, labels=labels,
                            shadows=shadows, shifts=shifts, scene=scene, params=params, path=path)
    if path is not None:
        _render_video(path, big, truth, rng_noise, overwrite=overwrite, progress_bar=progress_bar)
    if truth_path is not None:
        write_truth(truth_path, truth, overwrite=overwrite)
    log.info("simulated %d frames %dx%d (%s) with %d dust shadows", o.n_frames, *shape, o.regime,
             len(shadows))
    return truth


def _simulated_dust(o, allowed, rng):
    """The dust transmission, labels and catalog (none for a dust-free control)."""
    if o.dust_free:
        return np.ones(o.shape, np.float32), np.zeros(o.shape, np.int32), _shadow_table([])
    return make_dust_transmission(o.shape, regime=o.regime, f_ratio=o.f_ratio, pixel_size=o.pixel_size,
                                  obstruction=o.obstruction, n_dust=o.n_dust,
                                  allowed=allowed if o.dust_seed is None else None, seed=rng)


def _video_params(o, noise_mode, seq, shadows, features, gain, full_scale, vign_amp, margin, path):
    """The truth's ``params`` record: the options as simulated, the camera and the seed drawn."""
    return {
        "regime": o.regime, "shape": list(o.shape), "n_frames": o.n_frames, "f_ratio": o.f_ratio,
        "pixel_size": float(o.pixel_size), "obstruction": o.obstruction,
        "n_dust": None if o.n_dust is None else int(o.n_dust),
        "n_shadows": len(shadows), "drift": float(o.drift), "jitter": float(o.jitter),
        "bit_depth": o.bit_depth, "noise": noise_mode or "none", "level": float(o.level),
        "limb": bool(o.limb) and o.regime != "deepsky", "scene_features": features,
        "dust_free": bool(o.dust_free), "seed": int(seq.entropy), "dust_seed": o.dust_seed,
        "frame_rate": float(o.frame_rate),
        "start_time": START_TIME, "gain": gain, "full_scale": full_scale, "full_well": FULL_WELL,
        "e_per_adu": FULL_WELL / full_scale, "read_noise": READ_NOISE, "vignetting_amplitude": vign_amp,
        "margin": margin, "video": None if path is None else str(Path(path).resolve()),
        "software": software_id(),
    }


def _checked_outputs(path, truth_path, overwrite):
    """The video and truth paths, checked before anything is computed (None stays None)."""
    if path is not None:
        path = check_output_path(path, overwrite=overwrite)
    if truth_path is not None:
        truth_path = check_output_path(truth_path, overwrite=overwrite)
        if path is not None and truth_path.resolve() == path.resolve():
            raise InputError("the truth file and the video must be different files")
    return path, truth_path


def _simulated_scene(shape, margin, regime, rng, *, limb, texture):
    """The scene on a grid ``margin`` px larger than the sensor on each side.

    Returns the large scene, its crop at zero shift, the pixels where dust
    may go (on the disc, away from the limb by more than the motion; None for
    deep sky) and the named scene features (``'solar'``), in sensor coordinates.
    """
    h, w = shape
    big_shape = (h + 2 * margin, w + 2 * margin)
    features = []
    if regime == "deepsky":
        big = make_deepsky_scene(big_shape, seed=rng)
        return big, big[margin:margin + h, margin:margin + w].copy(), None, features
    if regime == "solar":
        texture = MEDIAN_TEXTURE if texture is None else float(texture)
        big, (cy, cx, radius), features = _solar_scene_real(big_shape, rng, limb=limb, texture=texture)
        for f in features:
            f["y"], f["x"] = f["y"] - margin, f["x"] - margin     # sensor coordinates at zero shift
    else:
        big, (cy, cx, radius) = _solar_scene(big_shape, rng, limb=limb, features=True,
                                             granule_size=6.0, granulation=0.03)
    yy, xx = np.ogrid[0:h, 0:w]
    allowed = np.hypot(yy + margin - cy, xx + margin - cx) < radius - margin - 3
    return big, big[margin:margin + h, margin:margin + w].copy(), allowed, features


def _render_video(path, big, truth, rng_noise, *, overwrite, progress_bar):
    """Stream the frames of ``truth`` (scene ``big`` shifted, times gain, dust, noise) to ``path``."""
    p = truth.params
    gain_map = (p["gain"] * truth.vignetting * truth.transmission).astype(np.float32)
    synth = _FrameSynth(big, p["margin"], gain_map, full_scale=p["full_scale"],
                        dtype=np.uint8 if p["bit_depth"] <= 8 else np.uint16,
                        noise=None if p["noise"] == "none" else p["noise"],
                        e_per_adu=p["e_per_adu"], read_noise_adu=READ_NOISE / p["e_per_adu"],
                        rng=rng_noise)
    _write_video(path, synth, truth.shifts, p, overwrite=overwrite, progress_bar=progress_bar)


def _write_video(path, synth, shifts, params, *, overwrite, progress_bar):
    from ..io.ser import SERWriter

    start = np.datetime64(params["start_time"], "us")
    step = np.timedelta64(int(round(1e6 / params["frame_rate"])), "us")
    h, w = synth.shape
    frames = range(len(shifts))
    if progress_bar:
        from tqdm.auto import tqdm

        frames = tqdm(frames, desc="simulate", unit="frame")
    with SERWriter(path, width=w, height=h, dtype=synth.dtype, pixel_depth=params["bit_depth"],
                   observer="aiflat_astro simulator",
                   instrument=f"sim mono {params['bit_depth']}-bit {params['pixel_size']:g}um",
                   telescope=f"sim f/{params['f_ratio']:g} {params['regime']}",
                   date_time=start, date_time_utc=start, overwrite=overwrite) as writer:
        for k in frames:
            writer.write(synth.frame(*shifts[k]), timestamp=start + k * step)


def write_truth(path, truth, *, overwrite=False):
    """Save a `DustyVideoTruth` as a FITS file (atomically).

    Layout: primary HDU = transmission (float32, ``BUNIT = ''``) with the
    key parameters as keywords; ``LABELS`` (int32), ``VIGNET`` (float32),
    ``SCENE`` (float32) images; ``SHADOWS`` and ``SHIFTS`` (``frame_index``,
    ``dy``, ``dx``) tables; ``PARAMS`` (all parameters as UTF-8 JSON).
    Every HDU carries ``ROWORDER = 'TOP-DOWN'`` and CHECKSUM/DATASUM.

    Parameters
    ----------
    path : str or `os.PathLike`
        Output FITS file.
    truth : `DustyVideoTruth`
        The ground truth.
    overwrite : bool, optional
        Replace an existing file.
    """
    p = truth.params
    primary = fits.PrimaryHDU(np.asarray(truth.transmission, dtype=np.float32))
    hdr = primary.header
    hdr["BUNIT"] = ("", "dimensionless transmission (dust only)")
    cards = [("CONTENT", "aiflat simulated ground truth", None),
             ("REGIME", p.get("regime"), "dust/scene regime"),
             ("FRATIO", p.get("f_ratio"), "focal ratio N"),
             ("PIXSIZE", p.get("pixel_size"), "[um] pixel size"),
             ("OBSTRUCT", p.get("obstruction"), "linear central obstruction"),
             ("NFRAMES", p.get("n_frames"), "frames in the video"),
             ("NSHADOWS", len(truth.shadows), "dust shadows"),
             ("DUSTFREE", p.get("dust_free"), "control video without dust"),
             ("DRIFT", p.get("drift"), "[pix] peak-to-peak drift"),
             ("JITTER", p.get("jitter"), "[pix] rms seeing jitter per axis"),
             ("BITDEPTH", p.get("bit_depth"), "bits per sample"),
             ("SIMGAIN", p.get("gain"), "[adu] per unit of scene"),
             ("EGAIN", p.get("e_per_adu"), "[electron/adu]"),
             ("RDNOISE", p.get("read_noise"), "[electron] read noise"),
             ("SEED", p.get("seed"), "random seed"),
             ("DUSTSEED", p.get("dust_seed"), "random seed of the dust")]
    for key, value, comment in cards:
        if value is not None:
            if isinstance(value, int) and abs(value) >= 2**63:   # a 128-bit entropy seed
                value = str(value)
            hdr[key] = (value, comment)
    if p.get("video"):
        hdr["VIDEO"] = (Path(p["video"]).name, "simulated video")
    hdr["PROCSOFT"] = (software_id(), "software and version")
    hdr["DATE"] = (utc_now(), "UTC date of file creation")
    images = [(truth.labels, np.int32, "LABELS"), (truth.vignetting, np.float32, "VIGNET"),
              (truth.scene, np.float32, "SCENE")]
    hdus = [primary] + [fits.ImageHDU(np.asarray(a, dtype=t), name=n) for a, t, n in images]
    shadows = Table(truth.shadows, copy=True)
    shadows.meta.clear()
    hdus.append(fits.table_to_hdu(shadows))
    hdus[-1].name = "SHADOWS"
    shifts = np.asarray(truth.shifts, dtype=np.float64).reshape(-1, 2)
    table = Table([np.arange(len(shifts), dtype=np.int32), shifts[:, 0], shifts[:, 1]],
                  names=("frame_index", "dy", "dx"), units=(None, "pix", "pix"))
    hdus.append(fits.table_to_hdu(table))
    hdus[-1].name = "SHIFTS"
    hdus.append(provjson_hdu(p, name="PARAMS"))
    for hdu in hdus:
        hdu.header["ROWORDER"] = ("TOP-DOWN", "row 0 is the top row, as in the SER video")
    with atomic_output(path, overwrite=overwrite) as tmp:
        fits.HDUList(hdus).writeto(tmp, checksum=True)


def read_truth(path):
    """Read a ground-truth FITS file written by `write_truth`.

    Parameters
    ----------
    path : str or `os.PathLike`
        The truth file.

    Returns
    -------
    `DustyVideoTruth`
        ``path`` is the simulated video: the recorded path, or a file of the
        same name next to the truth file when the recorded one has moved.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"truth file {str(path)!r} does not exist")
    try:
        with fits.open(path, memmap=False) as hdul:
            missing = [name for name in _EXTENSIONS if name not in hdul]
            if missing or hdul[0].header.get("CONTENT") != "aiflat simulated ground truth":
                raise InputError(f"{path.name} is not an aiflat ground-truth file "
                                 f"(missing {', '.join(missing) or 'CONTENT card'})")
            params = read_provjson(hdul, name="PARAMS")
            shadows = Table.read(hdul, hdu="SHADOWS")
            shifts_table = Table.read(hdul, hdu="SHIFTS")
            truth = DustyVideoTruth(
                transmission=hdul[0].data.astype(np.float32),
                labels=hdul["LABELS"].data.astype(np.int32),
                vignetting=hdul["VIGNET"].data.astype(np.float32),
                scene=hdul["SCENE"].data.astype(np.float32),
                shadows=shadows, shifts=np.column_stack([np.asarray(shifts_table["dy"], float),
                                                         np.asarray(shifts_table["dx"], float)]),
                params=params)
    except OSError as exc:
        raise InputError(f"cannot read {path.name} as FITS: {exc}") from None
    shadows.meta.clear()
    for col in ("kind",):
        if col in shadows.colnames and shadows[col].dtype.kind == "S":
            shadows[col] = shadows[col].astype(str)
    video = params.get("video")
    if video:
        video = Path(video)
        sibling = path.parent / video.name
        truth.path = sibling if not video.exists() and sibling.exists() else video
    return truth
