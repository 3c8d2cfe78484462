"""Pretraining the voice lab's base: an RVC synthesizer + discriminator trained from scratch on the corpus's base
speakers with RVC's full objective, saved as `f0G32k.pth` / `f0D32k.pth` like RVC's released bases.

Two steps, so the expensive one can run on a machine that has a GPU but none of the speech tools:

1. `pack_corpus(corpus_dir, pack_file)`: the base speakers' training sentences at 16 kHz (int16) with their F0
   (a real pitch extractor, 100 frames/s) in one `.npz` (no pickles: plain arrays and a JSON string).
2. `pretrain(pack_file, out_dir, ...)`: content features from the lab content encoder, RVC's alignment (features
   ×2 to 100 fps, linear spectrogram, coarse pitch), then G/D steps with RVC's losses (mel L1 ×45, KL, feature
   matching ×2, LSGAN) and AdamW(0.8, 0.99) as RVC trains; everything lives on the device, batches are random
   windows of `crop_frames` frames.

Configs: `compact` (13.5 M parameters, 27 MB as an fp16 base: hidden 128, filter 512, 4 attention layers, decoder
width 256 — what the repository ships) and `full` (RVC's v2 32k numbers, 36.9 M parameters, for a GPU).
"""

from __future__ import annotations

import json
import math
import platform
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..checkpoints.export import save_rvc_checkpoint
from ..features.lab_encoder import MFCCContentEncoder, lab_content_encoder
from ..features.pitch import f0_to_coarse
from ..features.spectrogram import linear_spectrogram, mel_from_config
from ..models import MultiPeriodDiscriminator, RVCConfig, RVCSynthesizer
from ..models.synthesizer import slice_segments
from ..training.losses import discriminator_loss, feature_loss, generator_loss, kl_loss, mel_loss
from ..utils.files import atomic_write

LAB_SAMPLE_RATE = 32000
PACK_VERSION = 1
CONFIGS: dict[str, dict[str, Any]] = {
    "compact": {"hidden_channels": 128, "filter_channels": 512, "n_layers": 4, "upsample_initial_channel": 256},
    "full": {},
}


def lab_config(size: str = "compact") -> RVCConfig:
    """The lab base's `RVCConfig`: RVC v2 32k with pitch (NSF decoder), `size` "compact" or "full"."""
    if size not in CONFIGS:
        raise ValueError(f"unknown lab config {size!r}; choose from {', '.join(CONFIGS)}")
    return RVCConfig.from_preset(LAB_SAMPLE_RATE, "v2", True, **CONFIGS[size])


# --- 1. the pack ---------------------------------------------------------------------------------------------------

def pack_corpus(corpus_dir: str | Path, pack_file: str | Path, *, speakers: Sequence[str] | None = None,
                f0_method: str = "harvest", progress: bool = True) -> Path:
    """Base speakers' train sentences (16 kHz int16) + F0 (Hz, 100 fps) -> one `.npz`; returns its path."""
    from tqdm.auto import tqdm

    from ..features.audio import load_audio
    from ..features.pitch import extract_f0
    from .corpus import base_speakers, load_manifest, speaker_files

    manifest = load_manifest(corpus_dir)
    speakers = list(speakers) if speakers is not None else base_speakers(manifest)
    files = [(sid, path) for sid, name in enumerate(speakers) for path in speaker_files(manifest, name, "train")]
    audio, f0, speaker, names = [], [], [], []
    for sid, path in tqdm(files, desc="packing corpus", disable=not progress):
        wav = load_audio(path, 16000)
        audio.append(np.clip(np.round(wav * 32767.0), -32768, 32767).astype(np.int16))
        f0.append(extract_f0(wav, f0_method).astype(np.float32))
        speaker.append(sid)
        names.append(str(Path(path).relative_to(Path(corpus_dir).resolve())))
    meta = {"pack_version": PACK_VERSION, "corpus_version": manifest.get("corpus_version"), "f0_method": f0_method,
            "speakers": speakers, "files": names, "sample_rate": 16000, "f0_rate": 100}
    arrays = {"audio16k": np.concatenate(audio), "audio_offsets": np.cumsum([0] + [len(a) for a in audio]),
              "f0": np.concatenate(f0), "f0_offsets": np.cumsum([0] + [len(x) for x in f0]),
              "speaker": np.asarray(speaker, dtype=np.int64), "meta": np.asarray(json.dumps(meta))}
    pack_file = Path(pack_file)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:  # a file object: np.savez would append ".npz" to a path
            np.savez(handle, **arrays)

    atomic_write(pack_file, write)
    return pack_file


