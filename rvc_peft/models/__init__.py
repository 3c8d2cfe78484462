"""RVC architecture: configuration, synthesizer, discriminators and weight-norm helpers."""

from transformers import AutoConfig, AutoModel

from .config import RVCConfig, parse_sample_rate, sample_rate_name
from .discriminators import MultiPeriodDiscriminator
from .synthesizer import RVCSynthesizer
from .weight_norm import fold_weight_norm, has_weight_norm, to_legacy_keys, to_parametrized_keys

AutoConfig.register("rvc", RVCConfig, exist_ok=True)
AutoModel.register(RVCConfig, RVCSynthesizer, exist_ok=True)

__all__ = [
    "MultiPeriodDiscriminator",
    "RVCConfig",
    "RVCSynthesizer",
    "fold_weight_norm",
    "has_weight_norm",
    "parse_sample_rate",
    "sample_rate_name",
    "to_legacy_keys",
    "to_parametrized_keys",
]

# However an RVC network is built (RVCSynthesizer.from_pretrained, a config, a loader), stock PEFT calls on it such as
# PeftModel.from_pretrained need the RVC LoRA layers (ConvTranspose1d, dilated and weight-normed Conv1d): install the
# tuner together with the models. Imported last: rvc_peft.tuners imports this package's names above.
from .. import tuners as _tuners  # noqa: F401
