"""Installing rvc_peft's LoRA tuner into PEFT (done once, on `import rvc_peft.tuners`).

PEFT looks the tuner class of a PEFT type up in `peft.mapping.PEFT_TYPE_TO_TUNER_MAPPING` (and
`PEFT_TYPE_TO_MIXED_MODEL_MAPPING`) at call time — in `get_peft_model`, `PeftModel.from_pretrained` /
`load_adapter`, `inject_adapter_in_model`, transformers' `add_adapter` / `load_adapter` and the state-dict helpers.
`register()` puts `RVCLoraModel` there for `PeftType.LORA`, so all of these handle ConvTranspose1d and dilated /
weight-normed Conv1d with no extra arguments, while adapters stay plain `peft_type: LORA`.

It also routes `PeftModel.push_to_hub` of RVC adapters through `push_adapter_to_hub`, so the uploaded README is the
RVC model card (transformers' generic push would replace it with a template card); other models push as before.

`stock_peft()` temporarily restores PEFT's own tuner (for comparisons, or to build an adapter plain PEFT can load).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from peft import PeftModel
from peft.mapping import PEFT_TYPE_TO_MIXED_MODEL_MAPPING, PEFT_TYPE_TO_TUNER_MAPPING
from peft.utils import PeftType

from .lora.model import RVCLoraModel

_saved: dict[str, Any] = {}
_MISSING = object()


def _rvc_push_to_hub(self: PeftModel, repo_id: str, **kwargs: Any) -> Any:
    from .api import is_rvc_adapter_model, push_adapter_to_hub

    if is_rvc_adapter_model(self):
        return push_adapter_to_hub(self, repo_id, **kwargs)
    return _saved["push_to_hub"](self, repo_id, **kwargs)


def is_registered() -> bool:
    """True while rvc_peft's LoRA tuner is installed in PEFT."""
    return PEFT_TYPE_TO_TUNER_MAPPING.get(PeftType.LORA) is RVCLoraModel


def register() -> None:
    """Install `RVCLoraModel` as PEFT's LoRA tuner (idempotent)."""
    if is_registered():
        return
    _saved["tuner"] = PEFT_TYPE_TO_TUNER_MAPPING.get(PeftType.LORA)
    _saved["mixed"] = PEFT_TYPE_TO_MIXED_MODEL_MAPPING.get(PeftType.LORA, _MISSING)
    _saved["own_push"] = PeftModel.__dict__.get("push_to_hub", _MISSING)
    _saved["push_to_hub"] = PeftModel.push_to_hub
    PEFT_TYPE_TO_TUNER_MAPPING[PeftType.LORA] = RVCLoraModel
    PEFT_TYPE_TO_MIXED_MODEL_MAPPING[PeftType.LORA] = RVCLoraModel
    PeftModel.push_to_hub = _rvc_push_to_hub


def unregister() -> None:
    """Put PEFT's own LoRA tuner back (undo `register`)."""
    if not is_registered():
        return
    PEFT_TYPE_TO_TUNER_MAPPING[PeftType.LORA] = _saved["tuner"]
    if _saved["mixed"] is _MISSING:
        PEFT_TYPE_TO_MIXED_MODEL_MAPPING.pop(PeftType.LORA, None)
    else:
        PEFT_TYPE_TO_MIXED_MODEL_MAPPING[PeftType.LORA] = _saved["mixed"]
    if _saved["own_push"] is _MISSING:
        del PeftModel.push_to_hub
    else:
        PeftModel.push_to_hub = _saved["own_push"]


@contextmanager
def stock_peft() -> Iterator[None]:
    """Run a block with PEFT's stock LoRA tuner, re-installing rvc_peft's afterwards if it was installed."""
    was_registered = is_registered()
    unregister()
    try:
        yield
    finally:
        if was_registered:
            register()
