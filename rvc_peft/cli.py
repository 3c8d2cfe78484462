"""The `rvc-peft` command: a thin argparse shell over the library.

Each subcommand is one `_add_<name>_parser(subparsers)` function that registers its arguments and sets
`func=_run_<name>`; `main` dispatches. Heavy imports happen inside the `_run_*` functions so `--help` is fast.
The file is long (twelve subcommands of 30-60 lines each, no logic of their own) so that every option of the
command can be read in one place, in the order `rvc-peft --help` lists them; `convert` and `stream` share their
runtime options through `_add_runtime_options`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from .utils.log import configure_logging

# --- preprocess ---------------------------------------------------------------------------------------------------

def _add_preprocess_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "preprocess",
        help="turn a folder of recordings into a training dataset (RVC slicing, pitch, content features)",
        description="Slice, normalise and featurize every audio file under AUDIO_DIR the way RVC does, into "
                    "OUT_DIR/dataset (a `datasets` dataset) and OUT_DIR/rvc_dataset.json. Re-running skips files "
                    "already done (cache in OUT_DIR/work). Files in a first-level sub-folder named by a number "
                    "(AUDIO_DIR/3/...) get that speaker id; all others get --speaker-id.",
    )
    parser.add_argument("audio_dir", metavar="AUDIO_DIR", help="folder of wav/flac/ogg/mp3 recordings")
    parser.add_argument("out_dir", metavar="OUT_DIR", help="output folder (created)")
    parser.add_argument("--sample-rate", default="40k", help="model sample rate: 32k, 40k or 48k (default 40k)")
    parser.add_argument("--version", default="v2", choices=("v1", "v2"), help="RVC version (default v2)")
    parser.add_argument("--f0-method", default="rmvpe", help="pitch method: rmvpe, crepe, crepe-tiny, fcpe, "
                        "harvest, dio or pm (default rmvpe)")
    parser.add_argument("--no-f0", action="store_true", help="build a dataset for a no-pitch model")
    parser.add_argument("--content-encoder", required=True, metavar="PATH",
                        help="HuBERT/ContentVec: transformers folder, fairseq .pt (e.g. hubert_base.pt) or hub id")
    parser.add_argument("--rmvpe", default=None, metavar="PATH", help="rmvpe.pt file or hub id (for --f0-method rmvpe)")
    parser.add_argument("--speaker-id", type=int, default=0, help="speaker id of files not in a numbered sub-folder")
    parser.add_argument("--per", type=float, default=3.7, help="slice length in seconds (RVC: 3.7, or 3.0)")
    parser.add_argument("--workers", type=int, default=0, help="worker processes for loading/slicing/CPU pitch")
    parser.add_argument("--device", default="cpu", help="torch device for the content encoder and pitch models")
    parser.add_argument("--overwrite", action="store_true", help="discard the work cache and rebuild everything")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.set_defaults(func=_run_preprocess)


def _run_preprocess(args: argparse.Namespace) -> int:
    from .data.preprocess import build_dataset

    info = build_dataset(
        args.audio_dir, args.out_dir, sample_rate=args.sample_rate, version=args.version,
        f0_method=None if args.no_f0 else args.f0_method, content_encoder=args.content_encoder,
        speaker_id=args.speaker_id, per=args.per, num_workers=args.workers, device=args.device,
        overwrite=args.overwrite, progress=not args.no_progress, rmvpe=args.rmvpe,
    )
    print(f"{info.num_rows} slices from {info.stats.get('processed', 0) + info.stats.get('reused', 0)} files "
          f"({info.stats.get('reused', 0)} reused from the work cache, {len(info.skipped)} skipped) -> {info.path}")
    return 0


# --- import-experiment --------------------------------------------------------------------------------------------

def _add_import_experiment_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "import-experiment",
        help="convert an RVC WebUI / Applio experiment folder (logs/<name>) into a dataset, without recomputing",
        description="Read 0_gt_wavs, 2a_f0, 2b-f0nsf and 3_feature256|768 (WebUI) or sliced_audios, f0, f0_voiced "
                    "and extracted (Applio) from EXP_DIR and write OUT_DIR/dataset + OUT_DIR/rvc_dataset.json.",
    )
    parser.add_argument("exp_dir", metavar="EXP_DIR", help="the experiment folder, e.g. RVC/logs/myvoice")
    parser.add_argument("out_dir", metavar="OUT_DIR", help="output folder")
    parser.add_argument("--sample-rate", default=None, help="check the slices are at this rate (default: from WAVs)")
    parser.add_argument("--version", default=None, choices=("v1", "v2"), help="pick v1/v2 (default: inferred)")
    parser.add_argument("--overwrite", action="store_true", help="replace a dataset already in OUT_DIR")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.set_defaults(func=_run_import_experiment)


def _run_import_experiment(args: argparse.Namespace) -> int:
    from .data.experiment import import_rvc_experiment

    info = import_rvc_experiment(args.exp_dir, args.out_dir, sample_rate=args.sample_rate, version=args.version,
                                 overwrite=args.overwrite, progress=not args.no_progress)
    print(f"{info.num_rows} slices ({info.version}, {info.sample_rate} Hz, "
          f"{'with' if info.use_f0 else 'without'} pitch) -> {info.path}")
    return 0


# --- export -------------------------------------------------------------------------------------------------------

def _add_export_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="merge a LoRA voice adapter into its base and write an RVC voice .pth (WebUI / Applio)",
        description="Load the base RVC model, load the adapter onto it with PEFT (checking it was made for this "
                    "base), merge it, and write an RVC exported voice (fp16, legacy weight-norm names, enc_q dropped).",
    )
    parser.add_argument("--base", required=True, metavar="B", help="base model: RVC .pth (f0G40k.pth, G_*.pth, "
                        "an exported voice), rvc-peft model folder, or Hub reference (org/repo[/file.pth])")
    parser.add_argument("--adapter", required=True, metavar="A", help="adapter folder or Hub id (save_pretrained)")
    parser.add_argument("--out", required=True, metavar="voice.pth", help="output file (written atomically)")
    parser.add_argument("--info", default=None, metavar="TEXT",
                        help="text for the voice's 'info' field (default: the base voice's info, empty for a "
                             "pretrained base; --flavor applio adds the field only when given)")
    parser.add_argument("--sample-rate", default=None, help="base sample rate if its shapes are ambiguous (e.g. 40k)")
    parser.add_argument("--flavor", default="webui", choices=("webui", "applio"), help="file variant (default webui)")
    parser.set_defaults(func=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    from .tuners import export_merged_voice

    path = export_merged_voice(args.base, args.adapter, args.out, info=args.info, flavor=args.flavor,
                               base_kwargs={"sample_rate": args.sample_rate})
    print(f"merged {args.adapter} into {args.base} -> {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


# --- index --------------------------------------------------------------------------------------------------------

def _add_index_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "index",
        help="build the faiss retrieval index (RVC .index file) from a dataset's content features",
        description="Index every 'phone' frame of DATASET_DIR the way RVC's 'train index' does (shuffled, IVF lists "
                    "min(16*sqrt(N), N/39), nprobe 1; k-means centres above 200k frames). Needs faiss "
                    '(pip install "rvc-peft[index]").',
    )
    parser.add_argument("dataset_dir", metavar="DATASET_DIR", help="output folder of `rvc-peft preprocess`")
    parser.add_argument("--out", required=True, metavar="FILE.index", help="index file to write (atomically)")
    parser.add_argument("--speaker-id", type=int, default=None, help="index only this speaker's rows")
    parser.add_argument("--seed", type=int, default=0, help="seed of the row shuffle and k-means (default 0)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.set_defaults(func=_run_index)


def _run_index(args: argparse.Namespace) -> int:
    from .data.index import build_index_from_dataset, save_index

    index = build_index_from_dataset(args.dataset_dir, speaker_id=args.speaker_id, seed=args.seed,
                                     show_progress=not args.no_progress)
    path = save_index(index, args.out)
    print(f"indexed {index.ntotal} vectors of width {index.d} -> {path}")
    return 0


# --- convert ------------------------------------------------------------------------------------------------------

def _add_voice_options(parser: argparse.ArgumentParser, *, rms_mix_rate: float) -> None:
    """The model and voice options `convert` and `stream` share: base, adapter, index, key and RVC's settings."""
    parser.add_argument("--base", required=True, metavar="B", help="base model or exported voice: RVC .pth, "
                        "rvc-peft model folder, or Hub reference (org/repo[/file.pth])")
    parser.add_argument("--adapter", default=None, metavar="A", help="LoRA voice adapter folder or Hub id "
                        "(omit to convert with the base / exported voice alone)")
    parser.add_argument("--adapter-name", default=None, metavar="N", help="name for the voice (default: folder name)")
    parser.add_argument("--index", default=None, metavar="I", help="retrieval .index file (default: the single "
                        "*.index in the adapter folder, if any)")
    parser.add_argument("--pitch", type=float, default=0.0, metavar="N", help="transpose by N semitones")
    parser.add_argument("--f0-method", default="rmvpe", metavar="M",
                        help="rmvpe, crepe, crepe-tiny, fcpe, harvest, dio or pm (default rmvpe)")
    parser.add_argument("--index-rate", type=float, default=0.75, metavar="R", help="retrieval share (default 0.75)")
    parser.add_argument("--protect", type=float, default=0.33, metavar="P",
                        help="consonant protection, 0.5 disables (default 0.33)")
    parser.add_argument("--rms-mix-rate", type=float, default=rms_mix_rate, metavar="R",
                        help=f"1 keeps the model's loudness envelope, 0 the input's (default {rms_mix_rate:g})")
    parser.add_argument("--filter-radius", type=int, default=3, help="harvest median filter switch (default 3)")
    parser.add_argument("--speaker-id", type=int, default=None, help="speaker row (default: the voice's, else 0)")
    parser.add_argument("--content-encoder", default="lj1995/VoiceConversionWebUI/hubert_base.pt", metavar="PATH",
                        help="HuBERT/ContentVec: transformers folder, fairseq .pt or Hub reference "
                             "(default: RVC's hubert_base.pt on the Hub)")
    parser.add_argument("--rmvpe", default=None, metavar="PATH", help="rmvpe.pt file or Hub reference "
                        "(default: RVC's on the Hub)")


