"""High-level entry points for RVC voice adapters: make one, push it, merge it back into an RVC voice file."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from peft import PeftConfig, PeftModel, get_peft_model
from torch import nn

from ..utils.hub import HubReference, classify, resolve
from .lora.config import RVCLoraConfig
from .provenance import (
    ADAPTER_WEIGHTS_NAME,
    IncompatibleAdapterError,
    check_adapter_folder,
    facts_of_config,
    loading_adapter_file,
)


def get_rvc_peft_model(
    base: nn.Module, config: PeftConfig | None = None, adapter_name: str = "default", **kwargs: Any
) -> PeftModel:
    """Fold the base's weight norm away (in place, outputs unchanged), then wrap it with a LoRA adapter.

    LoRA then goes into plain weights ("after weight-norm removal", as RVC fine-tuning recipes do), so merging is a
    plain addition and the merged model exports like any folded RVC model. `config` defaults to `RVCLoraConfig()`
    (the "generator" preset, r=8, alpha=16); `kwargs` go to `peft.get_peft_model`.
    Returns the `PeftModel`; only the adapter is trainable.
    """
    from ..models import fold_weight_norm

    fold_weight_norm(base)
    return get_peft_model(base, config if config is not None else RVCLoraConfig(), adapter_name=adapter_name, **kwargs)


def is_rvc_adapter_model(model: nn.Module) -> bool:
    """True if any adapter of `model` was made on an RVC base (its config carries RVC facts)."""
    configs = getattr(model, "peft_config", None)
    return isinstance(configs, dict) and any(facts_of_config(config) is not None for config in configs.values())


def push_adapter_to_hub(
    model: PeftModel,
    repo_id: str,
    *,
    adapter_name: str | None = None,
    commit_message: str | None = None,
    commit_description: str | None = None,
    private: bool | None = None,
    token: bool | str | None = None,
    revision: str | None = None,
    create_pr: bool = False,
    tags: list[str] | None = None,
    **save_kwargs: Any,
) -> Any:
    """Upload an RVC adapter (`save_pretrained` output: adapter files, `rvc_adapter.json`, the RVC model card).

    Use this rather than `model.push_to_hub(repo_id)`: PEFT's push (left as it is by rvc_peft) uploads the same files
    but replaces the RVC model card with transformers' generic template. Creates the repo if needed, saves to a
    temporary folder, adds `tags` to the card and uploads everything in one commit. Returns the `CommitInfo`.
    `adapter_name`: upload only this voice, at the top of the repository (PEFT's `save_pretrained` puts an adapter
    not named "default" in a sub-folder, which `PeftModel.from_pretrained(base, repo_id)` would not find).
    `save_kwargs` go to `save_pretrained` (e.g. `selected_adapters`); `max_shard_size` is ignored (adapters are small).
    """
    from huggingface_hub import HfApi, ModelCard

    save_kwargs.pop("max_shard_size", None)
    if adapter_name is not None:
        if adapter_name not in getattr(model, "peft_config", {}):
            raise ValueError(f"push_adapter_to_hub: no adapter named {adapter_name!r} (the model has "
                             f"{sorted(getattr(model, 'peft_config', {}))})")
        save_kwargs["selected_adapters"] = [adapter_name]
    api = HfApi(token=token)
    repo_id = api.create_repo(repo_id, private=private, exist_ok=True, token=token).repo_id
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp, **save_kwargs)
        folder = tmp
        if adapter_name is not None and (Path(tmp) / adapter_name / "adapter_config.json").is_file():
            folder = str(Path(tmp) / adapter_name)  # the voice's own files, at the top of the repository
        if tags:
            for card_path in Path(folder).rglob("README.md"):
                card = ModelCard.load(card_path)
                card.data.tags = sorted(set(card.data.tags or []) | set(tags))
                card.save(card_path)
        return api.upload_folder(
            repo_id=repo_id, folder_path=folder, commit_message=commit_message or "Upload RVC voice adapter",
            commit_description=commit_description, token=token, revision=revision, create_pr=create_pr,
        )


def export_merged_voice(
    base: str | os.PathLike | nn.Module,
    adapter: str | os.PathLike,
    out: str | os.PathLike,
    *,
    info: str | None = None,
    flavor: str = "webui",
    base_kwargs: dict[str, Any] | None = None,
    adapter_kwargs: dict[str, Any] | None = None,
) -> Path:
    """Merge an adapter into its base and write an RVC voice `.pth` that RVC WebUI / Applio load unchanged.

    `base`: an RVC file / hub id (read with `rvc_peft.load_synthesizer(base, **base_kwargs)`) or a loaded
    `RVCSynthesizer`; `adapter`: adapter folder or hub id (`PeftModel.from_pretrained`, with `adapter_kwargs`).
    `info`: the voice's info text (None: the base voice's own, empty for a pretrained base; with
    `flavor="applio"` written only when given). `flavor`: "webui" or "applio" (see `export_rvc`). A wrong base
    fails with `IncompatibleAdapterError` before anything is written; the output is written atomically.
    Returns the output path.
    """
    from ..checkpoints import export_rvc, load_synthesizer

    adapter_kwargs = adapter_kwargs or {}
    if isinstance(classify(adapter), HubReference):  # a missing local path fails here, at once
        # fetch through the one resolver (fast offline errors, no retry storm), then load the local copy
        adapter = resolve(adapter, revision=adapter_kwargs.pop("revision", None),
                          **({"token": adapter_kwargs["token"]} if adapter_kwargs.get("token") else {}))
    weights_file = checked_local_adapter(adapter, adapter_kwargs.get("subfolder"))  # before the (slower) base
    model = load_synthesizer(base, **(base_kwargs or {})) if isinstance(base, (str, os.PathLike)) else base
    with loading_adapter_file(weights_file):
        try:
            peft_model = PeftModel.from_pretrained(model, str(adapter), **adapter_kwargs)
        except IncompatibleAdapterError as err:
            if str(adapter) in str(err):
                raise
            raise IncompatibleAdapterError(f"{adapter}: {err}") from None  # the provenance check names no file
    export_rvc(peft_model.merge_and_unload(), out, info=info, flavor=flavor)
    return Path(out)


def checked_local_adapter(adapter: str | os.PathLike, subfolder: str | None = None) -> Path | None:
    """For a local adapter folder: check its files (`check_adapter_folder`) and return its weights file.

    A missing local path (`rvc_peft.utils.hub.classify`: a single name, `./x`, ...) fails at once, naming it. Hub
    ids return None: PEFT downloads them, and the checks in its load path still run (`RVCLoraModel`), naming the
    adapter instead of the file.
    """
    if isinstance(classify(adapter), HubReference):
        return None
    folder = Path(adapter, subfolder) if subfolder else Path(adapter)
    check_adapter_folder(folder)
    return folder / ADAPTER_WEIGHTS_NAME