def load_pack(pack_file: str | Path) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray, dict[str, Any]]:
    """-> (audio16k float32 per utterance, F0 per utterance, speaker ids, meta). Refuses pickled arrays."""
    with np.load(pack_file, allow_pickle=False) as data:
        meta = json.loads(str(data["meta"]))
        if meta.get("pack_version") != PACK_VERSION:
            raise ValueError(f"{pack_file}: pack version {meta.get('pack_version')}, expected {PACK_VERSION}")
        a_off, f_off = data["audio_offsets"], data["f0_offsets"]
        audio = [data["audio16k"][a_off[i]:a_off[i + 1]].astype(np.float32) / 32768.0 for i in range(len(a_off) - 1)]
        f0 = [data["f0"][f_off[i]:f_off[i + 1]] for i in range(len(f_off) - 1)]
        return audio, f0, data["speaker"].copy(), meta


# --- 2. training ---------------------------------------------------------------------------------------------------

@dataclass
class PretrainSettings:
    """Everything that decides a pretraining run (recorded in the model card)."""

    size: str = "compact"
    max_steps: int = 20000
    max_minutes: float | None = None  # stop early (and save) when the wall-clock budget is spent
    batch_size: int = 16
    crop_frames: int = 120  # frames of each item the prior/posterior see; the decoder sees config's 40
    learning_rate: float = 2e-4
    betas: tuple[float, float] = (0.8, 0.99)
    precision: str = "bf16"  # autocast dtype on CUDA ("fp32" to disable); CPU runs in fp32
    seed: int = 1234
    log_every: int = 100
    save_every_minutes: float = 3.0
    history: list[dict[str, float]] = field(default_factory=list, repr=False)


