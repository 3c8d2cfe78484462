"""The Gradio page: Convert, Voices, Train and Compare tabs over one `Studio` (see `rvc_peft.app`).

Every handler returns a dict {component: value}; `_guarded` turns an `AppError` (bad input) into a message in the
tab's status line and any other exception into a one-line "unexpected error" there (the traceback goes to the
server log only). The voice lists of all tabs refresh whenever the bank changes (`Studio.version`), also when a
training run started from the page adds its adapter.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no usage reporting: the app works offline

import gradio as gr

from ..features.pitch import F0_METHODS
from .state import VOICE_TABLE_HEADERS, AppError, ConversionSettings, Studio
from .training_jobs import TrainingJob, TrainingSettings

logger = logging.getLogger(__name__)

BLEND_SLOTS = 4  # voice + weight rows in the blend form
COMPARE_SLOTS = 4  # voices shown side by side in the Compare tab
OFFLINE_F0 = [m for m in F0_METHODS if m != "rmvpe"] + ["rmvpe"]  # rmvpe last: it needs its weights file
SYSTEM_FONTS = ["ui-sans-serif", "system-ui", "Segoe UI", "Helvetica", "Arial", "sans-serif"]
MONO_FONTS = ["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"]


def error_text(err: BaseException) -> str:
    """The status-line text for an exception: AppError messages as they are, others as a one-line summary."""
    if isinstance(err, AppError):
        return f"⚠️ {err}"
    text = " ".join(str(err).split())[:400]
    return f"⚠️ Unexpected error ({type(err).__name__}): {text}. Details are in the server log."


def _guarded(status: gr.components.Component) -> Callable:
    """Decorator: on failure return {status: message} instead of raising (no traceback reaches the page)."""

    def wrap(function: Callable) -> Callable:
        @functools.wraps(function)
        def run(*args: Any, **kwargs: Any) -> dict:
            try:
                return function(*args, **kwargs)
            except Exception as err:  # everything is reported in the page; unexpected ones also in the log
                if not isinstance(err, AppError):
                    logger.exception("web app handler %s failed", function.__name__)
                return {status: error_text(err)}

        return run

    return wrap


class AppUI:
    """Builds the page; `blocks` is the `gr.Blocks`, `job` the current training job (None before the first)."""

    def __init__(self, studio: Studio) -> None:
        self.studio = studio
        self.job: TrainingJob | None = None
        self._deferred: list[Callable[[], None]] = []  # wiring that needs components of later tabs
        self.names = studio.voice_names()  # the lists' first content (loads the base now, not at the first click)
        with gr.Blocks(title="rvc-peft voice studio") as self.blocks:
            gr.Markdown("# rvc-peft voice studio\nConvert speech with LoRA voices on one RVC base, blend voices, "
                        "train new ones. Everything runs on this machine.")
            self.summary = gr.Markdown(studio.bank_summary(), elem_id="bank-summary")
            with gr.Tabs():
                with gr.Tab("Convert", id="convert"):
                    self._convert_tab()
                with gr.Tab("Voices", id="voices"):
                    self._voices_tab()
                with gr.Tab("Train", id="train"):
                    self._train_tab()
                with gr.Tab("Compare", id="compare"):
                    self._compare_tab()
            self.seen_version = gr.State(-1)  # per browser tab: the bank version its lists show
            self.seen_train = gr.State({})  # per browser tab: what its Train view shows (only changes are sent)
            self.timer = gr.Timer(1.0)
            for wire in self._deferred:
                wire()
            self.blocks.load(self._refresh_voices, None, self._voice_outputs() + [self.seen_version])
            self.timer.tick(self._tick, [self.seen_version, self.seen_train],
                            self._voice_outputs() + [self.seen_version, self.seen_train] + self._train_outputs())

    # --- shared pieces -------------------------------------------------------------------------------------------
    def _settings_inputs(self, prefix: str) -> list[gr.components.Component]:
        pitch = gr.Slider(-24, 24, value=0, step=1, label="Pitch shift (semitones)", elem_id=f"{prefix}-pitch")
        method = gr.Dropdown(OFFLINE_F0, value="harvest", label="F0 method", elem_id=f"{prefix}-f0")
        index_rate = gr.Slider(0, 1, value=0, step=0.05, label="Index rate (needs a voice with a .index)",
                               elem_id=f"{prefix}-index-rate")
        protect = gr.Slider(0, 0.5, value=0.33, step=0.01, label="Protect (0.5 = off)", elem_id=f"{prefix}-protect")
        rms = gr.Slider(0, 1, value=0.25, step=0.05, label="RMS mix (1 = the model's loudness)",
                        elem_id=f"{prefix}-rms")
        return [pitch, method, index_rate, protect, rms]

    @staticmethod
    def _settings(pitch: float, method: str, index_rate: float, protect: float, rms: float) -> ConversionSettings:
        """The library's settings from the sliders; a value out of range becomes a message naming it."""
        try:
            return ConversionSettings(f0_up_key=float(pitch), f0_method=str(method), index_rate=float(index_rate),
                                      protect=float(protect), rms_mix_rate=float(rms))
        except (TypeError, ValueError) as err:
            raise AppError(f"invalid setting: {err}") from None

    def _voice_outputs(self) -> list[gr.components.Component]:
        return [self.summary, self.voice_table, self.convert_voice, self.compare_voices, self.export_voice,
                *self.blend_voices]

    def _voice_updates(self) -> dict:
        """New choices for every voice list (selections stay), the table and the summary line."""
        names = self.studio.voice_names()
        lists = [self.convert_voice, self.compare_voices, self.export_voice, *self.blend_voices]
        return {self.summary: self.studio.bank_summary(), self.voice_table: self._table(),
                **{dropdown: gr.update(choices=names) for dropdown in lists}}

    def _table(self) -> Any:
        import pandas as pd

        return pd.DataFrame(self.studio.voice_table(), columns=VOICE_TABLE_HEADERS)

    def _refresh_voices(self) -> dict:
        """When a browser tab opens: the current voices, the first one selected for Convert."""
        names = self.studio.voice_names()
        updates = self._voice_updates()
        updates[self.convert_voice] = gr.update(choices=names, value=names[0] if names else None)
        return {**updates, self.seen_version: self.studio.version}

    def _tick(self, seen: int, seen_train: dict) -> dict:
        """Every second: the Train view's changes, and the voice lists when the bank changed (e.g. training ended)."""
        train, shown = self._train_updates(seen_train or {})
        out: dict = {self.seen_version: seen, self.seen_train: shown, **train}  # never empty: Gradio needs a key
        if seen != self.studio.version:
            out.update(self._voice_updates())
            out[self.seen_version] = self.studio.version
        return out

    # --- Convert -------------------------------------------------------------------------------------------------
    def _convert_tab(self) -> None:
        with gr.Row():
            with gr.Column():
                audio = gr.Audio(sources=["upload", "microphone"], type="filepath", label="Input: upload or record",
                                 elem_id="convert-input")
                self.convert_voice = gr.Dropdown(self.names, value=self.names[0] if self.names else None,
                                                 label="Voice", elem_id="convert-voice")
                settings = self._settings_inputs("convert")
                button = gr.Button("Convert", variant="primary", elem_id="convert-button")
            with gr.Column():
                status = gr.Markdown(elem_id="convert-status")
                result = gr.Audio(type="filepath", label="Result (play or download)", interactive=False,
                                  buttons=["download"], elem_id="convert-output")
                # no label: it would cover the figure's title line (the metrics)
                figure = gr.Image(type="filepath", label="F0 tracks and spectrograms: input vs result",
                                  show_label=False, interactive=False, elem_id="convert-figure")

        @_guarded(status)
        def convert(path: str | None, voice: str, *knobs: Any,
                    progress: gr.Progress = gr.Progress()) -> dict:  # noqa: B008 (Gradio's API)
            progress(0.1, desc=f"converting with {voice}")
            done = self.studio.convert(path, voice, self._settings(*knobs))
            return {result: str(done.path), figure: str(done.figure) if done.figure else None,
                    status: done.message + _metrics_line(done.metrics)}

        button.click(convert, [audio, self.convert_voice, *settings], [status, result, figure],
                     concurrency_limit=2)

    # --- Voices --------------------------------------------------------------------------------------------------
    def _voices_tab(self) -> None:
        status = gr.Markdown(elem_id="voices-status")
        self.voice_table = gr.Dataframe(self._table(), headers=VOICE_TABLE_HEADERS, interactive=False,
                                        label="Voice bank",
                                        elem_id="voice-table")
        with gr.Accordion("Add a voice (adapter folder or Hub id)", open=True), gr.Row():
            source = gr.Textbox(label="Adapter folder or Hub id", placeholder="adapters/alice or user/alice-rvc",
                                elem_id="add-source", scale=3)
            name = gr.Textbox(label="Name (optional)", elem_id="add-name", scale=1)
            add = gr.Button("Add voice", elem_id="add-button", scale=1)
        with gr.Accordion("Blend voices into a new one", open=True):
            self.blend_voices, weights = [], []
            with gr.Row():
                for slot in range(BLEND_SLOTS):
                    with gr.Column(min_width=160):
                        self.blend_voices.append(gr.Dropdown(self.names, value=None, label=f"Voice {slot + 1}",
                                                             elem_id=f"blend-voice-{slot}"))
                        weights.append(gr.Slider(-1, 2, value=0.5, step=0.05, label="Weight",
                                                 elem_id=f"blend-weight-{slot}"))
            with gr.Row():
                blend_name = gr.Textbox(label="New voice name", elem_id="blend-name", scale=3)
                blend = gr.Button("Blend", elem_id="blend-button", scale=1)
        with gr.Accordion("Export or share a voice", open=False):
            with gr.Row():
                self.export_voice = gr.Dropdown(self.names, label="Voice", elem_id="export-voice")
                flavor = gr.Radio(["webui", "applio"], value="webui", label="RVC .pth flavour")
                export = gr.Button("Export RVC .pth", elem_id="export-button")
            exported = gr.File(label="Exported voice", interactive=False, elem_id="export-file")
            with gr.Row():
                repo = gr.Textbox(label="Hub repository (user/name)", elem_id="push-repo")
                token = gr.Textbox(label="Hub token (write)", type="password")
                private = gr.Checkbox(value=True, label="private")
                push = gr.Button("Push adapter to the Hub", elem_id="push-button")

        @_guarded(status)
        def add_voice(source_text: str, name_text: str) -> dict:
            added = self.studio.add_voice(source_text, name_text)
            return {**self._voice_updates(), status: f"Added voice **{added}** (the base was not reloaded)."}

        @_guarded(status)
        def blend_voices(new_name: str, *pairs: Any) -> dict:
            chosen: dict[str, float] = {}
            for voice, weight in zip(pairs[:BLEND_SLOTS], pairs[BLEND_SLOTS:]):
                if voice:
                    if voice in chosen:
                        raise AppError(f"{voice} is chosen twice; pick each voice once")
                    chosen[voice] = float(weight)
            made = self.studio.blend(new_name, chosen)
            return {**self._voice_updates(),
                    status: f"Blended **{made}** = " + " + ".join(f"{w:g}×{v}" for v, w in chosen.items())}

        @_guarded(status)
        def export_voice(voice: str, chosen_flavor: str) -> dict:
            path = self.studio.export_pth(voice, chosen_flavor)
            return {exported: str(path), status: f"Exported **{voice}** as {path.name} "
                                                 f"({path.stat().st_size / 1e6:.1f} MB, {chosen_flavor})."}

        @_guarded(status)
        def push_voice(voice: str, repo_id: str, token_text: str, is_private: bool) -> dict:
            url = self.studio.push_to_hub(voice, repo_id, token_text, is_private)
            return {status: f"Pushed **{voice}** to {repo_id}: {url}"}

        def wire() -> None:
            voice_outputs = [status, *self._voice_outputs()]
            add.click(add_voice, [source, name], voice_outputs)
            blend.click(blend_voices, [blend_name, *self.blend_voices, *weights], voice_outputs)

        self._deferred.append(wire)
        export.click(export_voice, [self.export_voice, flavor], [status, exported])
        push.click(push_voice, [self.export_voice, repo, token, private], [status])

    # --- Train ---------------------------------------------------------------------------------------------------
    def _train_tab(self) -> None:
        with gr.Row():
            with gr.Column():
                recordings = gr.Textbox(label="Folder of recordings (on the machine running the app)",
                                        elem_id="train-recordings")
                name = gr.Textbox(label="New voice name", value="my_voice", elem_id="train-name")
                with gr.Row():
                    steps = gr.Number(200, label="Steps", precision=0, minimum=1, elem_id="train-steps")
                    batch = gr.Number(4, label="Batch size", precision=0, minimum=1, elem_id="train-batch")
                    rank = gr.Number(8, label="LoRA rank", precision=0, minimum=1, elem_id="train-rank")
                with gr.Row():
                    method = gr.Dropdown(OFFLINE_F0, value="harvest", label="F0 method (preprocessing)",
                                         elem_id="train-f0")
                    every = gr.Number(50, label="Validate every", precision=0, minimum=1, elem_id="train-every")
                    check = gr.Checkbox(True, label="Reload check at the end", elem_id="train-check")
                gr.Markdown(f"Base: the app's base ({self.studio.base_name}); loss `mel_kl`, constant learning rate "
                            "5e-4 (the recipe of `examples/demo.py`).")
                with gr.Row():
                    start = gr.Button("Start training", variant="primary", elem_id="train-start")
                    stop = gr.Button("Stop", elem_id="train-stop")
                    resume = gr.Button("Resume", elem_id="train-resume")
            with gr.Column():
                self.train_status = gr.Markdown("No training run yet.", elem_id="train-status")
                self.train_losses = gr.LinePlot(x="step", y="value", color="series", label="Losses",
                                                elem_id="train-losses", height=320)
                self.train_audio = gr.Audio(type="filepath", label="Latest validation clip", interactive=False,
                                            elem_id="train-audio")
                self.train_log = gr.Textbox(label="Output", lines=8, max_lines=8, autoscroll=True,
                                            elem_id="train-log")
        status = self.train_status

        @_guarded(status)
        def start_training(folder: str, voice_name: str, n_steps: float, batch_size: float, lora_rank: float,
                           f0_method: str, validate_every: float, final_check: bool) -> dict:
            if self.job is not None and self.job.running:
                raise AppError(f"a training run ({self.job.settings.name}) is still going; stop it first")
            if voice_name.strip() in self.studio.voice_names():
                raise AppError(f"a voice named {voice_name.strip()!r} is already loaded; choose another name")
            settings = TrainingSettings(folder, voice_name, int(n_steps or 0), int(batch_size or 0),
                                        int(lora_rank or 0), 5e-4, f0_method, int(validate_every or 1),
                                        bool(final_check))
            config = self.studio.converter.config
            self.job = TrainingJob(settings, base=self.studio.base_path,
                                   content_encoder=self.studio.content_encoder_path, work_dir=self.studio.work_dir,
                                   sample_rate=config.sample_rate_name, version=config.version,
                                   on_finished=lambda folder, name: self.studio.add_voice(str(folder), name))
            self.job.start()
            return {status: f"Started **{settings.name}**: preprocessing {len(self.job.recordings)} recording(s)…"}

        @_guarded(status)
        def stop_training() -> dict:
            if self.job is None or not self.job.running:
                raise AppError("no training run is going")
            self.job.stop()
            return {status: "Stopping: the trainer saves a checkpoint after this step…"}

        @_guarded(status)
        def resume_training() -> dict:
            if self.job is None:
                raise AppError("no earlier run to resume in this session; start one first")
            self.job.start(resume=True)
            return {status: f"Resuming **{self.job.settings.name}** from its last checkpoint…"}

        start.click(start_training, [recordings, name, steps, batch, rank, method, every, check], [status])
        stop.click(stop_training, None, [status])
        resume.click(resume_training, None, [status])

    def _train_outputs(self) -> list[gr.components.Component]:
        return [self.train_status, self.train_losses, self.train_audio, self.train_log]

    def _train_updates(self, shown: dict) -> tuple[dict, dict]:
        """Updates for the Train view's parts that differ from `shown` (what the tab has), and the new `shown`.

        Unchanged parts are not sent: re-sending the validation clip every second would restart its player.
        """
        if self.job is None:
            return {}, shown
        import pandas as pd

        view = self.job.snapshot()
        done = view["step"] / max(view["total"], 1)
        text = f"**{self.job.settings.name}** — {view['state']}: {view['message']}"
        if view["state"] == "training":
            text += f"  \n`{'█' * round(20 * done)}{'░' * (20 - round(20 * done))}` {100 * done:.0f} %"
        rows = [(step, value, tag.removeprefix("loss/")) for tag, points in view["losses"].items()
                if tag.startswith(("loss/g/", "validation/"))
                for step, value in points]
        audio = str(view["validation_audio"]) if view["validation_audio"] else None
        now = {"job": id(self.job), "status": text, "points": len(rows), "audio": audio, "log": view["log"]}
        updates: dict = {}
        if now["status"] != shown.get("status"):
            updates[self.train_status] = text
        if (now["points"], now["job"]) != (shown.get("points"), shown.get("job")):
            updates[self.train_losses] = pd.DataFrame(rows, columns=["step", "value", "series"]) if rows else None
        if (now["audio"], now["job"]) != (shown.get("audio"), shown.get("job")):
            updates[self.train_audio] = audio
        if now["log"] != shown.get("log"):
            updates[self.train_log] = view["log"]
        return updates, now

    # --- Compare -------------------------------------------------------------------------------------------------
    def _compare_tab(self) -> None:
        with gr.Row():
            with gr.Column():
                audio = gr.Audio(sources=["upload", "microphone"], type="filepath", label="Input",
                                 elem_id="compare-input")
                self.compare_voices = gr.Dropdown(self.names, multiselect=True, max_choices=COMPARE_SLOTS,
                                                  label=f"Voices (up to {COMPARE_SLOTS})", elem_id="compare-voices")
                settings = self._settings_inputs("compare")
                quality = gr.Checkbox(False, label="Also SECS and DNSMOS (needs the quality extra; slower)")
                button = gr.Button("Compare", variant="primary", elem_id="compare-button")
            with gr.Column():
                status = gr.Markdown(elem_id="compare-status")
                table = gr.Dataframe(label="Metrics against the input", interactive=False, elem_id="compare-table")
        slots = []
        with gr.Row():
            for slot in range(COMPARE_SLOTS):
                with gr.Column(min_width=200):
                    slots.append((gr.Audio(type="filepath", interactive=False, label=f"Voice {slot + 1}",
                                           elem_id=f"compare-audio-{slot}"),
                                  gr.Image(type="filepath", interactive=False, show_label=False,
                                           elem_id=f"compare-figure-{slot}")))

        @_guarded(status)
        def compare(path: str | None, voices: list[str], want_quality: bool, *knobs: Any,
                    progress: gr.Progress = gr.Progress()) -> dict:  # noqa: B008 (Gradio's API)
            import pandas as pd

            progress(0.05, desc="converting")
            results = self.studio.compare(path, list(voices or []), self._settings(*knobs), quality=want_quality)
            out: dict = {}
            for slot, (audio_out, figure_out) in enumerate(slots):
                done = results[slot] if slot < len(results) else None
                out[audio_out] = gr.update(value=str(done.path) if done else None,
                                           label=done.voice if done else f"Voice {slot + 1}")
                out[figure_out] = str(done.figure) if done and done.figure else None
            keys = [k for k in ("mcd_db", "f0_rmse_cents", "f0_corr", "vuv_error_rate", "secs_source", "dnsmos_ovrl")
                    if any(k in r.metrics for r in results)]
            out[table] = pd.DataFrame([[r.voice, *[_rounded(r.metrics.get(k)) for k in keys], round(r.seconds, 2)]
                                       for r in results], columns=["voice", *keys, "seconds"])
            out[status] = f"Compared {len(results)} voice(s): " + ", ".join(r.voice for r in results) + "."
            return out

        outputs = [status, table, *[c for pair in slots for c in pair]]
        button.click(compare, [audio, self.compare_voices, quality, *settings], outputs)


