"""RMVPE pitch model (the E2E U-Net + BiGRU used by RVC), loading real ``rmvpe.pt`` state dicts.

Parameter names are identical to RVC's ``infer/lib/rmvpe.py`` so a real ``rmvpe.pt`` (a plain state dict of
``E2E(n_blocks=4, n_gru=1, kernel_size=(2, 2))``) loads with ``strict=True``. The front end is a 128-bin HTK
log-mel at 16 kHz (hop 160, n_fft 1024, 30-8000 Hz, magnitude, ``log(clamp(mel, 1e-5))``), frames are
zero-padded at the end to a multiple of 32, and salience is decoded as RVC does (local weighted average of
9 bins around the argmax, threshold 0.03).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

SAMPLE_RATE = 16000
HOP_LENGTH = 160
N_FFT = 1024
N_MELS = 128
MEL_FMIN = 30.0
MEL_FMAX = 8000.0
N_CLASS = 360
LOG_CLAMP = 1e-5
DEFAULT_THRESHOLD = 0.03
# bin k of the 360-bin salience is 20 cents wide; cents are relative to 10 Hz (f0 = 10 * 2^(cents/1200))
CENTS_PER_BIN = 20.0
CENTS_OFFSET = 1997.3794084376191
DEFAULT_HUB_REPO = "lj1995/VoiceConversionWebUI"
DEFAULT_FILENAME = "rmvpe.pt"


class PitchError(ValueError):
    """Bad pitch-extraction request: unknown method, missing optional extra, or unusable input."""


class RMVPELoadError(PitchError):
    """An RMVPE weights file (or hub id) that cannot be loaded; the message names the file."""


class _ConvBlockRes(nn.Module):
    """(Conv3x3 no bias, BN, ReLU) x 2 plus a residual (1x1 conv with bias when channels change)."""

    def __init__(self, in_channels: int, out_channels: int, momentum: float = 0.01) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, (3, 3), padding=(1, 1), bias=False),
            nn.BatchNorm2d(out_channels, momentum=momentum),
            nn.ReLU(),
            nn.Conv2d(out_channels, out_channels, (3, 3), padding=(1, 1), bias=False),
            nn.BatchNorm2d(out_channels, momentum=momentum),
            nn.ReLU(),
        )
        self.shortcut = nn.Conv2d(in_channels, out_channels, (1, 1)) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + (self.shortcut(x) if self.shortcut is not None else x)


class _ResEncoderBlock(nn.Module):
    """``n_blocks`` ConvBlockRes, then an optional AvgPool2d; returns (pre-pool skip, pooled) when pooling."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, n_blocks: int, momentum: float = 0.01):
        super().__init__()
        self.conv = nn.ModuleList(
            [_ConvBlockRes(in_channels if i == 0 else out_channels, out_channels, momentum) for i in range(n_blocks)]
        )
        self.pool = nn.AvgPool2d(kernel_size=kernel_size) if kernel_size is not None else None

    def forward(self, x: torch.Tensor):
        for block in self.conv:
            x = block(x)
        return x if self.pool is None else (x, self.pool(x))


class _Encoder(nn.Module):
    def __init__(self, in_channels: int, n_encoders: int, kernel_size, n_blocks: int, out_channels: int = 16):
        super().__init__()
        self.bn = nn.BatchNorm2d(in_channels, momentum=0.01)
        self.layers = nn.ModuleList()
        for _ in range(n_encoders):
            self.layers.append(_ResEncoderBlock(in_channels, out_channels, kernel_size, n_blocks))
            in_channels, out_channels = out_channels, out_channels * 2
        self.out_channels = out_channels  # twice the last block's width, as RVC's Encoder.out_channel

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        skips = []
        x = self.bn(x)
        for layer in self.layers:
            skip, x = layer(x)
            skips.append(skip)
        return x, skips