class TrainingUtterances:
    """Utterances on the device, aligned the way RVC's data loader aligns a training item; `batch()` draws random
    windows of `crop` frames (used by `pretrain` and by `benchmarks/bench_quality.py`)."""

    def __init__(self, audio: list[np.ndarray], f0: list[np.ndarray], speaker: np.ndarray, config: RVCConfig,
                 encoder: MFCCContentEncoder, device: torch.device, min_frames: int) -> None:
        from scipy.signal import resample_poly

        hop, up = config.hop_length, config.sampling_rate // 16000
        self.items: list[dict[str, torch.Tensor]] = []
        for wav16, pitchf, sid in zip(audio, f0, speaker.tolist(), strict=True):
            wave = torch.from_numpy(resample_poly(wav16, up, 1).astype(np.float32))
            with torch.no_grad():
                phone = encoder(torch.from_numpy(wav16)[None])[0].repeat_interleave(2, dim=0)  # 50 -> 100 fps
            frames = min(len(wave) // hop, phone.shape[0], len(pitchf))
            if frames < min_frames:
                continue
            wave = wave[: frames * hop].to(device)
            self.items.append({
                "wave": wave, "phone": phone[:frames].to(device),
                "pitchf": torch.from_numpy(pitchf[:frames].copy()).to(device),
                "pitch": torch.from_numpy(f0_to_coarse(pitchf[:frames])).to(device),
                "spec": linear_spectrogram(wave, config.filter_length, hop, config.win_length)[:, :frames],
                "sid": torch.tensor(sid, device=device),
            })
        if not self.items:
            raise ValueError(f"no utterance has {min_frames} frames; lower crop_frames")
        self.hop = hop

    def batch(self, size: int, crop: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        picks = torch.randint(len(self.items), (size,), generator=generator).tolist()
        rows: dict[str, list[torch.Tensor]] = {k: [] for k in ("phone", "pitch", "pitchf", "spec", "wave", "sid")}
        for i in picks:
            item = self.items[i]
            frames = item["phone"].shape[0]
            start = int(torch.randint(frames - crop + 1, (1,), generator=generator))
            rows["phone"].append(item["phone"][start:start + crop])
            rows["pitch"].append(item["pitch"][start:start + crop])
            rows["pitchf"].append(item["pitchf"][start:start + crop])
            rows["spec"].append(item["spec"][:, start:start + crop])
            rows["wave"].append(item["wave"][start * self.hop:(start + crop) * self.hop])
            rows["sid"].append(item["sid"])
        return {k: torch.stack(v) for k, v in rows.items()}


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def pretrain(pack_file: str | Path, out_dir: str | Path, settings: PretrainSettings | None = None, *,
             device: str | torch.device | None = None, encoder: MFCCContentEncoder | None = None,
             progress: bool = True) -> dict[str, Any]:
    """Train the lab base on a pack; writes `f0G32k.pth`, `f0D32k.pth` (RVC base files), `content_encoder/`,
    `training.json` and a model card `README.md` into `out_dir` (also part-way, every `save_every_minutes`).
    Returns the summary written to `training.json`."""
    settings = settings or PretrainSettings()
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    out_dir = Path(out_dir)
    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    config = lab_config(settings.size)
    encoder = encoder or lab_content_encoder("v2")
    audio, f0, speaker, meta = load_pack(pack_file)
    started = time.perf_counter()
    data = TrainingUtterances(audio, f0, speaker, config, encoder, device, settings.crop_frames)
    prepared_s = time.perf_counter() - started

    model = RVCSynthesizer(config).to(device).train()
    disc = MultiPeriodDiscriminator("v2").to(device).train()
    opt_g = torch.optim.AdamW(model.parameters(), settings.learning_rate, betas=settings.betas, eps=1e-9)
    opt_d = torch.optim.AdamW(disc.parameters(), settings.learning_rate, betas=settings.betas, eps=1e-9)
    autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(settings.precision)
    use_autocast = device.type == "cuda" and autocast_dtype is not None
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    hop, seg = config.hop_length, model.segment_frames
    lengths = torch.full((settings.batch_size,), settings.crop_frames, device=device, dtype=torch.long)

    def save(step: int, elapsed: float, final: bool) -> dict[str, Any]:
        summary = {"step": step, "final": final, "wall_clock_s": round(elapsed, 1), "prepare_s": round(prepared_s, 1),
                   "device": _device_name(device), "torch": torch.__version__, "settings": asdict(settings),
                   "config": CONFIGS[settings.size] | {"preset": "v2 32k with pitch"}, "pack": meta | {"files": len(
                       meta["files"])}, "utterances_used": len(data.items),
                   "parameters_g": sum(p.numel() for p in model.parameters()),
                   "parameters_d": sum(p.numel() for p in disc.parameters())}
        summary["settings"].pop("history")
        summary["history"] = settings.history
        save_rvc_checkpoint(model, out_dir / "f0G32k.pth", kind="base")
        save_rvc_checkpoint(disc, out_dir / "f0D32k.pth", kind="base")
        encoder.save_pretrained(out_dir / "content_encoder")
        atomic_write(out_dir / "training.json", lambda tmp: tmp.write_text(json.dumps(summary, indent=1)))
        atomic_write(out_dir / "README.md", lambda tmp: tmp.write_text(model_card(summary)))
        return summary

    from tqdm.auto import tqdm

    names = ("d", "mel", "kl", "fm", "gen")
    sums = torch.zeros(len(names), dtype=torch.float64, device=device)  # read back at log time only: no per-step sync
    last_save = time.perf_counter()
    step = 0
    bar = tqdm(total=settings.max_steps, desc="pretraining", disable=not progress)
    for step in range(1, settings.max_steps + 1):
        batch = data.batch(settings.batch_size, settings.crop_frames, generator)
        with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=use_autocast):
            y_hat, ids, _, z_mask, (_, z_p, m_p, logs_p, _, logs_q) = model(
                batch["phone"], lengths, batch["pitch"], batch["pitchf"], batch["spec"], lengths, batch["sid"])
        wave = slice_segments(batch["wave"], ids * hop, seg * hop)[:, None]
        y_hat = y_hat.float()
        with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=use_autocast):
            real, fake, _, _ = disc(wave, y_hat.detach())
        loss_d, _, _ = discriminator_loss(real, fake)
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=use_autocast):
            _, fake, fmap_r, fmap_g = disc(wave, y_hat)
        loss_mel = mel_loss(mel_from_config(wave[:, 0], config), mel_from_config(y_hat[:, 0], config))
        loss_kl = kl_loss(z_p, logs_q, m_p, logs_p, z_mask)
        loss_fm = feature_loss(fmap_r, fmap_g)
        loss_gen, _ = generator_loss(fake)
        loss_g = loss_mel + loss_kl + loss_fm + loss_gen
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        sums += torch.stack([loss_d, loss_mel, loss_kl, loss_fm, loss_gen]).detach().double()
        bar.update(1)
        elapsed = time.perf_counter() - started
        if step % settings.log_every == 0:
            entry = {"step": step, "minutes": round(elapsed / 60, 2)} | {
                k: round(v / settings.log_every, 4) for k, v in zip(names, sums.tolist(), strict=True)}
            if not all(math.isfinite(v) for v in entry.values()):
                raise FloatingPointError(f"non-finite loss at step {step}: {entry}")
            settings.history.append(entry)
            bar.write(json.dumps(entry))
            sums.zero_()
        if settings.max_minutes is not None and elapsed > settings.max_minutes * 60:
            break
        if time.perf_counter() - last_save > settings.save_every_minutes * 60:
            save(step, elapsed, final=False)
            last_save = time.perf_counter()
    bar.close()
    return save(step, time.perf_counter() - started, final=True)


