"""Many voices on one base: LoRA adapters loaded once, switched by name, mixed per row, blended, merged when alone.

A `VoiceBank` holds one `RVCSynthesizer` and any number of PEFT LoRA adapters on it (local folders or Hub ids).
Switching voices is PEFT's `set_adapter` (a flag per layer: milliseconds, no weights move); a batch whose rows use
different voices goes through PEFT's per-row `adapter_names=` routing; `blend` is `add_weighted_adapter`; a voice used
alone can be merged into the base weights (`activate(name, merge=True)`) so the forward pass costs exactly what the
base costs, and is unmerged again before the next switch. Every voice can carry its own retrieval index and speaker id.

    bank = VoiceBank.from_pretrained("f0G40k.pth")
    bank.add_voice("adapters/alice")                  # name "alice", index found in the folder if there is one
    bank.add_voice("user/bob-rvc-lora", name="bob", index="bob.index")
    bank.blend("alibob", {"alice": 0.5, "bob": 0.5})
    bank.activate("bob", merge=True)
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

BASE = "__base__"  # the base model without any adapter (PEFT's own name for it in adapter_names=)


class VoiceError(ValueError):
    """A voice that cannot be loaded, found or combined; the message names it (and the file or hub id)."""


@dataclass
class Voice:
    """One named voice of a `VoiceBank`.

    `source`: adapter folder / hub id (None for blends); `speaker_id`: row of `emb_g` (None: the converter's
    default); `index`: retrieval index object or `.index` path (None: no retrieval unless the call passes one);
    `facts`: the adapter's RVC facts (`rvc_adapter.json`), `blend_of`: {voice: weight} for blended voices.
    """

    name: str
    source: str | None
    speaker_id: int | None = None
    index: Any = None
    facts: dict[str, Any] = field(default_factory=dict)
    blend_of: dict[str, float] | None = None


class VoiceBank:
    """One RVC base synthesizer serving many LoRA voices (see the module docstring).

    Attributes: `base` (the `RVCSynthesizer`; adapters are injected into it in place), `peft_model` (the
    `PeftModel` once a voice is added, else None), `active` (name of the active voice, None = base), `merged`
    (name of the voice merged into the weights, or None), `last_switch_seconds`.
    `fold=True` removes the base's weight norm first (outputs unchanged; see `rvc_peft.models.fold_weight_norm`).
    """

    BASE = BASE

    def __init__(self, base: torch.nn.Module, *, fold: bool = True) -> None:
        import rvc_peft.tuners  # noqa: F401  (installs the RVC LoRA layers into PEFT)

        if fold:
            # Weight norm is recomputed from (g, v) at every forward and every `.weight` read (PEFT reads weights
            # often while loading and merging). Folding it into plain weights changes no output (the adapters'
            # provenance hash uses the effective weights, so it is unchanged too) and makes merges plain additions.
            from ..models import fold_weight_norm

            fold_weight_norm(base)
        self.base = base.eval()
        self.peft_model: Any = None
        self._voices: dict[str, Voice] = {}
        self.active: str | None = None
        self.merged: str | None = None
        self.last_switch_seconds = 0.0
        self._layers_on = True  # whether PEFT's adapter layers are enabled (False: plain base output)

    @classmethod
    def from_pretrained(cls, base: str | os.PathLike, *, device: str | torch.device = "cpu", **kwargs: Any) -> VoiceBank:
        """Load the base with `load_synthesizer(base, keep_posterior_encoder=False, **kwargs)`."""
        from ..checkpoints import load_synthesizer

        return cls(load_synthesizer(base, keep_posterior_encoder=False, device=device, **kwargs))

    @classmethod
    def from_peft_model(cls, model: Any) -> VoiceBank:
        """Wrap an existing `PeftModel` on an RVC base: each of its adapters becomes a voice of that name.

        Speaker ids come from the adapters' RVC facts; the active adapter stays active. Nothing is copied: the bank
        drives the same model object.
        """
        from ..tuners.provenance import facts_of_config

        bank = cls(model.get_base_model(), fold=False)
        bank.peft_model = model
        for name, config in model.peft_config.items():
            facts = facts_of_config(config) or {}
            speaker_id = facts.get("speaker_id")
            bank._voices[name] = Voice(name, getattr(config, "base_model_name_or_path", None),
                                       None if speaker_id is None else int(speaker_id), None, facts)
        active = model.active_adapter
        bank.active = active if isinstance(active, str) and active in bank._voices else None
        if any(getattr(module, "merged", False) for module in bank.base.modules()):
            bank.merged = bank.active
        bank._restore_active()
        return bank

    # --- what the pipeline uses --------------------------------------------------------------------------------
    @property
    def config(self) -> Any:
        return self.base.config

    @property
    def synthesizer(self) -> torch.nn.Module:
        """The module whose `infer` runs (the base, with LoRA layers injected once a voice was added)."""
        return self.base

    @property
    def names(self) -> list[str]:
        return list(self._voices)

    def __contains__(self, name: object) -> bool:
        return name in self._voices

    def voice(self, name: str) -> Voice:
        if name not in self._voices:
            known = ", ".join(self._voices) or "none (only the base model)"
            raise VoiceError(f"no voice named {name!r}; loaded voices: {known}")
        return self._voices[name]

    def resolve(self, name: str | None) -> str | None:
        """The voice a call means: `name` (checked); None = the active voice; `BASE` = the base alone (-> None)."""
        if name is None:
            return self.active
        if name == BASE:
            return None
        self.voice(name)
        return name

    # --- adding voices ----------------------------------------------------------------------------------------
    def add_voice(
        self,
        source: str | os.PathLike,
        name: str | None = None,
        *,
        index: Any = "auto",
        speaker_id: int | None = None,
        revision: str | None = None,
        subfolder: str | None = None,
    ) -> Voice:
        """Load a LoRA adapter (folder or hub id) as a voice; the base is never reloaded.

        `name` defaults to the folder / repo name. `index="auto"` uses the single `*.index` file in a local adapter
        folder, if there is exactly one; pass a path or `RetrievalIndex` to choose, or None for no retrieval.
        `speaker_id` defaults to the adapter's recorded speaker id. Raises `VoiceError` (adapter made for another
        base, missing files, duplicate name) without touching the voices already loaded.
        """
        source = str(source)
        name = name or Path(source.rstrip("/")).name
        self._check_new_name(name)
        facts = self._read_facts(source, revision=revision, subfolder=subfolder)
        if facts:
            from ..tuners.provenance import check_compatible

            check = check_compatible
            try:
                check(facts, self.base, name)
            except ValueError as err:
                raise VoiceError(f"{source}: {err}") from None
        self._load_adapter(source, name, revision=revision, subfolder=subfolder)
        if index == "auto":
            index = _find_index(source, subfolder)
        if speaker_id is None and facts.get("speaker_id") is not None:
            speaker_id = int(facts["speaker_id"])
        voice = Voice(name, source, speaker_id, index, facts)
        self._voices[name] = voice
        if len(self._voices) == 1:
            self.activate(name)  # the first voice becomes the active one
        return voice

    def _check_new_name(self, name: str) -> None:
        if not name or name == BASE or "." in name or hasattr(torch.nn.Module, name):
            raise VoiceError(f"invalid voice name {name!r}: use a non-empty name without '.', other than {BASE!r} "
                             "and torch.nn.Module attributes such as 'half' or 'train'")
        if name in self._voices:
            raise VoiceError(f"a voice named {name!r} is already loaded; pass another name=")

    @staticmethod
    def _read_facts(source: str, **hub: Any) -> dict[str, Any]:
        from ..tuners.provenance import read_adapter_info

        hub = {k: v for k, v in hub.items() if v is not None}
        folder = Path(source, hub.get("subfolder", ""))
        if folder.exists() and not (folder / "adapter_config.json").is_file():
            raise VoiceError(f"{folder}: not a PEFT adapter folder (no adapter_config.json)")
        try:
            return read_adapter_info(source, **hub)
        except ValueError:
            return {}  # a plain PEFT adapter without RVC facts: PEFT's own shape checks still apply

    def _load_adapter(self, source: str, name: str, **hub: Any) -> None:
        from peft import PeftModel

        from ..tuners.api import checked_local_adapter
        from ..tuners.provenance import loading_adapter_file

        hub = {k: v for k, v in hub.items() if v is not None}
        try:
            # damaged, pickled or NaN-filled adapter files are refused before PEFT touches the model
            weights_file = checked_local_adapter(source, hub.get("subfolder"))
        except ValueError as err:
            raise VoiceError(f"cannot load voice {name!r}: {err}") from None
        was_merged = self.merged
        self._unmerge()
        try:
            with loading_adapter_file(weights_file):
                if self.peft_model is None:
                    self.peft_model = PeftModel.from_pretrained(self.base, source, adapter_name=name,
                                                                is_trainable=False, **hub)
                else:
                    self.peft_model.load_adapter(source, adapter_name=name, is_trainable=False, **hub)
        except Exception as err:  # PEFT and the hub raise many types; report them all the same way
            self._discard_partial(name)
            raise VoiceError(f"{source}: cannot load this adapter as voice {name!r}: {err}") from err
        finally:
            self._restore_active()
            if was_merged is not None and was_merged in self._voices and self.peft_model is not None:
                self._merge(was_merged)

    def _discard_partial(self, name: str) -> None:
        """After a failed load: drop whatever PEFT injected for `name`, leaving the other voices as they were."""
        if self.peft_model is None:
            # the first PeftModel.from_pretrained failed after injecting layers: put the plain layers back
            from peft.tuners.tuners_utils import BaseTunerLayer

            for module_name, module in list(self.base.named_modules()):
                if isinstance(module, BaseTunerLayer) and module_name:
                    parent_name, _, child = module_name.rpartition(".")
                    parent = self.base.get_submodule(parent_name) if parent_name else self.base
                    setattr(parent, child, module.get_base_layer())
            return
        if name in getattr(self.peft_model, "peft_config", {}):
            with contextlib.suppress(Exception):  # best effort; the voice is not registered either way
                self.peft_model.delete_adapter(name)

    def blend(
        self,
        name: str,
        weights: Mapping[str, float],
        *,
        combination_type: str = "cat",
        speaker_id: int | None = None,
        index: Any = None,
        **kwargs: Any,
    ) -> Voice:
        """Make a new voice from a weighted combination of loaded voices (PEFT `add_weighted_adapter`).

        `combination_type="cat"` (default) gives exactly `Σ wᵢ·ΔWᵢ` per layer (ranks add up); "linear" needs equal
        ranks and combines A and B separately; "svd" re-factorises `Σ wᵢ·ΔWᵢ` at the largest rank. Weights may be
        negative. `speaker_id` defaults to that of the voice with the largest |weight|; `index` defaults to none.
        """
        self._check_new_name(name)
        if self.peft_model is None or not weights:
            raise VoiceError("blend needs at least one loaded voice")
        names = list(weights)
        for voice_name in names:
            self.voice(voice_name)
        self._unmerge()
        try:
            self.peft_model.add_weighted_adapter(names, [float(weights[n]) for n in names], name,
                                                 combination_type=combination_type, **kwargs)
        except Exception as err:  # PEFT raises ValueError, RuntimeError, TypeError ...
            self._discard_partial(name)
            raise VoiceError(f"cannot blend {names} into {name!r} ({combination_type}): {err}") from err
        if speaker_id is None:
            strongest = max(names, key=lambda n: abs(weights[n]))
            speaker_id = self._voices[strongest].speaker_id
        voice = Voice(name, None, speaker_id, index, {}, {n: float(weights[n]) for n in names})
        self._voices[name] = voice
        self._restore_active()
        return voice

    def remove_voice(self, name: str) -> None:
        """Unload a voice (its adapter weights are freed; the base and other voices stay)."""
        self.voice(name)
        if self.merged is not None:
            self._unmerge()
        if self.active == name:
            self.activate(None)
        others = [other for other in self._voices if other != name]
        if self.peft_model.active_adapter == name and others:
            self.peft_model.set_adapter(others[0], inference_mode=True)  # PEFT warns when deleting its active one
        self.peft_model.delete_adapter(name)
        del self._voices[name]
        self._restore_active()

    # --- switching ---------------------------------------------------------------------------------------------
    def activate(self, name: str | None, merge: bool = False) -> None:
        """Make `name` the voice used by plain calls (None = the base alone); `merge=True` folds it into the weights.

        Cost: setting PEFT's active adapter is a flag per LoRA layer; merging computes ΔW per layer (and a switch away
        from a merged voice first subtracts it again). The time of the last call is in `last_switch_seconds`.
        """
        started = time.perf_counter()
        name = self.resolve(name) if name is not None else None
        want_merged = name if merge else None
        if not (self.active == name and self.merged == want_merged and self._layers_on == (name is not None)):
            self._unmerge()
            self.active = name
            self._apply_active()
            if want_merged is not None:
                self._merge(name)
        self.last_switch_seconds = time.perf_counter() - started

    def prepare_mixed(self) -> None:
        """Get ready for per-row voices: unmerge and enable the adapter layers (PEFT routes rows only then)."""
        self._unmerge()
        if self.peft_model is not None and not self._layers_on:
            self.peft_model.base_model.enable_adapter_layers()
            self._layers_on = True

    def _apply_active(self) -> None:
        """Point PEFT at `self.active` (None: adapter layers disabled, the base alone)."""
        if self.peft_model is None:
            return
        tuner = self.peft_model.base_model
        if self.active is None:
            if self._layers_on:
                tuner.disable_adapter_layers()
                self._layers_on = False
            return
        if not self._layers_on:
            tuner.enable_adapter_layers()
            self._layers_on = True
        if self.peft_model.active_adapter != self.active:
            self.peft_model.set_adapter(self.active, inference_mode=True)

    def _merge(self, name: str) -> None:
        self.peft_model.base_model.merge_adapter([name])
        self.merged = name

    def _unmerge(self) -> None:
        if self.merged is not None and self.peft_model is not None:
            from peft.tuners.tuners_utils import BaseTunerLayer

            # only layers that hold a merged adapter (PEFT's unmerge_adapter warns on every other one)
            for module in self.base.modules():
                if isinstance(module, BaseTunerLayer) and module.merged:
                    module.unmerge()
        self.merged = None

    def _restore_active(self) -> None:
        """After PEFT loaded, combined or deleted adapters: force its state to `self.active` (it may have moved)."""
        if self.peft_model is None:
            return
        self.peft_model.eval()
        tuner = self.peft_model.base_model
        if self.active is None:
            tuner.disable_adapter_layers()
            self._layers_on = False
        else:
            tuner.enable_adapter_layers()
            self._layers_on = True
            self.peft_model.set_adapter(self.active, inference_mode=True)

    # --- running ---------------------------------------------------------------------------------------------
    @torch.no_grad()
    def infer(self, phone: torch.Tensor, *, voices: list[str | None] | None = None, **kwargs: Any) -> tuple:
        """`RVCSynthesizer.infer(phone, **kwargs)` with the active voice, or with one voice per row.

        voices: None (every row uses the active voice) or a list of length B naming each row's voice (None or
        `BASE` = the base alone).
        Returns `infer`'s tuple `(audio [B, 1, T·hop], x_mask, (z, z_p, m_p, logs_p))`.
        """
        if voices is None:
            return self.base.infer(phone, **kwargs)
        if len(voices) != phone.shape[0]:
            raise ValueError(f"got {len(voices)} voices for a batch of {phone.shape[0]} rows")
        for name in voices:
            if name is not None and name != BASE:
                self.voice(name)
        if self.peft_model is None:
            return self.base.infer(phone, **kwargs)
        self.prepare_mixed()
        names = [name if name is not None else BASE for name in voices]
        hooks = self.peft_model.base_model._enable_peft_forward_hooks(adapter_names=names)
        with hooks:
            return self.base.infer(phone, **kwargs)


def _find_index(source: str, subfolder: str | None) -> str | None:
    folder = Path(source, subfolder or "")
    if not folder.is_dir():
        return None
    found = sorted(p for p in folder.glob("*.index") if p.is_file())
    return str(found[0]) if len(found) == 1 else None
