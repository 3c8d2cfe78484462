"""Validation on held-out dataset slices: convert them with the current model and score the result.

Conversion uses the inference path (`RVCSynthesizer.infer`: prior -> reverse flow -> decoder) on the slice's own
content features and pitch, so the output should reproduce the slice's audio. Two numbers per clip, both lower is
better, averaged over the clips:

* `mel_l1`: mean |log-mel(converted) − log-mel(original)| (the training mel loss without the ×45 weight);
* `mcd_db`: mel-cepstral distortion in dB of the converted audio against the slice, frame by frame (the conversion
  keeps the slice's timing), with the features and formula of `rvc-peft eval`
  (`rvc_peft.inference.evaluation.mel_cepstrum`, analysis at 16 kHz). Measured on a voice-lab target (flite awb,
  32 kHz lab base): 7.7 dB before fine-tuning, 5.5 dB after 40 LoRA steps, 19 dB for an untrained generator.
  NaN when the model outputs NaN or infinite samples.

There is no F0 metric: RVC's decoder builds its excitation from the slice's own F0 (the NSF sine source), so any
model that makes sound reproduces the reference F0 almost exactly (median ratio 1.00 even with damaged weights), and
the former F0 correlation measured the pitch tracker's voicing decisions on the output rather than the model: it
did not follow quality (it rose as the weights were damaged further) and could not help pick a checkpoint.

The sampling noise of `infer` is drawn under a fixed seed inside `torch.random.fork_rng`, so validating never
changes the training run's random stream (which keeps resumed runs exact) and repeated conversions are identical.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..features.spectrogram import mel_from_config
from ..models import RVCConfig
from .data import prepare_item

logger = logging.getLogger(__name__)

VALIDATION_SEED = 0


@dataclass
class ValidationClip:
    """One held-out slice, ready for `infer`: phone [1, T, E] (100 fps), pitch/pitchf [1, T] or None, sid [1]."""

    row: int
    phone: torch.Tensor
    pitch: torch.Tensor | None
    pitchf: torch.Tensor | None
    sid: torch.Tensor
    target: np.ndarray  # [T·hop] float32, the slice's audio

    @property
    def name(self) -> str:
        return f"clip{self.row}"


def select_validation_rows(num_rows: int, num_clips: int, seed: int) -> list[int]:
    """`num_clips` row numbers picked with `seed` (the same every run); [] when `num_clips` is 0."""
    if num_clips <= 0:
        return []
    order = np.random.default_rng(seed).permutation(num_rows)
    return sorted(int(i) for i in order[:num_clips])


def make_clip(row_number: int, row: dict[str, Any], config: RVCConfig) -> ValidationClip:
    item = prepare_item(row, config)
    return ValidationClip(
        row=row_number,
        phone=item["phone"][None],
        pitch=item["pitch"][None] if "pitch" in item else None,
        pitchf=item["pitchf"][None] if "pitchf" in item else None,
        sid=torch.tensor([item["speaker_id"]], dtype=torch.long),
        target=item["wave"].numpy(),
    )


@torch.no_grad()
def convert_clip(model: torch.nn.Module, clip: ValidationClip, *, seed: int = VALIDATION_SEED) -> np.ndarray:
    """Run `model.infer` on a clip (any RVC synthesizer, with or without adapters) -> float32 audio [T·hop]."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            lengths = torch.tensor([clip.phone.shape[1]], device=device)
            pitch = clip.pitch.to(device) if clip.pitch is not None else None
            pitchf = clip.pitchf.to(device) if clip.pitchf is not None else None
            audio, _, _ = model.infer(clip.phone.to(device), lengths, pitch, pitchf, clip.sid.to(device))
    finally:
        model.train(was_training)
    return audio[0, 0].float().cpu().numpy()


def mel_l1(audio: np.ndarray, target: np.ndarray, config: RVCConfig) -> float:
    """Mean absolute log-mel difference over the common frames."""
    mels = [mel_from_config(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None], config)[0]
            for x in (audio, target)]
    frames = min(m.shape[-1] for m in mels)
    return float(torch.mean(torch.abs(mels[0][:, :frames] - mels[1][:, :frames])))