def _add_runtime_options(parser: argparse.ArgumentParser) -> None:
    """Where and how `convert` and `stream` run the synthesizer (`inference/backends.py`)."""
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--half", action="store_true", help="float16 (GPU; convert also uses RVC's fp16 windowing)")
    parser.add_argument("--backend", default="torch", choices=("torch", "torch-fast", "onnx"),
                        help="synthesizer runtime: torch (reference), torch-fast (merged, folded, channels-last "
                             "copy: same output in fp32) or onnx (onnxruntime; the voice is exported once) "
                             "(default torch)")
    parser.add_argument("--precision", default=None, choices=("fp32", "bf16", "fp16"),
                        help="synthesizer precision: fp32, bf16 (torch-fast; CPUs with avx512_bf16/AMX, GPUs) or "
                             "fp16 (GPUs) (default fp32, fp16 with --half)")
    parser.add_argument("--seed", type=int, default=None, help="seed the synthesizer noise (reproducible output)")


def _load_converter(args: argparse.Namespace) -> Any:
    """The `VoiceConverter` of `_add_voice_options` + `_add_runtime_options` arguments."""
    from .inference import VoiceConverter

    if str(args.device).startswith("cpu"):
        from .runtime import retain_freed_memory

        retain_freed_memory()  # reuse the decoder's large buffers instead of re-faulting them (about 1.5x faster)
    adapters = {args.adapter_name: args.adapter} if args.adapter and args.adapter_name else args.adapter
    return VoiceConverter.from_pretrained(
        args.base, adapters, content_encoder=args.content_encoder, f0_method=args.f0_method, rmvpe=args.rmvpe,
        index=args.index, device=args.device, half=args.half, seed=args.seed, backend=args.backend,
        precision=args.precision,
    )


def _add_convert_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="convert audio files or folders to a voice (base + LoRA adapter), the RVC way",
        description="Convert every audio file given (folders are searched recursively) with RVC's pipeline: "
                    "48 Hz high-pass, quiet-point segmentation, pitch, content features, retrieval, protect, "
                    "RMS mix. Outputs mirror the input tree under -o and never replace an input file.",
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="audio files and/or folders")
    _add_voice_options(parser, rms_mix_rate=0.25)
    parser.add_argument("--resample-sr", type=int, default=0, help="output sample rate (default: the model's)")
    parser.add_argument("-o", "--output", default="converted", metavar="OUT",
                        help="output folder (default ./converted), or a file name for a single input")
    parser.add_argument("--format", default="wav", choices=("wav", "flac"), help="output format (default wav)")
    parser.add_argument("--float", action="store_true", help="write float32 WAV (Applio) instead of 16-bit (WebUI)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace existing output files (inputs are never replaced)")
    _add_runtime_options(parser)
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(func=_run_convert)