def _rounded(value: Any) -> Any:
    return round(value, 3) if isinstance(value, float) else value


def _metrics_line(metrics: dict[str, Any]) -> str:
    if "note" in metrics:
        return f"  \n{metrics['note']}"
    parts = []
    if "mcd_db" in metrics:
        parts.append(f"MCD {metrics['mcd_db']:.2f} dB")
    if metrics.get("f0_corr") is not None:
        parts.append(f"F0 correlation {metrics['f0_corr']:.3f}")
    return ("  \nAgainst the input: " + ", ".join(parts)) if parts else ""


def build_app(studio: Studio | None = None) -> AppUI:
    """The page over `studio` (default: a `Studio` on the voice-lab base). Launch it with `launch`."""
    return AppUI(studio if studio is not None else Studio())


def theme() -> gr.themes.Base:
    """Gradio's default look with system fonts: the stock theme would fetch its fonts from Google (offline: none)."""
    return gr.themes.Default(font=SYSTEM_FONTS, font_mono=MONO_FONTS)


def launch(app: AppUI, *, host: str | None = None, port: int | None = None, block: bool = True,
           **kwargs: Any) -> Any:
    """Start the server (never a share link); `block=False` returns at once (tests). Returns Gradio's launch value."""
    app.blocks.queue(default_concurrency_limit=2)
    return app.blocks.launch(server_name=host, server_port=port, share=False, prevent_thread_lock=not block,
                             allowed_paths=[str(app.studio.work_dir)], theme=theme(), show_error=False, quiet=True,
                             **kwargs)
