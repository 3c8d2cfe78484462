"""The per-call settings of a conversion, in one validated dataclass.

`ConversionSettings` is what `VoiceConverter.convert`, `convert_batch` and `convert_file` take as `settings=`, and
what `rvc-peft convert` builds from its flags (`ConversionSettings.from_cli_args`). The same fields are accepted as
keyword arguments (`convert(audio, f0_up_key=3, index_rate=0.5)`), applied on top of `settings`
(`ConversionSettings.resolve`). Values are checked when the settings are made, so a bad value fails before any audio
is read, with a `ValueError` naming the setting.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypedDict

import numpy as np

from .segmentation import SAMPLE_RATE

if TYPE_CHECKING:
    import argparse

PitchFunction = Callable[[np.ndarray, int], np.ndarray]  # (audio16k [L], p_len) -> f0 Hz [p_len], no key shift


@dataclass(frozen=True)
class ConversionSettings:
    """How to convert: RVC WebUI's per-conversion controls (defaults are the WebUI's).

    Attributes:
        f0_up_key: transpose in semitones (finite).
        index: retrieval index (`RetrievalIndex` or a `.index` path); None: the voice's, else the converter's.
        index_rate: share of retrieved features, in [0, 1] (0 disables retrieval).
        protect: keep this share of retrieved features on unvoiced frames, in [0, 0.5] (0.5 disables protection).
        rms_mix_rate: in [0, 1]; 1 keeps the synthesizer's loudness envelope, 0 takes the input's.
        filter_radius: harvest only: median filter (width 3) when > 2; >= 0.
        resample_sr: resample the output to this rate (0 = keep the model's rate; else >= 16000).
        f0_method: pitch method for this call (a `rvc_peft.features.pitch` name or a `PitchFunction`); None: the
            converter's.
        speaker_id: speaker row of `emb_g`; None: the voice's, else the converter's.

    Frozen: derive variants with `dataclasses.replace(settings, protect=0.5)` (validated again).
    """

    f0_up_key: float = 0
    index: Any = None
    index_rate: float = 0.75
    protect: float = 0.33
    rms_mix_rate: float = 0.25
    filter_radius: int = 3
    resample_sr: int = 0
    f0_method: str | PitchFunction | None = None
    speaker_id: int | None = None

    def __post_init__(self) -> None:
        checks = [
            (0 <= self.index_rate <= 1, f"index_rate must be in [0, 1], got {self.index_rate}"),
            (0 <= self.protect <= 0.5, f"protect must be in [0, 0.5] (0.5 disables it), got {self.protect}"),
            (0 <= self.rms_mix_rate <= 1, f"rms_mix_rate must be in [0, 1], got {self.rms_mix_rate}"),
            (self.filter_radius >= 0, f"filter_radius must be >= 0, got {self.filter_radius}"),
            (self.resample_sr == 0 or self.resample_sr >= SAMPLE_RATE,
             f"resample_sr must be 0 (keep the model's rate) or at least 16000, got {self.resample_sr}"),
            (math.isfinite(self.f0_up_key), f"f0_up_key must be a finite number of semitones, got {self.f0_up_key}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    @classmethod
    def from_cli_args(cls, args: argparse.Namespace) -> ConversionSettings:
        """The settings `rvc-peft convert` was given (`--pitch`, `--index-rate`, `--protect`, `--rms-mix-rate`,
        `--filter-radius`, `--resample-sr`, `--speaker-id`). Its `--index` and `--f0-method` are the converter's
        defaults (`VoiceConverter.from_pretrained`), so they are not repeated here."""
        return cls(f0_up_key=args.pitch, index_rate=args.index_rate, protect=args.protect,
                   rms_mix_rate=args.rms_mix_rate, filter_radius=args.filter_radius, resample_sr=args.resample_sr,
                   speaker_id=args.speaker_id)

    @classmethod
    def resolve(cls, settings: ConversionSettings | None, overrides: Mapping[str, Any],
                caller: str = "convert") -> ConversionSettings:
        """`settings` (default: `ConversionSettings()`) with the keyword arguments `overrides` applied.

        Raises `TypeError` naming `caller` for a keyword that is not a setting or for `settings` of another type,
        and `ValueError` for a bad value.
        """
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = [key for key in overrides if key not in names]
        if unknown:
            raise TypeError(f"{caller}() got an unexpected keyword argument {unknown[0]!r}; the conversion settings "
                            f"are {', '.join(names)}")
        if settings is None:
            settings = cls()
        elif not isinstance(settings, cls):
            raise TypeError(f"{caller}(): settings must be a ConversionSettings, got {type(settings).__name__}")
        return dataclasses.replace(settings, **overrides) if overrides else settings


class ConversionOverrides(TypedDict, total=False):
    """`ConversionSettings`' fields as keyword arguments (`convert(audio, **overrides)`), for type checkers."""

    f0_up_key: float
    index: Any
    index_rate: float
    protect: float
    rms_mix_rate: float
    filter_radius: int
    resample_sr: int
    f0_method: str | PitchFunction | None
    speaker_id: int | None
