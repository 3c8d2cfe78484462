"""How `VoiceConverter` runs the synthesizer: PyTorch's reference path, the fast path, or ONNX Runtime.

* ``"torch"`` — `RVCSynthesizer.infer` on the voice bank's base (LoRA layers live: per-row voices in one batch,
  instant voice switches). Precision fp32, or fp16 on GPUs (``half=True``, RVC's own half mode).
* ``"torch-fast"`` — `fast_path.optimize_for_inference`: a copy of the base with the voice merged, weight norm
  folded and a channels-last decoder; fp32 (equal to ``"torch"`` to 1e-4 with the same seed), bf16 (CPUs with
  avx512_bf16/AMX, GPUs) or fp16 (GPUs). One copy per voice, built on first use and kept.
* ``"onnx"`` — the voice (base + merged LoRA) exported once with `onnx_export.export_onnx` (RVC WebUI's layout) into
  a cache folder and run by onnxruntime (`OnnxSynthesizer`); fp32, or fp16 for GPU providers. The prior noise is
  drawn from torch's generator as the reference does (so ``seed=`` keeps it), the NSF excitation noise inside the
  graph, as RVC's own exports do.

The copies of ``"torch-fast"`` and ``"onnx"`` are made of the voice as it is when first used: after changing a voice's
weights in place (training), call `clear()`. Both run one voice per forward pass: a batch mixing voices (PEFT's per-row
routing) has no merged weights to copy, so it is refused with an explanation.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from pathlib import Path
from typing import Any

import torch

from .fast_path import check_precision, optimize_for_inference, plain_synthesizer, precision_dtype

BACKENDS = ("torch", "torch-fast", "onnx")


class BackendError(ValueError):
    """A backend / precision combination or a call that a backend cannot run; the message says why and what to do."""


def _voice_key(bank: Any) -> tuple[str | None, int]:
    """Which weights the bank computes with now: the active voice (None = base) and that voice's identity."""
    name = bank.active
    return name, id(bank.voice(name)) if name is not None else 0


class TorchBackend:
    """`RVCSynthesizer.infer` on the bank's live model (the reference path)."""

    name = "torch"

    def __init__(self, precision: str) -> None:
        if precision == "bf16":
            raise BackendError("backend 'torch' runs fp32, or fp16 on GPUs (half=True); bf16 is a fast-path "
                               "precision: use backend='torch-fast' with precision='bf16'")
        self.precision = precision

    def infer(self, bank: Any, phone: torch.Tensor, voices: list[str | None] | None, **kwargs: Any) -> torch.Tensor:
        """audio [B, 1, T·hop] for phone [B, T, E] and `RVCSynthesizer.infer`'s keyword inputs."""
        return bank.infer(phone, voices=voices, **kwargs)[0]

    def clear(self) -> None:
        """Nothing is cached."""


class _PerVoiceBackend:
    """Shared bookkeeping of the backends that run a prepared copy per voice."""

    name = ""

    def __init__(self) -> None:
        # key -> (the voice object, its prepared copy): holding the voice keeps its id() from being reused by a
        # voice added later under the same name, which would otherwise be served this voice's copy
        self._models: dict[tuple[str | None, int], tuple[Any, Any]] = {}

    def _prepare(self, bank: Any) -> Any:
        raise NotImplementedError

    def _model(self, bank: Any, voices: list[str | None] | None) -> Any:
        if voices is not None and len(set(voices)) > 1:
            named = sorted({str(v) if v is not None else "base" for v in voices})
            raise BackendError(
                f"backend {self.name!r} runs one voice per forward pass (the voice's LoRA merged into a copy of the "
                f"base), but this batch mixes voices {named}: PEFT's per-row routing needs the live LoRA layers. "
                "Convert each voice in its own call, or use backend='torch' for mixed batches")
        key = _voice_key(bank)
        if key not in self._models:
            # Preparing may run the model (ONNX tracing draws the NSF noise): keep the caller's seeded stream intact.
            with torch.random.fork_rng(devices=[]):
                voice = bank.voice(key[0]) if key[0] is not None else None
                self._models[key] = (voice, self._prepare(bank))
        return self._models[key][1]

    def clear(self) -> None:
        """Forget the prepared copies (after a voice's weights changed in place)."""
        self._models.clear()