class _Intermediate(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, n_inters: int, n_blocks: int):
        super().__init__()
        self.layers = nn.ModuleList(
            [_ResEncoderBlock(in_channels if i == 0 else out_channels, out_channels, None, n_blocks)
             for i in range(n_inters)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class _ResDecoderBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride, n_blocks: int, momentum: float = 0.01):
        super().__init__()
        output_padding = (0, 1) if tuple(stride) == (1, 2) else (1, 1)
        self.conv1 = nn.Sequential(
            nn.ConvTranspose2d(in_channels, out_channels, (3, 3), stride=stride, padding=(1, 1),
                               output_padding=output_padding, bias=False),
            nn.BatchNorm2d(out_channels, momentum=momentum),
            nn.ReLU(),
        )
        self.conv2 = nn.ModuleList(
            [_ConvBlockRes(out_channels * 2 if i == 0 else out_channels, out_channels, momentum) for i in range(n_blocks)]
        )

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = torch.cat((self.conv1(x), skip), dim=1)
        for block in self.conv2:
            x = block(x)
        return x


class _Decoder(nn.Module):
    def __init__(self, in_channels: int, n_decoders: int, stride, n_blocks: int):
        super().__init__()
        self.layers = nn.ModuleList()
        for _ in range(n_decoders):
            self.layers.append(_ResDecoderBlock(in_channels, in_channels // 2, stride, n_blocks))
            in_channels //= 2

    def forward(self, x: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        for layer, skip in zip(self.layers, reversed(skips)):
            x = layer(x, skip)
        return x


class DeepUnet(nn.Module):
    """Encoder (5 x pool 2x2, 1->16->...->256) -> Intermediate (256->512->512) -> Decoder (512->...->16)."""

    def __init__(self, kernel_size=(2, 2), n_blocks: int = 4, en_de_layers: int = 5, inter_layers: int = 4,
                 in_channels: int = 1, en_out_channels: int = 16) -> None:
        super().__init__()
        self.encoder = _Encoder(in_channels, en_de_layers, kernel_size, n_blocks, en_out_channels)
        self.intermediate = _Intermediate(self.encoder.out_channels // 2, self.encoder.out_channels,
                                          inter_layers, n_blocks)
        self.decoder = _Decoder(self.encoder.out_channels, en_de_layers, kernel_size, n_blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, skips = self.encoder(x)
        return self.decoder(self.intermediate(x), skips)


class _BiGRU(nn.Module):
    def __init__(self, input_features: int, hidden_features: int, num_layers: int) -> None:
        super().__init__()
        self.gru = nn.GRU(input_features, hidden_features, num_layers=num_layers, batch_first=True, bidirectional=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gru(x)[0]


class E2E(nn.Module):
    """RVC's RMVPE network. ``forward(mel [B, 128, T]) -> salience [B, T, 360]`` in (0, 1); T a multiple of 32.

    ``E2E()`` (defaults = ``E2E(4, 1, (2, 2))``) is the architecture of the released ``rmvpe.pt``; smaller
    ``n_blocks``/``en_de_layers`` give tiny models of the same family for tests.
    """

    def __init__(self, n_blocks: int = 4, n_gru: int = 1, kernel_size=(2, 2), en_de_layers: int = 5,
                 inter_layers: int = 4, in_channels: int = 1, en_out_channels: int = 16) -> None:
        super().__init__()
        self.unet = DeepUnet(kernel_size, n_blocks, en_de_layers, inter_layers, in_channels, en_out_channels)
        self.cnn = nn.Conv2d(en_out_channels, 3, (3, 3), padding=(1, 1))
        if n_gru:
            self.fc = nn.Sequential(_BiGRU(3 * N_MELS, 256, n_gru), nn.Linear(512, N_CLASS), nn.Dropout(0.25),
                                    nn.Sigmoid())
        else:
            self.fc = nn.Sequential(nn.Linear(3 * N_MELS, N_CLASS), nn.Dropout(0.25), nn.Sigmoid())

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = self.cnn(self.unet(mel.transpose(-1, -2).unsqueeze(1)))  # [B, 3, T, 128]
        return self.fc(x.transpose(1, 2).flatten(-2))  # [B, T, 384] -> [B, T, 360]


@functools.lru_cache(maxsize=1)
def mel_filterbank() -> np.ndarray:
    """RMVPE's mel matrix ``[128, 513]`` (librosa, HTK scale, slaney norm, 30-8000 Hz); do not modify in place."""
    import librosa

    return librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=N_MELS, fmin=MEL_FMIN, fmax=MEL_FMAX, htk=True)


def decode_salience(salience: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
    """Salience ``[T, 360]`` -> f0 in Hz ``[T]`` float32 (0 = unvoiced), exactly RVC's ``RMVPE.decode``.

    Cents = salience-weighted mean of the argmax bin and 4 bins each side (bins outside 0..359 count as 0);
    frames whose max salience <= ``threshold`` get cents 0, and ``f0 = 10 * 2^(cents/1200)`` equal to 10 -> 0.
    """
    salience = np.asarray(salience, dtype=np.float32)
    if salience.ndim != 2 or salience.shape[1] != N_CLASS:
        raise PitchError(f"RMVPE salience must have shape [T, {N_CLASS}], got {list(salience.shape)}")
    cents_table = np.pad(CENTS_PER_BIN * np.arange(N_CLASS) + CENTS_OFFSET, (4, 4))
    padded = np.pad(salience, ((0, 0), (4, 4)))
    window = np.argmax(salience, axis=1)[:, None] + np.arange(9)[None, :]  # indices into the padded axis
    local = np.take_along_axis(padded, window, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cents = (local * cents_table[window]).sum(axis=1) / local.sum(axis=1)
    cents[salience.max(axis=1) <= threshold] = 0.0
    f0 = 10.0 * np.power(2.0, cents / 1200.0)
    f0[f0 == 10.0] = 0.0
    return f0.astype(np.float32)


class RMVPE(nn.Module):
    """RMVPE pitch extractor: the ``E2E`` network (``self.model``) plus its mel front end and decoder.

    ``self.model.state_dict()`` has exactly the key layout of RVC's ``rmvpe.pt``.
    """

    def __init__(self, model: E2E | None = None) -> None:
        super().__init__()
        self.model = model if model is not None else E2E()
        self.model.eval()
        self.register_buffer("mel_basis", torch.tensor(mel_filterbank(), dtype=torch.float32), persistent=False)
        self.register_buffer("window", torch.hann_window(N_FFT), persistent=False)
        self.weights_path: str | None = None  # the local file `load_rmvpe` read; None otherwise

    @property
    def device(self) -> torch.device:
        return self.mel_basis.device

    def log_mel(self, audio: torch.Tensor) -> torch.Tensor:
        """``audio [B, L]`` at 16 kHz -> log-mel ``[B, 128, L // 160 + 1]`` (centred, reflect-padded STFT)."""
        if audio.shape[-1] <= N_FFT // 2:  # torch.stft's reflect padding needs more samples than it pads
            raise PitchError(f"RMVPE needs more than {N_FFT // 2} samples of 16 kHz audio, got {audio.shape[-1]}")
        spec = torch.stft(audio.float(), N_FFT, hop_length=HOP_LENGTH, win_length=N_FFT, window=self.window,
                          center=True, pad_mode="reflect", return_complex=True)
        mel = torch.matmul(self.mel_basis, spec.abs())
        return torch.log(torch.clamp(mel, min=LOG_CLAMP))

    @torch.no_grad()
    def salience(self, audio: torch.Tensor) -> torch.Tensor:
        """``audio [B, L]`` -> salience ``[B, L // 160 + 1, 360]``; mel frames zero-padded to a multiple of 32."""
        mel = self.log_mel(audio)
        n_frames = mel.shape[-1]
        n_pad = -n_frames % 32
        if n_pad:
            mel = nn.functional.pad(mel, (0, n_pad), mode="constant")
        dtype = next(self.model.parameters()).dtype
        return self.model(mel.to(dtype))[:, :n_frames].float()

    def infer_from_audio(self, audio: np.ndarray | torch.Tensor, threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
        """Mono 16 kHz ``audio [L]`` -> f0 in Hz ``[L // 160 + 1]`` float32 (0 = unvoiced)."""
        audio = torch.as_tensor(np.asarray(audio, dtype=np.float32) if not torch.is_tensor(audio) else audio)
        if audio.ndim != 1:
            raise PitchError(f"RMVPE expects mono audio of shape [L], got {list(audio.shape)}")
        salience = self.salience(audio.to(self.device)[None])[0]
        return decode_salience(salience.cpu().numpy(), threshold)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The file's tensors, refused (RMVPELoadError naming the file) if damaged or holding NaN/inf/absurd weights."""
    from ..checkpoints.safe_load import CheckpointError, check_weights

    state = _read_raw_state_dict(path)
    try:
        check_weights(state, path)
    except CheckpointError as exc:
        raise RMVPELoadError(str(exc)) from None
    return state


def _read_raw_state_dict(path: Path) -> dict[str, torch.Tensor]:
    from ..checkpoints.safe_load import CheckpointError, read_pth, read_safetensors

    # The shared safe readers: weights_only, zip CRCs (torch's reader skips them: a flipped bit would load as a wrong
    # weight), memory-mapped zip files (a 181 MB checkpoint is not held twice) and errors that never relay torch's
    # "weights_only=False will likely succeed" advice for a stranger's file.
    if path.suffix == ".safetensors":
        try:
            return read_safetensors(path)
        except CheckpointError as exc:
            raise RMVPELoadError(str(exc)) from None
    try:
        obj = read_pth(path, mmap=True)
    except CheckpointError as exc:
        raise RMVPELoadError(f"{path}: cannot be read as a PyTorch state dict with weights_only=True "
                             f"({exc.reason})") from None
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise RMVPELoadError(f"{path}: expected a state dict of tensors (or {{'model': state_dict}}), "
                             f"got {type(obj).__name__}")
    return obj


def _check_and_fill(path: Path, state: dict[str, torch.Tensor], model: E2E) -> dict[str, torch.Tensor]:
    state = {k.removeprefix("module."): v for k, v in state.items()}
    expected = model.state_dict()
    # BatchNorm step counters carry no information for inference; tolerate files saved without them
    for key in expected:
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = torch.tensor(0, dtype=torch.long)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise RMVPELoadError(
            f"{path}: not an RMVPE (E2E) state dict: {len(missing)} missing keys {missing[:5]}, "
            f"{len(unexpected)} unexpected keys {unexpected[:5]}")
    wrong = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
             for k, v in expected.items() if tuple(state[k].shape) != tuple(v.shape)]
    if wrong:
        raise RMVPELoadError(f"{path}: {len(wrong)} tensors have the wrong shape for RMVPE, e.g. {wrong[:3]}")
    return state


def resolve_rmvpe_file(path_or_hub_id: str | os.PathLike | None = None, *, filename: str = DEFAULT_FILENAME,
                       revision: str | None = None, check: bool = True) -> Path:
    """Local file, local folder containing ``filename``, or Hub reference -> local file path of usable RMVPE weights.

    Hub references (`rvc_peft.utils.hub.resolve` decides what is one): ``org/repo`` (``filename`` in it),
    ``org/repo/path/rmvpe.pt`` or ``hf://org/repo/path/rmvpe.pt``; None means RVC's
    ``lj1995/VoiceConversionWebUI/rmvpe.pt``. Raises ``RMVPELoadError`` naming the file or reference, at once for a
    missing local file and offline.

    ``check`` (default): also read the file (memory-mapped) and check it is an RMVPE state dict (keys and shapes),
    so that a caller which records its choice before loading the model -- `build_dataset`'s work-cache settings --
    never records an unusable file (which then blocked the next run with a corrected ``--rmvpe`` as "other
    settings"). `load_rmvpe` checks while loading and passes ``check=False``.
    """
    path = _locate_rmvpe_file(path_or_hub_id, filename, revision)
    if check:
        with torch.device("meta"):  # a shape template only: no memory, no random init
            template = E2E()
        _check_and_fill(path, _read_state_dict(path), template)
    return path


def _locate_rmvpe_file(path_or_hub_id: str | os.PathLike | None, filename: str, revision: str | None) -> Path:
    from ..utils.hub import HubError, LocalPathNotFoundError, resolve


    default = path_or_hub_id is None
    name = f"{DEFAULT_HUB_REPO}/{filename}" if default else os.fspath(path_or_hub_id)
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / filename).is_file():
            raise RMVPELoadError(f"{path / filename}: no {filename} in folder {path}")
        return path / filename
    note = "; download it once with network access, or pass a local rmvpe.pt (--rmvpe PATH, rmvpe_model=)"
    if default:
        note = ("; it is RVC's default RMVPE, used when no --rmvpe / rmvpe_model is given: download it once with "
                "network access, or pass a local rmvpe.pt (--rmvpe PATH, rmvpe_model=)")
    try:
        return resolve(name, default_filename=filename, revision=revision, offline_note=note)
    except LocalPathNotFoundError as err:
        raise RMVPELoadError(f"{err.path}: no such RMVPE weights file{err.hint}") from None
    except HubError as err:
        raise RMVPELoadError(f"{err.reference}: cannot fetch RMVPE weights from the Hugging Face Hub "
                             f"({err.cause}){err.note}") from None


def load_rmvpe(path_or_hub_id: str | os.PathLike | None = None, device: str | torch.device = "cpu", *,
               filename: str = DEFAULT_FILENAME, revision: str | None = None,
               dtype: torch.dtype = torch.float32) -> RMVPE:
    """Load RVC's ``rmvpe.pt`` (plain state dict or ``{"model": sd}``; ``.safetensors`` too) into an eval ``RMVPE``.

    ``path_or_hub_id``: a file, a folder containing ``filename``, or a hub repo id (default
    ``lj1995/VoiceConversionWebUI``, file ``rmvpe.pt``). Raises ``RMVPELoadError`` naming the file.
    """
    path = resolve_rmvpe_file(path_or_hub_id, filename=filename, revision=revision, check=False)
    with torch.device("meta"):  # no random init of 90 M parameters that are overwritten anyway
        e2e = E2E()
    state = _check_and_fill(path, _read_state_dict(path), e2e)
    e2e.load_state_dict(state, strict=True, assign=True)
    # float16 files (the released rmvpe.pt is ~181 MB for 90 M parameters) are cast to the requested dtype
    e2e = e2e.to(device=device, dtype=dtype)
    model = RMVPE(e2e).to(device).eval()
    model.weights_path = str(path)
    return model