def _run_convert(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .inference import ConversionSettings
    from .inference.batch import collect_inputs, convert_files, plan_outputs

    settings = ConversionSettings.from_cli_args(args)  # a bad --protect etc. fails here, before the models load
    output = Path(args.output)
    inputs = collect_inputs(args.inputs, exclude=output)
    if not inputs:
        raise ValueError(f"no audio files found in {', '.join(args.inputs)}")
    outputs = plan_outputs(inputs, output, fmt=args.format, overwrite=args.overwrite)
    converter = _load_converter(args)
    report = convert_files(lambda path: converter.convert(path, settings=settings), inputs, outputs,
                           subtype="FLOAT" if args.float else "PCM_16", progress=not args.no_progress,
                           overwrite=args.overwrite)
    # the paths actually written: a name taken by another run while converting sends the file to the next free one
    if len(inputs) == 1 and report.written:
        print(f"converted 1 of 1 files -> {report.written[0][1]}")
    else:
        print(f"converted {len(report.written)} of {len(inputs)} files -> {output}")
        for source, written in report.written:
            print(f"  {source} -> {written}")
    for path, reason in report.failed:
        print(f"  failed: {reason}", file=sys.stderr)
    return 1 if report.failed else 0


# --- stream -------------------------------------------------------------------------------------------------------

def _add_stream_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "stream",
        help="convert audio block by block with bounded latency (RVC's realtime algorithm): a file, or --live",
        description="Stream a file through the realtime converter (ring buffer of extra context + block, features "
                    "and pitch per window, SOLA-aligned crossfades) and write the result aligned with the input, "
                    "with a report of the algorithmic latency and the per-block processing time. --live converts "
                    "the microphone to the speakers (needs the optional package sounddevice). On a CPU pick a cheap "
                    "--f0-method (fcpe, dio or pm keep up with real time; harvest does not).",
    )
    parser.add_argument("inputs", nargs="?", default=None, metavar="INPUT", help="audio file to stream (not with --live)")
    _add_voice_options(parser, rms_mix_rate=1.0)
    parser.add_argument("--block-ms", type=float, default=500.0, help="audio per block (default 500)")
    parser.add_argument("--extra-ms", type=float, default=1000.0, help="past context per block (default 1000)")
    parser.add_argument("--crossfade-ms", type=float, default=50.0, help="crossfade between blocks (default 50)")
    parser.add_argument("--sola-search-ms", type=float, default=10.0, help="SOLA alignment search (default 10)")
    parser.add_argument("-o", "--output", default=None, metavar="OUT", help="output audio file (file mode)")
    parser.add_argument("--report", default=None, metavar="JSON", help="also write the timing report here")
    parser.add_argument("--float", action="store_true", help="write float32 WAV instead of 16-bit")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    parser.add_argument("--live", action="store_true", help="microphone in, speakers out (needs sounddevice)")
    parser.add_argument("--seconds", type=float, default=None, help="--live: stop after this long (default: Ctrl-C)")
    parser.add_argument("--input-device", default=None, help="--live: sounddevice input device (default: system's)")
    parser.add_argument("--output-device", default=None, help="--live: sounddevice output device")
    _add_runtime_options(parser)
    parser.set_defaults(func=_run_stream)


