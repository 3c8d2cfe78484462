"""What the web app does, without any UI: one base, a bank of voices on it, conversions, comparisons, exports.

`Studio` owns one `VoiceConverter` (the base is loaded once, on first use; `base_loads` counts the loads so tests
and the Voices tab can show that switching and blending never reload it). Every public method either returns its
result or raises `AppError` with a message meant for the page (naming the file or voice and what to do); the UI
shows that message and never a traceback. A lock serialises the work on the shared model: two browser tabs
converting at once each get their own result, one after the other.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..inference.settings import ConversionSettings

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".m4a", ".aac", ".opus", ".webm", ".aiff", ".aif")
SILENCE_PEAK = 1e-3  # peak below which an input counts as silent (-60 dBFS): nothing to convert
MIN_SECONDS = 0.25  # shorter inputs give no usable pitch or content frames
VOICE_TABLE_HEADERS = ["voice", "kind", "base", "rank", "size (MB)", "sample rate", "speaker id"]


class AppError(ValueError):
    """A problem to show on the page as is (bad input, unknown voice, failed export); no traceback."""


@dataclass
class ConversionResult:
    """One converted input: the written wav, its rate and length, the comparison figure and metrics, timing."""

    voice: str
    path: Path
    sample_rate: int
    samples: int
    seconds: float
    figure: Path | None = None
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def message(self) -> str:
        return (f"Converted with **{self.voice}**: {self.samples / self.sample_rate:.2f} s at {self.sample_rate} Hz "
                f"in {self.seconds:.1f} s.")


def read_input_audio(path: str | os.PathLike | None) -> tuple[np.ndarray, int]:
    """Read an uploaded or recorded file for conversion; `AppError` names the file when it cannot be used.

    Returns (mono float32 audio [N], sample rate). Refuses: no file, a type that is not audio, an unreadable or
    empty file, one shorter than `MIN_SECONDS`, and silence (peak under `SILENCE_PEAK`).
    """
    if path is None or str(path) == "":
        raise AppError("No audio yet: upload a file or record something first.")
    path = Path(path)
    name = path.name
    if path.suffix.lower() not in AUDIO_SUFFIXES:
        raise AppError(f"{name} is not an audio file (expected one of {', '.join(AUDIO_SUFFIXES)}); "
                       "upload a recording such as a .wav or .mp3.")
    try:
        from ..features.audio import load_audio

        audio = np.asarray(load_audio(path, 16000), dtype=np.float32).reshape(-1)
    except Exception as err:  # noqa: BLE001 - soundfile, audioread and ffmpeg each raise their own types
        raise AppError(f"{name} could not be read as audio ({type(err).__name__}: {str(err)[:200]}); "
                       "is the file damaged or in an unusual format?") from None
    if audio.size < MIN_SECONDS * 16000:
        raise AppError(f"{name} is too short ({audio.size / 16000:.2f} s); record at least {MIN_SECONDS} s.")
    if not np.isfinite(audio).all():
        raise AppError(f"{name} holds invalid samples (NaN or infinite values).")
    peak = float(np.abs(audio).max())
    if peak < SILENCE_PEAK:
        raise AppError(f"{name} is silent (peak {20 * np.log10(max(peak, 1e-12)):.0f} dBFS): there is no voice to "
                       "convert. Check the microphone or pick another file.")
    return audio, 16000


class Studio:
    """The app's model state: a `VoiceConverter` on one base with a bank of voices (see the module docstring).

    Args:
        base: RVC base G file or Hub reference (default: the voice-lab base shipped with rvc-peft).
        content_encoder: its content encoder (default: the voice-lab encoder; required with another `base`).
        work_dir: where results, figures and exports go (default: a new temporary folder).
        seed: the synthesizer's noise seed (a fixed seed makes repeated conversions identical).
    """

    def __init__(self, base: str | os.PathLike | None = None, content_encoder: str | os.PathLike | None = None,
                 work_dir: str | os.PathLike | None = None, *, seed: int | None = 0) -> None:
        if base is None:
            from ..lab import lab_base_files

            lab = lab_base_files()
            base, content_encoder = lab.synthesizer, content_encoder or lab.content_encoder
        elif content_encoder is None:
            raise AppError(f"the base {base} needs its content encoder (--content-encoder): the one it was trained "
                           "with")
        self.base_path = str(base)
        self.content_encoder_path = str(content_encoder)
        self.work_dir = Path(work_dir) if work_dir is not None else Path(tempfile.mkdtemp(prefix="rvc-peft-app-"))
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.seed = seed
        self.base_loads = 0  # how often a base was loaded: stays 1 however many voices are added, switched, blended
        self.version = 0  # bumped whenever the voice list changes, so the UI knows when to refresh its lists
        self.lock = threading.RLock()
        self._converter: Any = None

    # --- the model --------------------------------------------------------------------------------------------
    @property
    def converter(self) -> Any:
        """The `VoiceConverter`, loading the base and content encoder on first use."""
        with self.lock:
            if self._converter is None:
                from ..inference.pipeline import VoiceConverter

                try:
                    self._converter = VoiceConverter.from_pretrained(
                        self.base_path, content_encoder=self.content_encoder_path, f0_method="harvest",
                        seed=self.seed)
                except (ValueError, OSError) as err:
                    raise AppError(f"cannot load the base {self.base_path}: {err}") from None
                self.base_loads += 1
            return self._converter

    @property
    def bank(self) -> Any:
        return self.converter.voices

    @property
    def base_name(self) -> str:
        return Path(self.base_path).name

    def voice_names(self) -> list[str]:
        with self.lock:
            return list(self.bank.names)

    # --- voices -----------------------------------------------------------------------------------------------
    def add_voice(self, source: str, name: str | None = None) -> str:
        """Load an adapter (local folder or Hub id) as a voice; returns the voice's name. The base stays loaded."""
        source = (source or "").strip()
        if not source:
            raise AppError("Enter an adapter folder or a Hub id (user/name) to add a voice.")
        name = (name or "").strip() or None
        from ..inference.voices import VoiceError

        with self.lock:
            try:
                voice = self.bank.add_voice(source, name=name)
            except (VoiceError, ValueError, OSError) as err:
                raise AppError(_one_line(err)) from None
            self.version += 1
            return voice.name

    def blend(self, name: str, weights: dict[str, float]) -> str:
        """Make voice `name` from {voice: weight} (two or more voices, weights not all zero); returns its name."""
        name = (name or "").strip()
        used = {voice: float(w) for voice, w in weights.items() if voice and float(w) != 0.0}
        if len(used) < 2:
            raise AppError("A blend needs at least two voices with non-zero weights.")
        if not name:
            name = "_".join(used) + "_blend"
        from ..inference.voices import VoiceError

        with self.lock:
            try:
                voice = self.bank.blend(name, used)
            except (VoiceError, ValueError) as err:
                raise AppError(_one_line(err)) from None
            self.version += 1
            return voice.name

    def remove_voice(self, name: str) -> None:
        from ..inference.voices import VoiceError

        with self.lock:
            try:
                self.bank.remove_voice(name)
            except VoiceError as err:
                raise AppError(_one_line(err)) from None
            self.version += 1

    def voice_facts(self, name: str) -> dict[str, Any]:
        """Base, rank, size (MB of float32 LoRA weights), sample rate, speaker id and kind of one voice."""
        with self.lock:
            voice = self._voice(name)
            peft_model = self.bank.peft_model
            config = peft_model.peft_config[name]
            marker = f".{name}."
            count = sum(p.numel() for n, p in peft_model.named_parameters() if marker in n)
            facts = voice.facts or {}
            base = (facts.get("base_model") or {}).get("name_or_path") or self.base_name
            kind = ("blend of " + " + ".join(f"{w:g}×{v}" for v, w in voice.blend_of.items())
                    if voice.blend_of else "adapter")
            return {"voice": name, "kind": kind, "base": Path(str(base)).name, "rank": int(config.r),
                    "size (MB)": round(count * 4 / 1e6, 2),
                    "sample rate": int(facts.get("sampling_rate") or self.converter.sample_rate),
                    "speaker id": voice.speaker_id if voice.speaker_id is not None else 0}

    def voice_table(self) -> list[list[Any]]:
        """One row per voice, columns `VOICE_TABLE_HEADERS`."""
        with self.lock:
            return [[self.voice_facts(n)[h] for h in VOICE_TABLE_HEADERS] for n in self.bank.names]

    def bank_summary(self) -> str:
        """A line about the base: which, how often loaded, the last switch time."""
        with self.lock:
            bank = self.bank
            return (f"Base **{self.base_name}** ({self.converter.sample_rate} Hz), loaded {self.base_loads}× — "
                    f"{len(bank.names)} voice(s); the last switch took {1000 * bank.last_switch_seconds:.1f} ms "
                    "(no base reload).")

    def _voice(self, name: str) -> Any:
        from ..inference.voices import VoiceError

        if not name:
            raise AppError("Pick a voice first (add one in the Voices tab if the list is empty).")
        try:
            return self.bank.voice(name)
        except VoiceError as err:
            raise AppError(_one_line(err)) from None

    # --- converting -------------------------------------------------------------------------------------------
    def convert(self, audio_path: str | os.PathLike | None, voice: str, settings: ConversionSettings, *,
                figure: bool = True, quality: bool = False) -> ConversionResult:
        """Convert one file with one voice; writes `results/<id>.wav` (and the comparison figure) in `work_dir`.

        `settings`: the library's `rvc_peft.inference.ConversionSettings` (pitch shift, F0 method, index rate,
        protect, RMS mix, ...), used as `VoiceConverter.convert(settings=...)` uses them.
        """
        audio, rate = read_input_audio(audio_path)
        return self._convert_array(audio, rate, Path(str(audio_path)).name, voice, settings, figure, quality)

    def compare(self, audio_path: str | os.PathLike | None, voices: list[str], settings: ConversionSettings, *,
                quality: bool = False) -> list[ConversionResult]:
        """The same input converted by each voice, each with the evaluation metrics against the input."""
        if not voices:
            raise AppError("Pick at least one voice to compare.")
        audio, rate = read_input_audio(audio_path)
        name = Path(str(audio_path)).name
        return [self._convert_array(audio, rate, name, v, settings, True, quality) for v in voices]

    def _convert_array(self, audio: np.ndarray, rate: int, name: str, voice: str, settings: ConversionSettings,
                       figure: bool, quality: bool) -> ConversionResult:
        from ..inference.audio_io import write_audio

        started = time.perf_counter()
        with self.lock:
            self._voice(voice)
            try:
                converted, out_rate = self.converter.convert((audio, rate), voice=voice, settings=settings)
            except (ValueError, OSError, ImportError) as err:  # ConversionError, PitchError, bad settings
                raise AppError(f"{name}: {_one_line(err)}") from None
        if not np.isfinite(converted).all() or converted.size == 0:
            raise AppError(f"{name}: the voice {voice!r} produced no usable audio (empty or NaN output)")
        stem = f"{Path(name).stem}-{voice}-{uuid.uuid4().hex[:8]}"
        results = self.work_dir / "results"
        path = write_audio(results / f"{stem}.wav", converted, out_rate)
        result = ConversionResult(voice, Path(path), out_rate, int(converted.size), time.perf_counter() - started)
        if figure:
            from ..inference.evaluation import evaluate

            try:
                metrics = evaluate((converted, out_rate), (audio, rate), f0_method="pm",
                                   figure=results / f"{stem}.png", quality=quality or None)
            except (ValueError, ImportError) as err:  # e.g. a missing pitch package: the audio is still there
                result.metrics = {"note": f"no comparison figure: {_one_line(err)}"}
            else:
                result.figure = Path(metrics.pop("figure"))
                result.metrics = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and v is not None}
        result.seconds = time.perf_counter() - started
        return result

    # --- export -----------------------------------------------------------------------------------------------
    def save_adapter(self, name: str, folder: str | os.PathLike) -> Path:
        """Write one voice (adapter or blend) as a PEFT adapter folder; returns the folder with its files."""
        with self.lock:
            self._voice(name)
            self.bank.peft_model.save_pretrained(str(folder), selected_adapters=[name])
        saved = Path(folder) / name if (Path(folder) / name / "adapter_config.json").is_file() else Path(folder)
        return saved

    def export_pth(self, name: str, flavor: str = "webui") -> Path:
        """Write voice `name` merged into the base as an RVC `.pth` (WebUI/Applio load it); returns its path.

        The merge happens on a fresh copy of the base read from its file, so the voice bank is not touched.
        """
        from ..tuners.api import export_merged_voice

        with tempfile.TemporaryDirectory(dir=self.work_dir) as tmp:
            folder = self.save_adapter(name, tmp)
            out = self.work_dir / "exports" / f"{name}.pth"
            try:
                export_merged_voice(self.base_path, folder, out, flavor=flavor)
            except (ValueError, OSError) as err:
                raise AppError(f"cannot export {name!r}: {_one_line(err)}") from None
        return out

    def push_to_hub(self, name: str, repo_id: str, token: str | None = None, private: bool = True) -> str:
        """Upload voice `name` as a PEFT adapter repository; returns the commit URL. Needs a network and a token.

        The voice's own adapter files and RVC model card go to the top of the repository
        (`push_adapter_to_hub(..., adapter_name=name)`), so that `Studio.add_voice(repo_id)`,
        `PeftModel.from_pretrained(base, repo_id)` and `rvc-peft convert --adapter repo_id` load it.
        """
        repo_id = (repo_id or "").strip()
        if repo_id.count("/") != 1 or not all(repo_id.split("/")):
            raise AppError("Enter the Hub repository as user/name (e.g. alice/my-rvc-voice).")
        from ..tuners.api import push_adapter_to_hub

        with self.lock:
            self._voice(name)
            try:
                info = push_adapter_to_hub(self.bank.peft_model, repo_id, adapter_name=name, private=private,
                                           token=token or None,
                                           commit_message=f"Upload RVC voice adapter {name} (rvc-peft app)")
            except Exception as err:  # noqa: BLE001 - network, auth and hub errors come in many types
                raise AppError(f"cannot push {name!r} to {repo_id}: {_one_line(err)}") from None
        return str(getattr(info, "commit_url", info))


def _one_line(err: BaseException) -> str:
    """An exception's message on one line, without the traceback and clipped for the page."""
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 600 else text[:597] + "..."