def validation_cepstra(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Mel-cepstra c1..c24 [T, 24] of `audio` on `rvc-peft eval`'s 16 kHz, 10 ms grid."""
    from ..features.audio import resample
    from ..inference.evaluation import SAMPLE_RATE, mel_cepstrum

    audio16k = resample(np.ascontiguousarray(audio, dtype=np.float32), sample_rate, SAMPLE_RATE)
    return mel_cepstrum(audio16k)[:, 1:]


def mcd_db(audio: np.ndarray, target: np.ndarray, sample_rate: int) -> float:
    """Mean mel-cepstral distortion (dB) of `audio` against `target`, frame by frame over the common frames."""
    return _mcd_against(audio, validation_cepstra(target, sample_rate), sample_rate)


def _mcd_against(audio: np.ndarray, target_cepstra: np.ndarray, sample_rate: int) -> float:
    from ..inference.evaluation import mel_cepstral_distortion

    if not np.isfinite(audio).all():  # a diverged model: report it as NaN rather than failing the training run
        return math.nan
    cepstra = validation_cepstra(audio, sample_rate)
    frames = min(len(cepstra), len(target_cepstra))
    return float(np.mean(mel_cepstral_distortion(cepstra[:frames], target_cepstra[:frames])))


class Validator:
    """Converts the held-out clips and computes their metrics (main process only)."""

    def __init__(self, clips: list[ValidationClip], config: RVCConfig) -> None:
        self.clips = clips
        self.config = config
        self._target_cepstra: dict[int, np.ndarray] = {}  # the targets never change: analyze them once

    def __len__(self) -> int:
        return len(self.clips)

    def run(self, model: torch.nn.Module) -> tuple[dict[str, float], list[np.ndarray]]:
        """-> ({"mel_l1": mean, "mcd_db": mean}, converted audio per clip); NaN means when a clip's output is NaN."""
        outputs, mel_scores, mcd_scores = [], [], []
        rate = self.config.sampling_rate
        for clip in self.clips:
            audio = convert_clip(model, clip)
            outputs.append(audio)
            mel_scores.append(mel_l1(audio, clip.target, self.config))
            if clip.row not in self._target_cepstra:
                self._target_cepstra[clip.row] = validation_cepstra(clip.target, rate)
            mcd_scores.append(_mcd_against(audio, self._target_cepstra[clip.row], rate))
        return {"mel_l1": float(np.mean(mel_scores)), "mcd_db": float(np.mean(mcd_scores))}, outputs


def tensorboard_writer(accelerator: Any) -> Any | None:
    """The main process's TensorBoard `SummaryWriter` (None elsewhere, or when not logging to TensorBoard)."""
    if not accelerator.trackers or not accelerator.is_main_process:
        return None
    try:
        writer = accelerator.get_tracker("tensorboard", unwrap=True)
    except ValueError:
        return None
    return writer if hasattr(writer, "add_audio") else None


def log_validation(accelerator: Any, model: torch.nn.Module, validator: Validator, step: int,
                   last_mels: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict[str, float]:
    """Convert the held-out clips with `model` and log metrics, audio and the last training mels (this process).

    Returns the metrics ({} without held-out clips). Call it on the main process only: nothing here synchronises.
    """
    writer = tensorboard_writer(accelerator)
    if writer is not None and last_mels is not None:
        writer.add_image("mel/train_target", mel_image(last_mels[0]), step, dataformats="HW")
        writer.add_image("mel/train_generated", mel_image(last_mels[1]), step, dataformats="HW")
    if not len(validator):
        return {}
    metrics, outputs = validator.run(model)
    accelerator.log({f"validation/{k}": v for k, v in metrics.items()}, step=step)
    if writer is not None:
        for clip, audio in zip(validator.clips, outputs):
            writer.add_audio(f"validation/{clip.name}", torch.from_numpy(audio)[None], step,
                             sample_rate=validator.config.sampling_rate)
    logger.info("step %d validation: %s", step, ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    return metrics


def mel_image(mel: torch.Tensor) -> np.ndarray:
    """A log-mel [n_mels, T] as a [n_mels, T] image in 0..1, low frequencies at the bottom (for TensorBoard)."""
    mel = mel.detach().float().cpu()
    low, high = float(mel.min()), float(mel.max())
    image = (mel - low) / (high - low) if high > low else torch.zeros_like(mel)
    return image.flip(0).numpy()
