"""The README model card of an RVC voice adapter (written on `save_pretrained` and `push_to_hub`).

Metadata: `library_name: peft`, `base_model` (when the base is a hub id), tags `rvc`, `voice-conversion`, `lora`,
`rvc-<version>`, `<rate>`, pipeline `audio-to-audio`. Body: the RVC facts (version, pitch, sample rate, content
encoder, speaker id, base name and weight hash), the LoRA rank/alpha/targets/parameter count, usage, and the training
summary when one was attached (`set_training_summary`).

The generated body sits between `<!-- rvc-peft:begin -->` / `<!-- rvc-peft:end -->` markers. Re-saving replaces only
that section, so text a user added to the card outside it is kept; PEFT's empty template card is replaced.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from .lora.presets import preset_of
from .provenance import hub_repo_of

BEGIN, END = "<!-- rvc-peft:begin -->", "<!-- rvc-peft:end -->"
BASE_TAGS = ("rvc", "voice-conversion", "lora")
# a line of the Hugging Face default model-card template (what PeftModel.save_pretrained writes when no card exists)
_TEMPLATE_MARKER = "<!-- Provide a quick summary of what the model is/does. -->"


def card_tags(facts: dict[str, Any]) -> list[str]:
    """The card's tags for an adapter with these RVC facts."""
    rate = facts.get("sampling_rate")
    tags = [*BASE_TAGS, f"rvc-{facts.get('version')}", f"{int(rate) // 1000}k" if isinstance(rate, int) else None]
    return [tag for tag in tags if tag]


def _hub_base_model(facts: dict[str, Any], config: Any) -> str | None:
    for name in ((facts.get("base_model") or {}).get("name_or_path"), getattr(config, "base_model_name_or_path", None)):
        repo = hub_repo_of(name)
        if repo:
            return repo
    return None


def _targets_text(config: Any, adapter: dict[str, Any]) -> str:
    preset = preset_of(config.target_modules)
    text = f'preset "{preset}"' if preset else f"`{config.target_modules}`"
    groups = adapter.get("target_groups") or {}
    if groups:
        text += " — " + ", ".join(f"{name} ×{count}" for name, count in groups.items())
    return text


def _table(rows: list[tuple[str, Any]]) -> str:
    lines = ["| | |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in rows if value not in (None, "")]
    return "\n".join(lines)


def card_body(config: Any, facts: dict[str, Any]) -> str:
    """The generated Markdown section (between the markers)."""
    import peft

    from .. import __version__

    base = facts.get("base_model") or {}
    adapter = facts.get("adapter") or {}
    rate = facts.get("sampling_rate")
    rate_text = f"{rate} Hz ({int(rate) // 1000}k)" if isinstance(rate, int) else str(rate)
    base_name = base.get("name_or_path") or config.base_model_name_or_path
    rank_text = f"{config.r} / {config.lora_alpha}"
    if config.rank_pattern:
        rank_text += f" (per-layer ranks: {dict(config.rank_pattern)})"
    facts_rows = [
        ("RVC version", facts.get("version")),
        ("pitch (f0)", "yes" if facts.get("use_f0") else "no"),
        ("sample rate", rate_text),
        ("content encoder", f"{facts.get('content_encoder')} ({facts.get('content_dim')}-d features)"),
        ("speaker id", facts.get("speaker_id")),
        ("base model", f"`{base_name}`" if base_name else "unnamed"),
        ("base model class", base.get("rvc_class")),
        ("base weights", f"`{base.get('fingerprint')}`" if base.get("fingerprint") else None),
        ("LoRA rank / alpha", rank_text),
        ("targets", _targets_text(config, adapter)),
        ("adapter parameters", f"{adapter['num_parameters']:,}" if adapter.get("num_parameters") else None),
    ]
    base_arg = f'"{base_name}"' if base_name else '"path/to/base.pth"'
    pitch = "with" if facts.get("use_f0") else "without"
    intro = (
        f"A LoRA adapter for an RVC {facts.get('version')} {rate_text} voice model {pitch} pitch, made with rvc-peft "
        "and [PEFT](https://github.com/huggingface/peft). It only loads onto the base below: rvc-peft checks the "
        "version, sample rate and layer shapes when it is loaded."
    )
    usage = (
        "```python\nimport rvc_peft\nfrom peft import PeftModel\n\n"
        f"base = rvc_peft.load_synthesizer({base_arg})\n"
        'model = PeftModel.from_pretrained(base, "<this repo or folder>")\n'
        "voice = model.merge_and_unload()           # a plain RVC synthesizer again\n"
        'rvc_peft.export_rvc(voice, "voice.pth")   # loads in RVC WebUI / Applio\n```\n\n'
        f"Or in one step: `rvc-peft export --base {base_arg.strip(chr(34))} --adapter <this repo or folder> "
        "--out voice.pth`."
    )
    sections = ["# RVC voice adapter (LoRA)", intro, _table(facts_rows), "## Usage", usage]
    training = facts.get("training")
    if isinstance(training, dict) and training:
        rows = [(str(key), f"`{value}`" if isinstance(value, (dict, list)) else value) for key, value in training.items()]
        sections += ["## Training", _table(rows)]
    sections += ["### Framework versions", f"- PEFT {peft.__version__}\n- rvc-peft {__version__}"]
    return "\n\n".join(sections)


def _merge_body(existing: str | None, section: str) -> str:
    block = f"{BEGIN}\n{section}\n{END}"
    if existing and BEGIN in existing and END in existing:
        pattern = re.escape(BEGIN) + r".*?" + re.escape(END)
        return re.sub(pattern, lambda _: block, existing, count=1, flags=re.DOTALL)
    if not existing or not existing.strip() or _TEMPLATE_MARKER in existing:
        return block + "\n"
    return block + "\n\n" + existing.lstrip("\n")


def write_model_card(directory: str | os.PathLike, config: Any, facts: dict[str, Any]) -> Path:
    """Create or update `<directory>/README.md` for an RVC adapter (atomic write) and return its path."""
    from huggingface_hub import ModelCard, ModelCardData

    from ..utils.files import atomic_write

    path = Path(directory) / "README.md"
    if path.is_file():
        card = ModelCard.load(path)
        data, existing = card.data, card.text
    else:
        data, existing = ModelCardData(), None
    data.library_name = "peft"
    base_model = _hub_base_model(facts, config)
    if base_model:
        data.base_model = base_model
    elif isinstance(getattr(data, "base_model", None), str) and hub_repo_of(data.base_model) != data.base_model:
        data.base_model = None  # a local file path is not a valid Hub base_model
    # PEFT tags "base_model:adapter:<name_or_path>", which for a local base is a private path: keep hub ids only
    tags = {
        tag for tag in (data.tags or [])
        if not tag.startswith("base_model:adapter:") or hub_repo_of(tag.split(":", 2)[2]) == tag.split(":", 2)[2]
    }
    if base_model:
        tags.add(f"base_model:adapter:{base_model}")
    data.tags = sorted(tags | set(card_tags(facts)))
    data.pipeline_tag = data.pipeline_tag or "audio-to-audio"
    content = f"---\n{data.to_yaml()}\n---\n\n{_merge_body(existing, card_body(config, facts))}"
    atomic_write(path, lambda tmp: tmp.write_text(content))
    return path
