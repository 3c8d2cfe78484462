"""`RVCSynthesizer`: RVC's four synthesizer classes as one `transformers.PreTrainedModel`.

`config.version` ("v1": 256-d content features, "v2": 768-d) and `config.use_f0` (NSF decoder with pitch,
or plain HiFi-GAN) select what RVC calls `SynthesizerTrnMs{256,768}NSFsid[_nono]`; parameter names and
shapes are identical to RVC's, so its checkpoints load with no missing or unexpected keys.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel

from .attentions import Encoder
from .config import RVCConfig
from .generator import Generator, GeneratorNSF
from .modules import PosteriorEncoder, ResidualCouplingBlock, sequence_mask

PITCH_BINS = 256  # coarse pitch vocabulary (index 0 is never produced)
PRIOR_NOISE_SCALE = 0.66666  # RVC's sampling temperature for z_p at inference


class TextEncoder(nn.Module):
    """Content features (+ coarse pitch) -> prior statistics (RVC's `TextEncoder256/768`).

    forward(phone [B, T, E], pitch [B, T] long | None, lengths [B], skip_head) ->
        (m_p, logs_p [B, C, T'], x_mask [B, 1, T']) with T' = T - skip_head
    """

    def __init__(self, config: RVCConfig) -> None:
        super().__init__()
        self.hidden_channels = config.hidden_channels
        self.out_channels = config.inter_channels
        self.emb_phone = nn.Linear(config.content_dim, config.hidden_channels)
        self.lrelu = nn.LeakyReLU(0.1, inplace=True)
        if config.use_f0:
            self.emb_pitch = nn.Embedding(PITCH_BINS, config.hidden_channels)
        self.encoder = Encoder(
            config.hidden_channels, config.filter_channels, config.n_heads, config.n_layers, config.kernel_size,
            config.p_dropout,
        )
        self.proj = nn.Conv1d(config.hidden_channels, config.inter_channels * 2, 1)

    def forward(
        self, phone: torch.Tensor, pitch: torch.Tensor | None, lengths: torch.Tensor, skip_head: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.emb_phone(phone)
        if pitch is not None:
            x = x + self.emb_pitch(pitch)
        x = self.lrelu(x * math.sqrt(self.hidden_channels)).transpose(1, -1)  # [B, H, T]
        x_mask = sequence_mask(lengths, x.size(2)).unsqueeze(1).to(x.dtype)
        x = self.encoder(x * x_mask, x_mask)
        if skip_head:
            # Realtime chunking: the encoder saw the full context, later stages only the new frames.
            x, x_mask = x[:, :, skip_head:], x_mask[:, :, skip_head:]
        stats = self.proj(x) * x_mask
        m, logs = torch.split(stats, self.out_channels, dim=1)
        return m, logs, x_mask


def rand_slice_segments(
    x: torch.Tensor, x_lengths: torch.Tensor, segment_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """A random window of `segment_size` frames per item: [B, C, T] -> ([B, C, segment_size], starts [B])."""
    max_start = (x_lengths - segment_size + 1).clamp(min=1)
    starts = (torch.rand(x.size(0), device=x.device) * max_start).long()
    return slice_segments(x, starts, segment_size), starts


def slice_segments(x: torch.Tensor, starts: torch.Tensor, segment_size: int) -> torch.Tensor:
    """Windows of `segment_size` along the last axis starting at `starts` ([B]); x is [B, ..., T]."""
    return torch.stack([x[i, ..., s : s + segment_size] for i, s in enumerate(starts.tolist())])


def _nono_positional(
    rvc_sid: torch.Tensor, nsff0_slot: Any, sid_slot: Any, skip_head_slot: Any, return_length: Any,
    return_length2: Any,
) -> tuple[torch.Tensor, Any, Any, Any]:
    """(sid, skip_head, return_length, return_length2) of RVC's no-pitch call, read from our signature's slots.

    RVC's `_nono.infer(phone, phone_lengths, sid, skip_head, return_length, return_length2)` puts its positional
    arguments one slot to the left of ours: sid in `pitch`, skip_head in `nsff0`, return_length in `sid`,
    return_length2 in `skip_head`. Its keyword arguments land in their own slots, so `skip_head_slot` is RVC's
    positional return_length2 when skip_head came positionally, and the keyword skip_head otherwise.
    """
    positional_skip = nsff0_slot is not None
    skip_head = nsff0_slot if positional_skip else skip_head_slot
    positional_return_length2 = skip_head_slot if positional_skip else None
    for name, positional, keyword in (("return_length", sid_slot, return_length),
                                      ("return_length2", positional_return_length2, return_length2)):
        if positional is not None and keyword is not None:
            raise TypeError(f"infer() got multiple values for argument {name!r}")
    return (rvc_sid, skip_head, sid_slot if sid_slot is not None else return_length,
            positional_return_length2 if positional_return_length2 is not None else return_length2)


class RVCSynthesizer(PreTrainedModel):
    """RVC's VITS-based synthesizer: content encoder prior, posterior encoder, flow and HiFi-GAN/NSF decoder.

    Submodules (RVC names): `enc_p` (TextEncoder), `dec` (Generator/GeneratorNSF), `flow`
    (ResidualCouplingBlock), `enc_q` (PosteriorEncoder, training only; absent when
    `config.use_posterior_encoder` is False, as in exported voices), `emb_g` (speaker embedding table).
    """

    config_class = RVCConfig
    base_model_prefix = "rvc"
    main_input_name = "phone"
    supports_gradient_checkpointing = False
    _supports_param_buffer_assignment = False

    @property
    def is_gradient_checkpointing(self) -> bool:
        """False: RVC networks never checkpoint activations. PEFT still reads this name whenever it wraps or loads
        an adapter onto a model; transformers 5's own property is a deprecated alias that warns on every read."""
        return False

    def __init__(self, config: RVCConfig) -> None:
        super().__init__(config)
        self.enc_p = TextEncoder(config)
        decoder_args = (
            config.inter_channels, config.resblock_kernel_sizes, config.resblock_dilation_sizes,
            config.upsample_rates, config.upsample_initial_channel, config.upsample_kernel_sizes,
            config.gin_channels,
        )
        self.dec = GeneratorNSF(*decoder_args, sampling_rate=config.sampling_rate) if config.use_f0 else Generator(
            *decoder_args
        )
        if config.use_posterior_encoder:
            self.enc_q = PosteriorEncoder(
                config.spec_channels, config.inter_channels, config.hidden_channels, 5, 1, 16,
                gin_channels=config.gin_channels,
            )
        self.flow = ResidualCouplingBlock(
            config.inter_channels, config.hidden_channels, 5, 1, 3, gin_channels=config.gin_channels
        )
        self.emb_g = nn.Embedding(config.spk_embed_dim, config.gin_channels)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        # Every layer is initialised by its constructor exactly as RVC does; checkpoints must supply every
        # tensor (load_synthesizer fails on missing, unexpected or mis-shaped keys, the HF layout included), so
        # transformers has nothing to fill in.
        return

    @property
    def segment_frames(self) -> int:
        """Decoder training window in frames (RVC's `segment_size // hop_length`)."""
        return self.config.train_segment_size // self.config.hop_length

    def _decode(
        self, z: torch.Tensor, f0: torch.Tensor | None, g: torch.Tensor, n_res: int | None = None
    ) -> torch.Tensor:
        if self.config.use_f0:
            if f0 is None:
                raise ValueError("this RVC model uses pitch: pass `nsff0`/`pitchf` (F0 in Hz per frame)")
            return self.dec(z, f0, g=g, n_res=n_res)
        return self.dec(z, g=g, n_res=n_res)

    def _check_pitch(self, pitch: torch.Tensor | None) -> torch.Tensor | None:
        if self.config.use_f0 and pitch is None:
            raise ValueError("this RVC model uses pitch: pass `pitch` (coarse pitch ids 1..255 per frame)")
        return pitch if self.config.use_f0 else None

    def forward(
        self,
        phone: torch.Tensor,
        phone_lengths: torch.Tensor,
        pitch: torch.Tensor | None = None,
        pitchf: torch.Tensor | None = None,
        y: torch.Tensor | None = None,
        y_lengths: torch.Tensor | None = None,
        ds: torch.Tensor | None = None,
        segment_frames: int | None = None,
    ) -> tuple:
        """Training pass, as RVC's `SynthesizerTrn*.forward`.

        phone [B, T, E] (100 fps), phone_lengths [B], pitch [B, T] long, pitchf [B, T] Hz, y [B, S, T] linear
        spectrogram, y_lengths [B], ds [B] speaker ids, segment_frames: the decoder's window in frames (default: the
        config's `train_segment_size` / hop) ->
        (audio slice [B, 1, segment·hop], slice starts [B], x_mask, y_mask, (z, z_p, m_p, logs_p, m_q, logs_q)).
        """
        if not self.config.use_posterior_encoder:
            raise ValueError("this model has no posterior encoder (enc_q): exported voices cannot be trained")
        if y is None or y_lengths is None or ds is None:
            raise ValueError("training forward needs the spectrogram `y`, `y_lengths` and speaker ids `ds`")
        g = self.emb_g(ds).unsqueeze(-1)
        m_p, logs_p, x_mask = self.enc_p(phone, self._check_pitch(pitch), phone_lengths)
        z, m_q, logs_q, y_mask = self.enc_q(y, y_lengths, g=g)
        z_p = self.flow(z, y_mask, g=g)
        segment_frames = segment_frames or self.segment_frames
        z_slice, ids_slice = rand_slice_segments(z, y_lengths, segment_frames)
        f0_slice = slice_segments(pitchf, ids_slice, segment_frames) if self.config.use_f0 else None
        o = self._decode(z_slice, f0_slice, g)
        return o, ids_slice, x_mask, y_mask, (z, z_p, m_p, logs_p, m_q, logs_q)

    @torch.no_grad()
    def infer(
        self,
        phone: torch.Tensor,
        phone_lengths: torch.Tensor,
        pitch: torch.Tensor | None = None,
        nsff0: torch.Tensor | None = None,
        sid: torch.Tensor | None = None,
        skip_head: int | torch.Tensor | None = None,
        return_length: int | torch.Tensor | None = None,
        return_length2: int | torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...]]:
        """Conversion pass, as RVC's `infer` (20240604 signature).

        phone [B, T, E] (100 fps), phone_lengths [B], pitch [B, T] coarse ids, nsff0 [B, T] Hz, sid [B] ->
        (audio [B, 1, T·hop], x_mask [B, 1, T], (z, z_p, m_p, logs_p)).
        No-pitch models also accept RVC's `_nono` positional form
        `infer(phone, phone_lengths, sid, skip_head=None, return_length=None, return_length2=None)`, told apart
        by the 1-D speaker ids where this signature has the 2-D `pitch`.
        `skip_head`/`return_length` (frames): realtime chunking, only frames [skip_head, skip_head+return_length)
        are decoded; `return_length2` resamples the decoder input to that many frames.
        """
        if not self.config.use_f0 and isinstance(pitch, torch.Tensor) and pitch.dim() == 1:
            sid, skip_head, return_length, return_length2 = _nono_positional(
                pitch, nsff0, sid, skip_head, return_length, return_length2
            )
            pitch = nsff0 = None
        if sid is None:
            sid = torch.zeros(phone.size(0), dtype=torch.long, device=phone.device)
        g = self.emb_g(sid).unsqueeze(-1)
        pitch = self._check_pitch(pitch)
        n_res = int(return_length2) if return_length2 is not None else None
        if skip_head is not None and return_length is not None:
            head, length = int(skip_head), int(return_length)
            flow_head = max(head - 24, 0)  # the flow still sees 24 frames of left context
            dec_head = head - flow_head
            m_p, logs_p, x_mask = self.enc_p(phone, pitch, phone_lengths, flow_head)
            z_p = (m_p + torch.exp(logs_p) * torch.randn_like(m_p) * PRIOR_NOISE_SCALE) * x_mask
            z = self.flow(z_p, x_mask, g=g, reverse=True)
            z = z[:, :, dec_head : dec_head + length]
            x_mask = x_mask[:, :, dec_head : dec_head + length]
            if nsff0 is not None:
                nsff0 = nsff0[:, head : head + length]
        else:
            m_p, logs_p, x_mask = self.enc_p(phone, pitch, phone_lengths)
            z_p = (m_p + torch.exp(logs_p) * torch.randn_like(m_p) * PRIOR_NOISE_SCALE) * x_mask
            z = self.flow(z_p, x_mask, g=g, reverse=True)
        o = self._decode(z * x_mask, nsff0, g, n_res)
        return o, x_mask, (z, z_p, m_p, logs_p)

    def remove_posterior_encoder(self) -> None:
        """Drop `enc_q` (not needed for conversion; RVC deletes it the same way before inference)."""
        if hasattr(self, "enc_q"):
            del self.enc_q
        self.config.use_posterior_encoder = False
