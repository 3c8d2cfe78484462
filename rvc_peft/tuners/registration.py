"""Installing rvc_peft's LoRA tuner into PEFT (done once, on `import rvc_peft.tuners`).

PEFT looks the tuner class of a PEFT type up in `peft.mapping.PEFT_TYPE_TO_TUNER_MAPPING` (and
`PEFT_TYPE_TO_MIXED_MODEL_MAPPING`) at call time — in `get_peft_model`, `PeftModel.from_pretrained` /
`load_adapter`, `inject_adapter_in_model`, transformers' `add_adapter` / `load_adapter` and the state-dict helpers.
`register()` puts `RVCLoraModel` there for `PeftType.LORA`, so all of these handle RVC networks with no extra
arguments, while adapters stay plain `peft_type: LORA`.

The entry is a dispatcher, not a replacement: `RVCLoraModel(model, ...)` builds PEFT's own `LoraModel` for every
model that is not an RVC network and has no `ConvTranspose1d` (the one layer type stock PEFT refuses), so PEFT
behaves exactly as stock there (see `RVCLoraModel.__new__`). Nothing else in PEFT is patched: the RVC model card is
uploaded by `rvc_peft.push_adapter_to_hub`, not by `PeftModel.push_to_hub`.

`stock_peft()` temporarily restores PEFT's own entry (for comparisons, or to build an adapter plain PEFT can load).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from peft.mapping import PEFT_TYPE_TO_MIXED_MODEL_MAPPING, PEFT_TYPE_TO_TUNER_MAPPING
from peft.utils import PeftType

from .lora.model import RVCLoraModel

_saved: dict[str, Any] = {}
_MISSING = object()


def is_registered() -> bool:
    """True while rvc_peft's LoRA tuner is installed in PEFT."""
    return PEFT_TYPE_TO_TUNER_MAPPING.get(PeftType.LORA) is RVCLoraModel


def register() -> None:
    """Install `RVCLoraModel` as PEFT's LoRA tuner entry (idempotent)."""
    if is_registered():
        return
    _saved["tuner"] = PEFT_TYPE_TO_TUNER_MAPPING.get(PeftType.LORA)
    _saved["mixed"] = PEFT_TYPE_TO_MIXED_MODEL_MAPPING.get(PeftType.LORA, _MISSING)
    PEFT_TYPE_TO_TUNER_MAPPING[PeftType.LORA] = RVCLoraModel
    PEFT_TYPE_TO_MIXED_MODEL_MAPPING[PeftType.LORA] = RVCLoraModel


def unregister() -> None:
    """Put PEFT's own LoRA tuner back (undo `register`)."""
    if not is_registered():
        return
    PEFT_TYPE_TO_TUNER_MAPPING[PeftType.LORA] = _saved["tuner"]
    if _saved["mixed"] is _MISSING:
        PEFT_TYPE_TO_MIXED_MODEL_MAPPING.pop(PeftType.LORA, None)
    else:
        PEFT_TYPE_TO_MIXED_MODEL_MAPPING[PeftType.LORA] = _saved["mixed"]


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