class FastBackend(_PerVoiceBackend):
    """The fast path (`optimize_for_inference`), one copy per voice."""

    name = "torch-fast"

    def __init__(self, precision: str, device: torch.device, compile: bool = False) -> None:
        super().__init__()
        self.precision = precision
        self.dtype = precision_dtype(precision)
        self.compile = compile
        try:
            check_precision(self.dtype, device)
        except ValueError as err:
            raise BackendError(f"backend 'torch-fast' with precision {precision!r} on {device}: {err}") from None

    def _prepare(self, bank: Any) -> Any:
        return optimize_for_inference(bank.base, self.dtype, compile=self.compile)

    def infer(self, bank: Any, phone: torch.Tensor, voices: list[str | None] | None, **kwargs: Any) -> torch.Tensor:
        return self._model(bank, voices).infer(phone.float(), **kwargs)[0]


class OnnxBackend(_PerVoiceBackend):
    """Each voice exported to ONNX (webui layout) once and run by onnxruntime."""

    name = "onnx"

    def __init__(self, precision: str, device: torch.device, cache_dir: str | os.PathLike | None = None) -> None:
        super().__init__()
        if precision not in ("fp32", "fp16"):
            raise BackendError(f"backend 'onnx' runs fp32 or fp16 graphs, not {precision!r} (onnxruntime has no bf16 "
                               "convolutions): use backend='torch-fast' for bf16")
        try:
            import onnx  # noqa: F401
            import onnxruntime
        except ImportError as err:
            raise BackendError(f"backend 'onnx' needs the onnx and onnxruntime packages ({err}): "
                               "pip install onnx onnxruntime") from None
        self.precision = precision
        self.providers = ["CPUExecutionProvider"]
        if device.type == "cuda":
            if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
                raise BackendError("backend 'onnx' on a CUDA device needs onnxruntime-gpu (the installed onnxruntime "
                                   "has no CUDAExecutionProvider)")
            self.providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        if cache_dir is None:
            cache_dir = tempfile.mkdtemp(prefix="rvc-peft-onnx-")
            self._cleanup = weakref.finalize(self, shutil.rmtree, cache_dir, True)
        self.cache_dir = Path(cache_dir)

    def _prepare(self, bank: Any) -> Any:
        from .onnx_export import OnnxSynthesizer, export_onnx

        name, identity = _voice_key(bank)
        path = self.cache_dir / f"{name or 'base'}-{identity:x}-{self.precision}.onnx"
        if not path.exists():
            export_onnx(plain_synthesizer(bank.base), path, layout="webui", half=self.precision == "fp16")
        return OnnxSynthesizer(path, providers=self.providers)

    def infer(self, bank: Any, phone: torch.Tensor, voices: list[str | None] | None, **kwargs: Any) -> torch.Tensor:
        model = self._model(bank, voices)
        batch, frames = phone.shape[0], phone.shape[1]
        config, device = bank.config, phone.device
        # RVC WebUI's graph has no skip_head/return_length (realtime windows): it decodes the whole window and the
        # requested frames are kept, decoded with a little more context at their edges than the reference gives them.
        skip, length = kwargs.pop("skip_head", None), kwargs.pop("return_length", None)
        chunked = skip is not None and length is not None
        # The prior noise from torch's generator, drawn as `RVCSynthesizer.infer` draws it (randn_like of m_p, on the
        # model's device), so a seeded conversion gets the same prior sample as the torch backends. A realtime
        # window's reference draws it for the frames from `flow_head` on only (the flow's left context).
        flow_head = max(int(skip) - 24, 0) if chunked else 0
        rnd = torch.zeros(batch, config.inter_channels, frames, device=device)
        rnd[:, :, flow_head:] = torch.randn(batch, config.inter_channels, frames - flow_head, device=device)
        if config.use_f0:
            # The reference then draws the NSF excitation noise [B, T·hop, 1] for the decoded frames; the graph draws
            # its own, so advance the generator by as much to keep the next call's prior in step with torch's.
            torch.randn(batch, (int(length) if chunked else frames) * config.hop_length, 1, device=device)
        kwargs = {k: v for k, v in kwargs.items() if k in ("phone_lengths", "pitch", "nsff0", "sid")}
        audio = model.infer(phone.float(), rnd=rnd, **kwargs)[0].to(device)
        if chunked:
            audio = audio[..., int(skip) * config.hop_length : (int(skip) + int(length)) * config.hop_length]
        return audio


def make_backend(backend: str, precision: str, device: torch.device, *, compile: bool = False,
                 cache_dir: str | os.PathLike | None = None) -> TorchBackend | FastBackend | OnnxBackend:
    """The backend object for `VoiceConverter(backend=..., precision=...)`; bad combinations raise `BackendError`."""
    precision_dtype(precision)  # unknown names: ValueError listing the valid ones
    if backend == "torch":
        return TorchBackend(precision)
    if backend == "torch-fast":
        return FastBackend(precision, device, compile=compile)
    if backend == "onnx":
        return OnnxBackend(precision, device, cache_dir)
    raise BackendError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