def model_card(summary: dict[str, Any]) -> str:
    """The lab base's model card: what it is, how it was made, and what it is not."""
    last = summary["history"][-1] if summary["history"] else {}
    s = summary["settings"]
    return f"""---
library_name: rvc-peft
tags: [rvc, voice-conversion, lab-base]
license: mit
---
# rvc-peft voice-lab base (RVC v2 32k, {s['size']})

An RVC synthesizer (`f0G32k.pth`) and discriminator (`f0D32k.pth`) in RVC's own base-file format, trained from
scratch on **synthetic** speech only: {len(summary['pack']['speakers'])} offline TTS voices (corpus version
{summary['pack']['corpus_version']}: {', '.join(summary['pack']['speakers'])}), {summary['utterances_used']}
utterances. It exists so that demos, tests and benchmarks run on a base that speaks; it is **not** a substitute for
RVC's pretrained bases trained on real voices.

- Content encoder: `content_encoder/` — NOT ContentVec. Utterance-normalised MFCCs (c1..c20) in HuBERT's 20 ms
  frames with a fixed seeded projection to 768-d (see `rvc_peft/features/lab_encoder.py`). Use it for every
  dataset and conversion with this base.
- Pitch: {summary['pack']['f0_method']} at 100 frames/s.
- Architecture: RVC v2 32k NSF synthesizer, {summary['parameters_g'] / 1e6:.1f} M parameters
  ({json.dumps(summary['config'])}); discriminator: RVC's MultiPeriodDiscriminatorV2
  ({summary['parameters_d'] / 1e6:.1f} M).
- Training: {summary['step']} steps, batch {s['batch_size']}, windows of {s['crop_frames']} frames, AdamW
  lr {s['learning_rate']} betas {s['betas']}, {s['precision']} autocast on CUDA, seed {s['seed']};
  RVC's objective (mel L1 x45, KL, feature matching x2, LSGAN).
- Hardware and time: {summary['device']}, torch {summary['torch']}, {summary['wall_clock_s'] / 60:.1f} min
  (+{summary['prepare_s']:.0f} s data preparation).
- Last logged losses (mean of steps {last.get('step', 0) - s['log_every'] + 1}-{last.get('step', 0)}): {json.dumps(
  {k: v for k, v in last.items() if k not in ('step', 'minutes')})}

Reproduce (GPU timings differ from run to run, so a time-limited run stops at a slightly different step):

    rvc-peft lab-corpus lab_corpus
    rvc-peft lab-base --corpus lab_corpus --out lab_base --f0-method {summary['pack']['f0_method']} \\
        --batch-size {s['batch_size']} --seed {s['seed']} {f"--max-minutes {s['max_minutes']}" if s['max_minutes']
                                                            else f"--max-steps {summary['step']}"}

The discriminator (`f0D32k.pth`, {summary['parameters_d'] * 2 / 1e6:.0f} MB in fp16) is written beside the
synthesizer by that command; rvc-peft ships only the synthesizer and the content encoder.
"""