def _run_stream(args: argparse.Namespace) -> int:
    import json

    from .inference.stream_io import live_audio_module, stream_file, stream_live
    from .inference.streaming import StreamingConverter
    from .utils.files import atomic_write

    if args.live == (args.inputs is not None):
        raise ValueError("give an INPUT file to stream, or --live (not both)")
    if not args.live and args.output is None:
        raise ValueError("-o/--output is needed: the file to write the streamed conversion to")
    if args.live:
        live_audio_module()  # a missing sounddevice fails before the models load
    converter = _load_converter(args)
    streamer = StreamingConverter(
        converter, block_seconds=args.block_ms / 1000, extra_seconds=args.extra_ms / 1000,
        crossfade_seconds=args.crossfade_ms / 1000, sola_search_seconds=args.sola_search_ms / 1000,
        f0_up_key=args.pitch, index_rate=args.index_rate, protect=args.protect, rms_mix_rate=args.rms_mix_rate,
        filter_radius=args.filter_radius, speaker_id=args.speaker_id,
    )
    if args.live:
        print(f"live: {streamer.latency_seconds * 1000:.0f} ms algorithmic latency; Ctrl-C stops", flush=True)
        report = stream_live(streamer, seconds=args.seconds, input_device=args.input_device,
                             output_device=args.output_device)
    else:
        result = stream_file(streamer, args.inputs, args.output, subtype="FLOAT" if args.float else "PCM_16",
                             overwrite=args.overwrite)
        report = result.report
        print(f"streamed {report['audio_seconds']:.2f} s in {report['blocks']} blocks -> {result.path}")
    print(f"algorithmic latency {report['algorithmic_latency_ms']:.0f} ms (block {report['block_ms']:.0f} + "
          f"crossfade {report['crossfade_ms']:.0f} + SOLA search {report['sola_search_ms']:.0f}); per-block "
          f"processing mean {report['processing_ms_mean'] or 0:.1f} ms, p95 {report['processing_ms_p95'] or 0:.1f} ms; "
          f"real-time factor {report['real_time_factor'] or 0:.3f}")
    if args.report:
        atomic_write(args.report, lambda tmp: tmp.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8"))
    return 0


# --- eval ---------------------------------------------------------------------------------------------------------

def _add_eval_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="compare converted audio with its source: MCD, F0 RMSE/corr, V/UV error, SC, SECS, DNSMOS",
        description="Compare CONVERTED with SOURCE (two files, or two folders matched by file name). Frames are "
                    "aligned by DTW of mel cepstra (or 1:1 with --align none). Also speaker similarity (SECS, "
                    "Resemblyzer) to SOURCE and to the target voice (--reference), and DNSMOS SIG/BAK/OVRL, when the "
                    "`quality` extra is installed. Prints JSON.",
    )
    parser.add_argument("converted", metavar="CONVERTED", help="converted audio file or folder")
    parser.add_argument("reference", metavar="SOURCE", help="audio file or folder to compare with: usually the source "
                        "that was converted (JSON key 'reference')")
    parser.add_argument("--json", default=None, metavar="out.json", help="also write the JSON here")
    parser.add_argument("--figure", default=None, metavar="out.png",
                        help="PNG of F0 tracks and spectrograms (a folder when comparing folders)")
    parser.add_argument("--f0-method", default="pm", choices=("rmvpe", "crepe", "crepe-tiny", "fcpe", "harvest", "dio",
                                                               "pm"),
                        help="pitch tracker for the F0 metrics, applied to both files (default pm, as training's "
                             "validation: unlike convert/preprocess, which default to rmvpe for the best pitch, a "
                             "metric needs the same tracker on both sides, not the best one, and pm needs no model "
                             "download and runs offline in a fraction of real time; rmvpe fetches RVC's weights)")
    parser.add_argument("--align", default="dtw", choices=("dtw", "none"), help="frame alignment (default dtw)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar (folders)")
    # Quality metrics (rvc_peft.inference.quality; the `quality` extra): SECS and DNSMOS.
    parser.add_argument("--reference", dest="speaker_reference", action="append", default=[], metavar="VOICE",
                        help="audio file or folder of the target voice (repeatable): adds 'secs', the speaker "
                             "similarity of CONVERTED to it")
    parser.add_argument("--no-quality", action="store_true",
                        help="skip SECS and DNSMOS (secs, secs_source, dnsmos_*, source_dnsmos_ovrl)")
    parser.set_defaults(func=_run_eval)


