"""Input audio for the examples: a sentence spoken by espeak-ng, or a synthetic voiced signal without it."""

from __future__ import annotations

from pathlib import Path


def spoken_or_synthetic(folder: Path, text: str) -> Path:
    """Write `text` spoken by espeak-ng (voice-lab voice espeak-en-us-m1) to folder/input.wav, or 3 s of a synthetic
    voiced signal when espeak-ng is not installed; returns the file's path."""
    import soundfile as sf

    from rvc_peft.lab.corpus import VOICES

    voice = VOICES["espeak-en-us-m1"]
    if voice.unavailable_reason() is None:
        audio, rate = voice.synthesize(text)
    else:
        from rvc_peft.features.synthetic import voiced_signal

        audio, rate = voiced_signal(140.0, 3.0, sample_rate=16000, seed=0)[0], 16000
    sf.write(str(folder / "input.wav"), audio, rate)
    return folder / "input.wav"
