"""Content features of the wrong width for the synthesizer end in an error naming the widths, the model version and
what to pass, never in a raw `mat1 and mat2 shapes cannot be multiplied` from deep inside the model (an encoder that
declares its version/width is refused when the converter is built: test_pipeline.py)."""

import pytest
import torch
from torch import nn

from rvc_peft.inference import VoiceConverter
from rvc_peft.inference.audio_io import ConversionError
from rvc_peft.inference.pipeline import content_width_problem

from .conftest import SMALL_WINDOW, speech_like, steady_pitch, tiny_encoder, tiny_synthesizer


class BareEncoder(nn.Module):
    """A content encoder that does not declare `version`/`output_dim` (a user's own wrapper, say)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.inner = tiny_encoder(version="v1")
        self.widen = nn.Linear(256, width, bias=False)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        return self.widen(self.inner(wav))


def test_undeclared_768_d_features_into_a_v1_model_name_width_version_and_fix():
    converter = VoiceConverter(tiny_synthesizer(), BareEncoder(768), f0_method=steady_pitch, seed=0,
                               window=SMALL_WINDOW)
    with pytest.raises(ConversionError) as caught:
        converter.convert(speech_like(0.5))
    message = str(caught.value)
    assert message.startswith("<array>: the content encoder BareEncoder gives 768-d features, but the synthesizer "
                              "is an RVC v1 model that reads 256-d ones")
    assert "256-d projected output (version='v1', `--version v1`)" in message
    assert "mat1" not in message


def test_width_problem_for_a_v2_model_points_at_the_last_layer():
    text = content_width_problem("hubert_base.pt", 256, "v2", 768)
    assert "gives 256-d features" in text and "RVC v2 model that reads 768-d" in text
    assert "768-d last layer (version='v2', `--version v2`)" in text
