"""Adaptation quality: do LoRA adapters make as good a voice as full fine-tuning? (voice lab, held-out speakers)

    python benchmarks/bench_quality.py --corpus lab_corpus --json benchmarks/results/quality_cpu.json

For each held-out target speaker of the lab corpus and each data budget (seconds of the target's training sentences),
every configuration starts from the shipped lab base (`rvc_peft/lab/weights/`) and trains the same number of steps
on the same batches (batch 4, windows of 100 frames, speaker row 0, seed fixed). Configurations: full fine-tuning
(every G weight) and LoRA presets/ranks, with the mel+KL objective (RVC's loss without the discriminator terms: on
this 2-core CPU one step with RVC's 71 M-parameter discriminator costs ~40 s, so the GAN terms and the
discriminator modes are left to a GPU run), plus the earlier RVC-LoRA experiment's recipe (generator r8, mel only).

Evaluated at 0, `steps/2` and `steps` on held-out sentences:
* reconstruction of the target's 8 held-out sentences (its own content and F0 through the prior, flow and decoder,
  as conversion runs): log-mel L1 (80 bands, 16 kHz, frames 1:1), MCD (`rvc_peft.inference.evaluation`), F0
  RMSE in cents (pm);
* conversion of 4 held-out sentences of a source speaker (F0 moved by the median-F0 ratio): SECS (Resemblyzer) to
  the target's training recordings and to the source, DNSMOS OVRL of the four joined.
"Improvement" is the change from the base (step 0). Also recorded: trainable parameters, adapter size (fp32
safetensors of the trainable tensors), seconds per step, peak RSS. JSON + learning-curve PNGs.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rvc_peft import RVCLoraConfig, get_rvc_peft_model, load_synthesizer
from rvc_peft.features.audio import load_audio
from rvc_peft.features.pitch import extract_f0, f0_to_coarse
from rvc_peft.features.spectrogram import mel_from_config
from rvc_peft.lab.assets import lab_base_files
from rvc_peft.lab.corpus import load_manifest, speaker_files
from rvc_peft.lab.pretrain import TrainingUtterances
from rvc_peft.models.synthesizer import slice_segments
from rvc_peft.training.losses import kl_loss, mel_loss

CONFIGS: dict[str, dict] = {
    "full fine-tuning": {"kind": "full", "loss": "mel_kl", "lr": 1e-4},
    "generator r8 mel-only (earlier experiment)": {"kind": "lora", "preset": "generator", "r": 8, "loss": "mel",
                                                    "lr": 5e-4},
    "generator r4": {"kind": "lora", "preset": "generator", "r": 4, "loss": "mel_kl", "lr": 5e-4},
    "generator r8": {"kind": "lora", "preset": "generator", "r": 8, "loss": "mel_kl", "lr": 5e-4},
    "generator r16": {"kind": "lora", "preset": "generator", "r": 16, "loss": "mel_kl", "lr": 5e-4},
    "all r8": {"kind": "lora", "preset": "all", "r": 8, "loss": "mel_kl", "lr": 5e-4},
    "all r16": {"kind": "lora", "preset": "all", "r": 16, "loss": "mel_kl", "lr": 5e-4},
    "generator+flow r8 + speaker embedding": {"kind": "lora", "preset": "generator+flow", "r": 8, "loss": "mel_kl",
                                              "lr": 5e-4, "embedding": True},
}
SOURCE_SPEAKER = {"default": "flite-slt", "flite-slt": "espeak-en-us-m1"}
HELDOUT_CONVERSIONS = 4


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build_model(base, spec: dict) -> tuple[torch.nn.Module, list[torch.nn.Parameter]]:
    model = copy.deepcopy(base)
    if spec["kind"] == "full":
        model.requires_grad_(True)
        return model, [p for p in model.parameters()]
    config = RVCLoraConfig(target_modules=spec["preset"], r=spec["r"], lora_alpha=2 * spec["r"],
                           modules_to_save=["emb_g"] if spec.get("embedding") else None)
    model = get_rvc_peft_model(model, config)
    return model, [p for p in model.parameters() if p.requires_grad]


def rvc_model(model):
    """The RVCSynthesizer inside a PeftModel (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


class Evaluator:
    """Held-out reconstruction and conversion for one target speaker (features computed once)."""

    def __init__(self, manifest: dict, target: str, encoder, config) -> None:
        import librosa

        from rvc_peft.inference.quality import reference_embedding

        self.config = config
        self.encoder = encoder
        self.mel_basis = librosa.filters.mel(sr=16000, n_fft=1024, n_mels=80)  # evaluation.py's STFT: 1024 points
        self.reference = reference_embedding([str(p) for p in speaker_files(manifest, target, "train")])
        source_name = SOURCE_SPEAKER.get(target, SOURCE_SPEAKER["default"])
        self.source_reference = reference_embedding([str(p) for p in speaker_files(manifest, source_name, "train")])
        self.recon = [self._clip(p) for p in speaker_files(manifest, target, "heldout")]
        sources = speaker_files(manifest, source_name, "heldout")[:HELDOUT_CONVERSIONS]
        self.sources = [self._clip(p) for p in sources]
        ratio = np.median(np.concatenate([c["f0"][c["f0"] > 0] for c in self.recon])) / np.median(
            np.concatenate([c["f0"][c["f0"] > 0] for c in self.sources]))
        for clip in self.sources:
            clip["f0"] = clip["f0"] * ratio
        self.source_name, self.shift = source_name, float(12 * np.log2(ratio))

    @torch.no_grad()
    def _clip(self, path: Path) -> dict:
        wav = load_audio(path, 16000)
        phone = self.encoder(torch.from_numpy(wav)[None])[0].repeat_interleave(2, dim=0)
        f0 = extract_f0(wav, "harvest")
        frames = min(len(phone), len(f0))
        return {"wav": wav, "phone": phone[:frames], "f0": f0[:frames].astype(np.float32)}

    @torch.no_grad()
    def synthesize(self, model, clip: dict) -> np.ndarray:
        net = rvc_model(model).eval()
        frames = clip["phone"].shape[0]
        torch.manual_seed(0)
        audio, *_ = net.infer(clip["phone"][None], torch.tensor([frames]),
                              torch.from_numpy(f0_to_coarse(clip["f0"]))[None], torch.from_numpy(clip["f0"])[None],
                              torch.tensor([0]))
        return audio[0, 0].float().numpy()

    def __call__(self, model) -> dict:
        from rvc_peft.features.audio import resample
        from rvc_peft.inference.evaluation import analyze, metrics
        from rvc_peft.inference.quality import dnsmos, speaker_similarity

        rate = self.config.sampling_rate
        mel_l1, mcd, f0_rmse = [], [], []
        for clip in self.recon:
            out16 = resample(self.synthesize(model, clip), rate, 16000)
            n = min(len(out16), len(clip["wav"]))
            conv, ref = analyze((out16[:n], 16000), f0_method="pm"), analyze((clip["wav"][:n], 16000), f0_method="pm")
            pairs = np.stack([np.arange(ref.frames)] * 2, axis=1)
            m = metrics(conv, ref, pairs)
            mcd.append(m["mcd_db"])
            if m["f0_rmse_cents"] is not None:
                f0_rmse.append(m["f0_rmse_cents"])
            mel_l1.append(float(np.mean(np.abs(np.log(conv.magnitude @ self.mel_basis.T + 1e-5)
                                               - np.log(ref.magnitude @ self.mel_basis.T + 1e-5)))))
        secs, secs_source, outputs = [], [], []
        for clip in self.sources:
            out = self.synthesize(model, clip)
            secs.append(speaker_similarity(out, rate, self.reference))
            secs_source.append(speaker_similarity(out, rate, self.source_reference))
            outputs += [out, np.zeros(rate // 5, dtype=np.float32)]
        # one DNSMOS call on the conversions joined with 0.2 s pauses (~10 s): no tiling of short clips
        ovrl = dnsmos(np.concatenate(outputs), rate)["dnsmos_ovrl"]
        return {"mel_l1": float(np.mean(mel_l1)), "mcd_db": float(np.mean(mcd)),
                "f0_rmse_cents": float(np.mean(f0_rmse)) if f0_rmse else None, "secs": float(np.mean(secs)),
                "secs_source": float(np.mean(secs_source)), "dnsmos_ovrl": float(ovrl)}


def train_data(manifest: dict, target: str, budget_s: float, config, encoder, crop: int) -> tuple[TrainingUtterances, float]:
    """The target's first training sentences adding up to `budget_s` seconds, as device-ready items (speaker 0)."""
    audio, f0, total = [], [], 0.0
    for path in speaker_files(manifest, target, "train"):
        if total >= budget_s:
            break
        wav = load_audio(path, 16000)
        audio.append(wav)
        f0.append(extract_f0(wav, "harvest").astype(np.float32))
        total += len(wav) / 16000
    return TrainingUtterances(audio, f0, np.zeros(len(audio), dtype=np.int64), config, encoder, torch.device("cpu"),
                       crop), total


def run_one(base, spec: dict, data: TrainingUtterances, evaluate: Evaluator, steps: int, batch: int, crop: int,
            seed: int) -> dict:
    model, params = build_model(base, spec)
    config = rvc_model(model).config
    optimizer = torch.optim.AdamW(params, spec["lr"], betas=(0.8, 0.99), eps=1e-9)
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    hop, seg = config.hop_length, rvc_model(model).segment_frames
    lengths = torch.full((batch,), crop, dtype=torch.long)
    curve, train_seconds = [], 0.0
    for step in range(1, steps + 1):
        rvc_model(model).train()
        started = time.perf_counter()
        b = data.batch(batch, crop, generator)
        y_hat, ids, _, z_mask, (_, z_p, m_p, logs_p, _, logs_q) = model(
            b["phone"], lengths, b["pitch"], b["pitchf"], b["spec"], lengths, b["sid"])
        wave = slice_segments(b["wave"], ids * hop, seg * hop)
        loss = mel_loss(mel_from_config(wave, config), mel_from_config(y_hat[:, 0], config))
        if spec["loss"] == "mel_kl":
            loss = loss + kl_loss(z_p, logs_q, m_p, logs_p, z_mask)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        train_seconds += time.perf_counter() - started
        if step in (steps // 2, steps):
            curve.append({"step": step, "train_seconds": round(train_seconds, 1), "loss": float(loss)} | evaluate(model))
            print(json.dumps({"config": spec.get("name"), **curve[-1]}), flush=True)
    trainable = sum(p.numel() for p in params)
    return {"trainable_parameters": trainable, "adapter_mb": round(trainable * 4 / 1e6, 2),
            "seconds_per_step": round(train_seconds / steps, 3), "curve": curve}


def improvement(run: dict, metric: str, point: int = -1) -> float:
    """Change from the base, signed so that larger is better (SECS and DNSMOS up, errors down)."""
    value, before = run["curve"][point][metric], run["base"][metric]
    return value - before if metric in ("secs", "dnsmos_ovrl") else before - value


def summarize(report: dict) -> list[dict]:
    """Per (budget, config): mean over targets of the final metrics and improvements, and the share of full
    fine-tuning's improvement reached (the same target and budget)."""
    rows = []
    keys = sorted({(r["budget_s"] > 60, r["config"]) for r in report["runs"]}, key=lambda k: (k[0], k[1]))
    for large, config in keys:
        runs = [r for r in report["runs"] if (r["budget_s"] > 60) == large and r["config"] == config]
        row = {"budget": "all (~90 s)" if large else "~30 s", "config": config, "targets": len(runs),
               "trainable_parameters": runs[0]["trainable_parameters"], "adapter_mb": runs[0]["adapter_mb"],
               "seconds_per_step": round(float(np.mean([r["seconds_per_step"] for r in runs])), 3)}
        for metric in ("secs", "secs_source", "dnsmos_ovrl", "mel_l1", "mcd_db", "f0_rmse_cents"):
            values = [r["curve"][-1][metric] for r in runs if r["curve"][-1][metric] is not None]
            row[metric] = round(float(np.mean(values)), 3) if values else None
        for metric in ("secs", "mel_l1"):
            shares = []
            for r in runs:
                full = [f for f in report["runs"] if f["config"] == "full fine-tuning" and f["target"] == r["target"]
                        and f["budget_s"] == r["budget_s"]]
                if full and improvement(full[0], metric) > 0:
                    shares.append(improvement(r, metric) / improvement(full[0], metric))
            row[f"{metric}_share_of_full"] = round(float(np.mean(shares)), 2) if shares else None
        rows.append(row)
    return rows


def markdown_table(rows: list[dict]) -> str:
    """The summary as the Markdown table of benchmarks/RESULTS.md."""
    head = ("| budget | configuration | trainable params | adapter MB | s/step | SECS to target | SECS to source | "
            "DNSMOS OVRL | mel L1 | MCD dB | F0 RMSE cents | SECS gain vs full | mel-L1 gain vs full |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]

    def cell(value: object) -> str:
        return "–" if value is None else f"{value:,}" if isinstance(value, int) else f"{value}"

    for r in rows:
        share = [f"{round(100 * r[k])}%" if r[k] is not None else "–" for k in ("secs_share_of_full",
                                                                               "mel_l1_share_of_full")]
        lines.append(f"| {r['budget']} | {r['config']} | {cell(r['trainable_parameters'])} | {r['adapter_mb']} | "
                     f"{r['seconds_per_step']} | {cell(r['secs'])} | {cell(r['secs_source'])} | "
                     f"{cell(r['dnsmos_ovrl'])} | {cell(r['mel_l1'])} | {cell(r['mcd_db'])} | "
                     f"{cell(r['f0_rmse_cents'])} | {share[0]} | {share[1]} |")
    return "\n".join(lines)


def plot(report: dict, folder: Path) -> list[Path]:
    """Learning curves per budget (mean over targets): SECS and mel L1 against steps and against training seconds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for large, budget in ((False, "30s"), (True, "all")):
        for metric, label in (("secs", "SECS to the target (higher is better)"),
                              ("mel_l1", "held-out log-mel L1 (lower is better)")):
            fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
            targets = set()
            for config in report["configs"]:
                runs = [r for r in report["runs"] if r["config"] == config and (r["budget_s"] > 60) == large]
                if not runs:
                    continue
                targets |= {r["target"] for r in runs}
                points = range(len(runs[0]["curve"]))
                steps = [0] + [p["step"] for p in runs[0]["curve"]]
                seconds = [0] + [float(np.mean([r["curve"][i]["train_seconds"] for r in runs])) for i in points]
                values = [float(np.mean([r["base"][metric] for r in runs]))] + [
                    float(np.mean([r["curve"][i][metric] for r in runs])) for i in points]
                axes[0].plot(steps, values, marker="o", label=config)
                axes[1].plot(seconds, values, marker="o", label=config)
            if not targets:
                plt.close(fig)
                continue
            axes[0].set_xlabel("training steps (equal steps)")
            axes[1].set_xlabel("training seconds on this CPU (equal wall-clock)")
            for ax in axes:
                ax.set_ylabel(label)
                ax.grid(alpha=0.3)
            axes[1].legend(fontsize=7)
            fig.suptitle(f"adaptation to held-out lab speakers ({', '.join(sorted(targets))}; budget "
                         f"{'~90 s' if large else '~30 s'}), mean over targets; {report['machine']}", fontsize=8)
            fig.tight_layout()
            path = folder / f"quality_curve_{metric}_{budget}.png"
            fig.savefig(path, dpi=110)
            plt.close(fig)
            written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", required=True, help="lab corpus folder (rvc-peft lab-corpus)")
    parser.add_argument("--targets", default="festival-ked,flite-awb,piper-joe", help="held-out target speakers")
    parser.add_argument("--budgets", default="30,90", help="seconds of target speech per run (90 = all 32 sentences)")
    parser.add_argument("--configs", default=",".join(CONFIGS), help="configurations (names from CONFIGS)")
    parser.add_argument("--small-budget-configs", default="full fine-tuning,generator r8,all r8",
                        help="configurations also run at budgets below the largest (CPU time)")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--crop", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=str(REPO / "benchmarks" / "results" / "quality_cpu.json"))
    parser.add_argument("--plots", default=str(REPO / "benchmarks" / "results"))
    parser.add_argument("--summarize", nargs="+", default=None, metavar="JSON",
                        help="only merge these result files (e.g. targets run in parallel processes) into --json, "
                             "with the summary table and the plots")
    args = parser.parse_args()
    if args.summarize:
        reports = [json.loads(Path(p).read_text()) for p in args.summarize]
        report = reports[0] | {"runs": [run for r in reports for run in r["runs"]],
                               "wall_clock_minutes": [r.get("wall_clock_minutes") for r in reports],
                               "peak_rss_mb": max(r.get("peak_rss_mb") or 0 for r in reports) or None}
        report["summary"] = summarize(report)
        Path(args.json).write_text(json.dumps(report, indent=1))
        plots = plot(report, Path(args.plots))
        print(markdown_table(report["summary"]))
        print(f"wrote {args.json} and {', '.join(map(str, plots))}")
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    manifest = load_manifest(args.corpus)
    lab = lab_base_files()
    from rvc_peft.features.content_encoder import load_content_encoder

    encoder = load_content_encoder(lab.content_encoder, "v2")
    base = load_synthesizer(lab.synthesizer)
    budgets = sorted(float(b) for b in args.budgets.split(","))
    configs = [c for c in args.configs.split(",") if c]
    small = set(args.small_budget_configs.split(","))
    report = {"machine": f"{platform.machine()} {platform.processor()}, {torch.get_num_threads()} torch threads, "
                         f"torch {torch.__version__}", "base": str(lab.synthesizer), "steps": args.steps,
              "batch": args.batch, "crop_frames": args.crop, "configs": {c: CONFIGS[c] for c in configs}, "runs": []}
    started = time.perf_counter()
    for target in args.targets.split(","):
        evaluate = Evaluator(manifest, target, encoder, base.config)
        base_metrics = evaluate(base)
        print(json.dumps({"target": target, "base": base_metrics, "source": evaluate.source_name}), flush=True)
        for budget in budgets:
            data, seconds = train_data(manifest, target, budget, base.config, encoder, args.crop)
            for name in configs:
                if budget < budgets[-1] and name not in small:
                    continue
                spec = CONFIGS[name] | {"name": name}
                result = run_one(base, spec, data, evaluate, args.steps, args.batch, args.crop, args.seed)
                report["runs"].append({"target": target, "source": evaluate.source_name, "shift": evaluate.shift,
                                       "budget_s": round(seconds, 1), "config": name, "base": base_metrics,
                                       **result})
                Path(args.json).parent.mkdir(parents=True, exist_ok=True)
                Path(args.json).write_text(json.dumps(report, indent=1))
    report["wall_clock_minutes"] = round((time.perf_counter() - started) / 60, 1)
    report["peak_rss_mb"] = round(peak_rss_mb())
    report["summary"] = summarize(report)
    Path(args.json).write_text(json.dumps(report, indent=1))
    plots = plot(report, Path(args.plots))
    print(json.dumps(report["summary"], indent=1))
    print(f"wrote {args.json} and {', '.join(map(str, plots))}")


if __name__ == "__main__":
    main()
