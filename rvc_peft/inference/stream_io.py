"""Driving a `StreamingConverter` from a file (`stream_file`) or from audio devices (`stream_live`, sounddevice)."""

from __future__ import annotations

import os
import queue
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .audio_io import AudioInput, ConversionError, prepare_audio, write_audio
from .segmentation import SAMPLE_RATE
from .streaming import StreamingConverter


class LiveAudioError(OSError):
    """Live streaming cannot start: `sounddevice` (PortAudio) is missing or no usable audio device exists."""


@dataclass
class StreamResult:
    """What `stream_file` produced: audio aligned with the input (float32 [N] at `sample_rate`) and the report."""

    audio: np.ndarray
    sample_rate: int
    report: dict[str, Any]
    path: Path | None = None


def stream_file(
    streamer: StreamingConverter,
    audio_or_path: AudioInput,
    output_path: str | os.PathLike | None = None,
    *,
    chunk_samples: int | None = None,
    input_sample_rate: int | None = None,
    subtype: str = "PCM_16",
    overwrite: bool = True,
) -> StreamResult:
    """Stream a file (or array) through `streamer` in chunks, as a device would deliver it.

    The input is read like `convert` reads it (16 kHz mono, peak-limited to 0.95) and fed `chunk_samples` at a time
    (default: one block). The output has the stream delay removed and the input's duration:
    `round(L · sample_rate / 16000)` samples lining up with `convert`'s output. Written atomically to
    `output_path` when given (never over the input; `overwrite=False` takes the next free name, see `write_audio`). The report is `StreamingReport.as_dict()` plus
    `audio_seconds` and `offsets_ms` statistics.
    """
    if output_path is not None and isinstance(audio_or_path, (str, os.PathLike)) and \
            Path(output_path).resolve() == Path(audio_or_path).resolve():
        raise ConversionError(str(audio_or_path), "the output path is the input file; refusing to overwrite it")
    audio, _ = prepare_audio(audio_or_path, input_sample_rate)
    chunk = int(chunk_samples) if chunk_samples is not None else streamer.input_block_samples
    if chunk < 1:
        raise ValueError(f"chunk_samples must be at least 1, got {chunk_samples}")
    streamer.reset()
    pieces = [streamer.process(audio[start : start + chunk]) for start in range(0, len(audio), chunk)]
    offsets = list(streamer.last_offsets)
    pieces.append(streamer.flush())
    offsets += streamer.last_offsets
    length = round(len(audio) * streamer.sample_rate / SAMPLE_RATE)
    delay = streamer.output_delay_samples
    converted = np.concatenate(pieces)[delay : delay + length]
    converted = np.pad(converted, (0, length - len(converted)))  # cannot trigger: flush covers input + delay
    report = streamer.report.as_dict()
    report["audio_seconds"] = round(len(audio) / SAMPLE_RATE, 3)
    report["output_delay_ms"] = round(1000 * delay / streamer.sample_rate, 3)
    report["sola_offset_ms_max"] = round(1000 * max(offsets, default=0) / streamer.sample_rate, 3)
    written = None
    if output_path is not None:
        written = write_audio(output_path, converted, streamer.sample_rate, subtype=subtype, overwrite=overwrite)
    return StreamResult(converted, streamer.sample_rate, report, written)


def live_audio_module() -> Any:
    """`sounddevice`, imported; `LiveAudioError` saying what to install when it (or PortAudio) is missing."""
    try:
        import sounddevice
    except (ImportError, OSError) as err:  # OSError: sounddevice is installed but PortAudio's library is missing
        raise LiveAudioError(f"live streaming needs the optional package sounddevice and the PortAudio library "
                             f"(pip install sounddevice; apt-get install libportaudio2): {err}") from err
    return sounddevice


def _device(value: int | str | None) -> int | str | None:
    """sounddevice takes a device index or a part of its name; "3" on a command line means index 3."""
    return int(value) if isinstance(value, str) and value.strip().isdigit() else value


def stream_live(
    streamer: StreamingConverter,
    *,
    seconds: float | None = None,
    input_device: int | str | None = None,
    output_device: int | str | None = None,
) -> dict[str, Any]:
    """Convert the microphone to the speakers through `streamer` until `seconds` pass (None: until Ctrl-C).

    Needs the optional package `sounddevice` and an input and an output device; raises `LiveAudioError` saying
    which is missing. Returns the stream's report (`StreamingReport.as_dict()`).
    """
    sd = live_audio_module()
    input_device, output_device = _device(input_device), _device(output_device)
    try:
        sd.check_input_settings(device=input_device, channels=1, samplerate=SAMPLE_RATE, dtype="float32")
        sd.check_output_settings(device=output_device, channels=1, samplerate=streamer.sample_rate, dtype="float32")
    except Exception as err:  # sounddevice raises PortAudioError or ValueError for missing/unsuitable devices
        raise LiveAudioError(f"no usable audio device for live streaming (16 kHz mono in, {streamer.sample_rate} Hz "
                             f"mono out): {err}") from err
    blocks: queue.Queue[np.ndarray] = queue.Queue()

    def on_input(indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        blocks.put(indata[:, 0].copy())

    streamer.reset()
    started = time.monotonic()
    with sd.InputStream(samplerate=SAMPLE_RATE, blocksize=streamer.input_block_samples, channels=1, dtype="float32",
                        device=input_device, callback=on_input), \
            sd.OutputStream(samplerate=streamer.sample_rate, channels=1, dtype="float32", device=output_device) as out:
        try:
            while seconds is None or time.monotonic() - started < seconds:
                try:
                    converted = streamer.process(blocks.get(timeout=1.0))
                except queue.Empty:
                    continue
                if converted.size:
                    out.write(converted[:, None])
        except KeyboardInterrupt:
            pass
    return streamer.report.as_dict()