QUALITY_KEYS = ("secs", "secs_source", "dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl", "dnsmos_p808", "source_dnsmos_ovrl")


def _run_eval(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from .inference.batch import evaluate_paths
    from .utils.files import atomic_write

    quality: list[str] = []
    speaker = None
    if args.no_quality and args.speaker_reference:
        raise ValueError("--reference needs the quality metrics: drop --no-quality")
    if not args.no_quality:
        from .inference.quality import QualityMetricsUnavailable, available_metrics, reference_embedding, require

        try:
            require("secs", "dnsmos")
        except QualityMetricsUnavailable as error:  # the other metrics still run
            note = str(error).replace("\n", " ")
            print(f"rvc-peft eval: note: skipping these metrics: {note}", file=sys.stderr)
        quality = available_metrics(("secs", "dnsmos"))
        if args.speaker_reference and "secs" in quality:
            speaker = reference_embedding(list(args.speaker_reference))  # once, for every pair
    result = evaluate_paths(args.converted, args.reference, figure=args.figure, f0_method=args.f0_method,
                            align=args.align, progress=not args.no_progress, quality=quality,
                            speaker_reference=speaker)
    if "pairs" in result and quality:  # folders: means of the quality metrics too
        for name in QUALITY_KEYS:
            values = [p[name] for p in result["pairs"] if p.get(name) is not None]
            if values:
                result["mean"][name] = sum(values) / len(values)
    text = json.dumps(result, indent=2)
    if args.json is not None:
        atomic_write(Path(args.json), lambda tmp: tmp.write_text(text + "\n", encoding="utf-8"))
    print(text)
    return 0


# --- app ----------------------------------------------------------------------------------------------------------

def _add_app_parser(subparsers: argparse._SubParsersAction) -> None:
    from .app.launch import add_arguments  # argparse only: Gradio and torch load in _run_app

    add_arguments(subparsers.add_parser(
        "app",
        help="start the web app (Gradio): convert, blend, train and compare voices in the browser",
        description="Serve the rvc-peft web app: Convert, Voices (add, blend, export), Train and Compare tabs over "
                    "one base (default: the voice-lab base). Needs the app extra: pip install \"rvc-peft[app]\".",
    )).set_defaults(func=_run_app)


def _run_app(args: argparse.Namespace) -> int:
    from .app.launch import serve

    return serve(args)


# --- train --------------------------------------------------------------------------------------------------------

def _add_train_parser(subparsers: argparse._SubParsersAction) -> None:
    from .training.arguments import HelpFormatter
    from .training.arguments import build_parser as build_train_parser

    subparsers.add_parser(
        "train", parents=[build_train_parser()], add_help=False,
        formatter_class=HelpFormatter,
        help="train a LoRA voice adapter with RVC's objective (one process; several: accelerate launch)",
        description="Train a LoRA adapter on a dataset from `rvc-peft preprocess`, with RVC's GAN objective. Same "
                    "options as `python -m rvc_peft.train` and the rvc-peft-train command; for several GPUs or "
                    "machines run `accelerate launch -m rvc_peft.train ...` from any folder.",
    ).set_defaults(func=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from .train import train_parsed

    return train_parsed(args, error_prefix="rvc-peft train: error")


# --- export-onnx --------------------------------------------------------------------------------------------------

def _add_export_onnx_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export-onnx",
        help="export an RVC synthesizer (base, or base + merged adapter) to ONNX for realtime clients",
        description="Load the base RVC model, optionally merge a LoRA voice adapter into it, fold weight norm and "
                    "write an ONNX graph in RVC WebUI's layout (phone, phone_lengths, pitch, pitchf, ds, rnd -> "
                    "audio) or VCClient's (feats, p_len, pitch, pitchf, sid -> audio, with its metadata). The "
                    "number of frames is dynamic.",
    )
    parser.add_argument("--base", required=True, metavar="B", help="base model: RVC .pth (f0G40k.pth, G_*.pth, "
                        "an exported voice), rvc-peft model folder, or Hub reference (org/repo[/file.pth])")
    parser.add_argument("--adapter", default=None, metavar="A", help="adapter folder or Hub id to merge in first")
    parser.add_argument("--out", required=True, metavar="model.onnx", help="output file (written atomically)")
    parser.add_argument("--layout", default="webui", choices=("webui", "vcclient"),
                        help="input/output layout (default webui; vcclient is always opset 17)")
    parser.add_argument("--half", "--fp16", action="store_true", help="fp16 weights and compute, for GPU providers (webui keeps float32 "
                        "inputs/output; vcclient has fp16 ones, as VCClient binds them)")
    parser.add_argument("--opset", type=int, default=None, metavar="N", help="ONNX opset, 13..20 (default 17)")
    parser.add_argument("--sample-rate", default=None, help="base sample rate if its shapes are ambiguous (e.g. 40k)")
    parser.add_argument("--no-source-noise", action="store_true",
                        help="leave the NSF excitation noise out of the graph (deterministic output)")
    parser.add_argument("--embedder", default=None, metavar="NAME",
                        help="vcclient layout: the metadata's content-encoder name (default hubert_base)")
    parser.set_defaults(func=_run_export_onnx)


def _run_export_onnx(args: argparse.Namespace) -> int:
    import time

    from .inference.onnx_export import export_onnx

    if args.embedder is not None and args.layout != "vcclient":
        raise ValueError("--embedder sets VCClient's metadata: use it with --layout vcclient")
    start = time.perf_counter()
    path = export_onnx(
        args.base, args.out, layout=args.layout, adapter=args.adapter, opset=args.opset, half=args.half,
        source_noise=not args.no_source_noise, base_kwargs={"sample_rate": args.sample_rate},
        metadata={"embedder": args.embedder} if args.embedder is not None else None,
    )
    merged = f" + {args.adapter}" if args.adapter else ""
    print(f"exported {args.base}{merged} -> {path} ({args.layout} layout, {'fp16' if args.half else 'fp32'}, "
          f"{path.stat().st_size / 1e6:.1f} MB, {time.perf_counter() - start:.1f} s)")
    return 0


# --- lab-corpus ---------------------------------------------------------------------------------------------------

def _add_lab_corpus_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "lab-corpus",
        help="speak the lab's fixed English sentences with every installed offline voice (16 kHz WAVs + manifest)",
        description="Build the voice lab's multi-speaker corpus in OUT: OUT/wavs/<speaker>/<sentence>.wav (16 kHz "
                    "mono) and OUT/manifest.json (sentences and their train/heldout split, voices and their "
                    "base/target role). Voices whose engine is not installed are skipped; clips already in OUT are "
                    "reused.",
    )
    parser.add_argument("out_dir", metavar="OUT", nargs="?", help="output folder (created)")
    parser.add_argument("--voices", default=None, metavar="A,B,...", help="only these voices (default: all)")
    parser.add_argument("--list-voices", action="store_true", help="list the registered voices and exit")
    parser.add_argument("--overwrite", action="store_true", help="synthesize every clip again")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(func=_run_lab_corpus)


def _run_lab_corpus(args: argparse.Namespace) -> int:
    import time

    from .lab.corpus import build_corpus, format_summary, list_voices

    if args.list_voices:
        for row in list_voices():
            state = "available" if row["available"] else f"unavailable: {row['reason']}"
            print(f"{row['name']:<24} {row['engine']:<9} {row['role']:<6} {state}")
        return 0
    if not args.out_dir:
        print("rvc-peft lab-corpus: error: OUT is required (unless --list-voices)", file=sys.stderr)
        return 2
    voices = [name.strip() for name in args.voices.split(",") if name.strip()] if args.voices else None
    start = time.perf_counter()
    manifest = build_corpus(args.out_dir, voices=voices, overwrite=args.overwrite, progress=not args.no_progress)
    print(format_summary(manifest))
    print(f"built in {time.perf_counter() - start:.1f} s")
    return 0


# --- lab-base -----------------------------------------------------------------------------------------------------

def _add_lab_base_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "lab-base",
        help="pretrain the voice lab's base (RVC v2 32k G + D) on a lab corpus's base speakers",
        description="Pack the base speakers' training sentences of CORPUS (16 kHz audio + F0) into OUT/pack.npz "
                    "(reused when present), then train an RVC v2 32k synthesizer and discriminator from scratch with "
                    "RVC's objective. Writes OUT/f0G32k.pth, OUT/f0D32k.pth (RVC base files), OUT/content_encoder/, "
                    "OUT/training.json and a model card; part-way results are saved every few minutes. The shipped "
                    "base was made with --max-minutes 7.8 --batch-size 48 on one H200 GPU.",
    )
    parser.add_argument("--corpus", required=True, metavar="DIR", help="a corpus written by `rvc-peft lab-corpus`")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--size", default="compact", choices=("compact", "full"),
                        help="compact: 13.5 M parameters (what ships); full: RVC's v2 32k numbers (default compact)")
    parser.add_argument("--max-minutes", type=float, default=None, help="wall-clock budget of the training loop")
    parser.add_argument("--max-steps", type=int, default=20000, help="training steps at most (default 20000)")
    parser.add_argument("--batch-size", type=int, default=48, help="windows per step (default 48)")
    parser.add_argument("--f0-method", default="harvest", help="pitch method for the pack (default harvest)")
    parser.add_argument("--seed", type=int, default=1234, help="seed of weights and batches (default 1234)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    parser.set_defaults(func=_run_lab_base)


def _run_lab_base(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .lab.pretrain import PretrainSettings, pack_corpus, pretrain

    out = Path(args.out)
    pack = out / "pack.npz"
    if not pack.is_file():
        pack_corpus(args.corpus, pack, f0_method=args.f0_method, progress=not args.no_progress)
    settings = PretrainSettings(size=args.size, max_steps=args.max_steps, max_minutes=args.max_minutes,
                                batch_size=args.batch_size, seed=args.seed)
    summary = pretrain(pack, out, settings, device=args.device, progress=not args.no_progress)
    print(f"lab base after {summary['step']} steps ({summary['wall_clock_s'] / 60:.1f} min on {summary['device']}) "
          f"-> {out / 'f0G32k.pth'}")
    return 0

# ------------------------------------------------------------------------------------------------------------------

def _add_output_options(parser: argparse.ArgumentParser, *, top_level: bool) -> None:
    """-v/-q on the main parser and on every subcommand, so they work before or after the command name.

    A subcommand's parser writes its defaults over the namespace the main parser filled in, so there the options
    default to SUPPRESS (unset unless given): `rvc-peft -v convert ...` stays verbose.
    """
    group = parser.add_argument_group("output options")
    default = False if top_level else argparse.SUPPRESS
    group.add_argument("-v", "--verbose", action="store_true", default=default,
                       help="log more detail (rvc-peft's debug messages)")
    group.add_argument("-q", "--quiet", action="store_true", default=default,
                       help="log only warnings and errors")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__  # no heavy imports: rvc_peft/__init__.py is lazy

    parser = argparse.ArgumentParser(prog="rvc-peft", description="PEFT, Accelerate and Hub tools for RVC voices")
    parser.add_argument("--version", action="version", version=f"rvc-peft {__version__}")
    _add_output_options(parser, top_level=True)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_preprocess_parser(subparsers)
    _add_import_experiment_parser(subparsers)
    _add_export_parser(subparsers)
    _add_export_onnx_parser(subparsers)
    _add_index_parser(subparsers)
    _add_convert_parser(subparsers)
    _add_stream_parser(subparsers)
    _add_eval_parser(subparsers)
    _add_train_parser(subparsers)
    _add_lab_corpus_parser(subparsers)
    _add_lab_base_parser(subparsers)
    _add_app_parser(subparsers)
    for subparser in dict.fromkeys(subparsers.choices.values()):  # every subcommand, whoever added it
        _add_output_options(subparser, top_level=False)
    return parser


# argparse destinations naming a model file/folder or a Hub reference, and those naming local files or folders
# (`rvc-peft train` checks its own: `rvc_peft.train.train_parsed`)
_REFERENCE_OPTIONS = ("base", "adapter", "content_encoder", "rmvpe")
_LOCAL_OPTIONS = ("inputs", "index", "audio_dir", "exp_dir", "dataset_dir", "converted", "reference",
                  "speaker_reference", "corpus")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `rvc-peft` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    if args.verbose and args.quiet:
        parser.error("-v/--verbose and -q/--quiet contradict each other: pick one")
    configure_logging(verbose=args.verbose, quiet=args.quiet)
    try:
        from .utils.hub import check_path_options

        # a mistyped path fails here, in a fraction of a second and naming it, before torch and the models load
        check_path_options(args, references=_REFERENCE_OPTIONS, local=_LOCAL_OPTIONS)
        return int(args.func(args) or 0)
    except (ValueError, OSError) as error:  # our error classes subclass ValueError and name the file
        print(f"rvc-peft {args.command}: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
