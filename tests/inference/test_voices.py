"""Many voices on one base: switching, mixed-voice batches, blends, the merged fast path, per-voice extras."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from peft import PeftModel

from rvc_peft.inference import VoiceBank, VoiceConverter, VoiceError
from rvc_peft.testing import random_inputs

from .conftest import SMALL_WINDOW, speech_like, steady_pitch, tiny_config, tiny_synthesizer


def alone(adapter_dir) -> torch.nn.Module:
    """The voice loaded the plain PEFT way onto a fresh base: what switching must reproduce."""
    return PeftModel.from_pretrained(tiny_synthesizer(), str(adapter_dir)).eval().get_base_model()


def test_switching_equals_loading_that_voice_alone(bank, adapters, no_noise):
    inputs = random_inputs(tiny_config(), frames=60, seed=3)
    parameters = {name: p.data_ptr() for name, p in bank.base.named_parameters() if "lora_" not in name}
    outputs = {}
    for name in ["alice", "bob", None, "alice"]:
        bank.activate(name)
        outputs[name] = bank.infer(**inputs)[0]
    torch.testing.assert_close(outputs["alice"], alone(adapters["alice"]).infer(**inputs)[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(outputs["bob"], alone(adapters["bob"]).infer(**inputs)[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(outputs[None], tiny_synthesizer().infer(**inputs)[0], atol=1e-6, rtol=0)
    assert (outputs["alice"] - outputs["bob"]).abs().max() > 1e-2  # the voices really differ
    # the base was never reloaded or copied: every base tensor is the one it started as
    assert parameters == {name: p.data_ptr() for name, p in bank.base.named_parameters() if "lora_" not in name}


def test_merged_fast_path_equals_unmerged_and_switches_back(bank, no_noise):
    inputs = random_inputs(tiny_config(), frames=60, seed=4)
    bank.activate("bob")
    unmerged = bank.infer(**inputs)[0]
    base_weight = bank.base.dec.ups[0].base_layer.weight.detach().clone()
    bank.activate("bob", merge=True)
    assert bank.merged == "bob"
    # merging changes only float rounding (outputs are ~1, the decoder runs at unit gain)
    torch.testing.assert_close(bank.infer(**inputs)[0], unmerged, atol=1e-4, rtol=0)
    bank.activate("alice")  # unmerges bob first
    assert bank.merged is None
    torch.testing.assert_close(bank.base.dec.ups[0].base_layer.weight, base_weight, atol=1e-6, rtol=0)
    bank.activate("bob")
    torch.testing.assert_close(bank.infer(**inputs)[0], unmerged, atol=1e-5, rtol=0)


def test_mixed_voice_batch_equals_per_voice_runs(bank, no_noise):
    inputs = random_inputs(tiny_config(), frames=50, batch=3, seed=5)
    rows = ["bob", None, "alice"]
    mixed = bank.infer(**inputs, voices=rows)[0]
    for i, name in enumerate(rows):
        bank.activate(name)
        single = bank.infer(**{k: v[i : i + 1] for k, v in inputs.items()})[0]
        torch.testing.assert_close(mixed[i], single[0], atol=1e-6, rtol=0)
    with pytest.raises(VoiceError, match="no voice named 'carol'; loaded voices: alice, bob"):
        bank.infer(**inputs, voices=["alice", "carol", None])


def test_mixed_voice_conversion_equals_per_voice_conversions(bank, encoder, no_noise):
    """`convert_batch` with a different voice per input (one synthesizer pass per batch of segments)."""
    converter = VoiceConverter(bank, encoder, f0_method=steady_pitch, window=SMALL_WINDOW, batch_size=8)
    clips = [speech_like(1.1, seed=1), speech_like(3.3, seed=2), speech_like(0.7, seed=3)]
    voices = ["alice", "bob", VoiceBank.BASE]
    batched = converter.convert_batch(clips, voices)
    assert converter.last_timings.segments == 4  # the 3.3 s clip is split in two
    for clip, voice, (audio, rate) in zip(clips, voices, batched):
        single, single_rate = converter.convert(clip, voice=voice)
        assert rate == single_rate == 40000
        np.testing.assert_allclose(audio, single, atol=2e-5)
    assert np.abs(batched[0][0] - converter.convert(clips[0], voice="bob")[0]).max() > 1e-2


def test_blend_of_voices(bank, no_noise):
    inputs = random_inputs(tiny_config(), frames=60, seed=6)
    outputs = {}
    for name in ("alice", "bob"):
        bank.activate(name)
        outputs[name] = bank.infer(**inputs)[0]
    bank.blend("only_alice", {"alice": 1.0, "bob": 0.0})
    bank.blend("alice_bob", {"alice": 0.5, "bob": 0.5})
    assert bank.voice("alice_bob").blend_of == {"alice": 0.5, "bob": 0.5}
    assert bank.voice("alice_bob").speaker_id == 0  # ties go to the first voice; bob's id is 2
    bank.activate("only_alice")
    torch.testing.assert_close(bank.infer(**inputs)[0], outputs["alice"], atol=1e-6, rtol=0)
    bank.activate("alice_bob", merge=True)
    half = bank.infer(**inputs)[0]
    assert (half - outputs["alice"]).abs().max() > 1e-3 and (half - outputs["bob"]).abs().max() > 1e-3
    # "cat" adds the deltas exactly: on each LoRA layer ΔW(half) = ½ΔW(alice) + ½ΔW(bob)
    bank.activate(None)
    layer = bank.base.dec.ups[0]
    expected = 0.5 * layer.get_delta_weight("alice") + 0.5 * (
        layer.get_delta_weight("bob") if "bob" in layer.lora_A else 0)
    torch.testing.assert_close(layer.get_delta_weight("alice_bob"), expected, atol=1e-6, rtol=0)
    with pytest.raises(VoiceError, match="already loaded"):
        bank.blend("alice_bob", {"alice": 1.0})


def test_each_voice_carries_its_speaker_id_and_index(bank, encoder, adapters):
    assert bank.voice("alice").speaker_id == 0 and bank.voice("bob").speaker_id == 2  # from rvc_adapter.json

    class Index:
        dim = 256

        def __init__(self) -> None:
            self.used = 0

        def blend(self, feats, index_rate):
            self.used += 1
            return feats

    alice_index, default_index = Index(), Index()
    bank.voice("alice").index = alice_index
    converter = VoiceConverter(bank, encoder, f0_method=steady_pitch, window=SMALL_WINDOW, index=default_index)
    seen = []
    original = bank.infer
    bank.infer = lambda phone, **kw: seen.append(kw["sid"].tolist()) or original(phone, **kw)
    converter.convert(speech_like(0.6), voice="alice")
    converter.convert(speech_like(0.6), voice="bob")
    converter.convert(speech_like(0.6), voice="bob", speaker_id=1)
    assert seen == [[0], [2], [1]]
    assert alice_index.used == 1 and default_index.used == 2


def test_adapter_for_another_base_is_refused_cleanly(bank, adapters, no_noise):
    inputs = random_inputs(tiny_config(), frames=40, seed=7)
    bank.activate("alice")
    before = bank.infer(**inputs)[0]
    with pytest.raises(VoiceError, match=r"other.*40k|32k.*40k|sampling_rate 32000 vs 40000"):
        bank.add_voice(adapters["other"])
    assert bank.names == ["alice", "bob"]
    torch.testing.assert_close(bank.infer(**inputs)[0], before, atol=0, rtol=0)
    with pytest.raises(VoiceError, match="not a PEFT adapter folder"):
        bank.add_voice(adapters["other"].parent)
    with pytest.raises(VoiceError, match="already loaded"):
        bank.add_voice(adapters["alice"])


def test_first_voice_load_failure_leaves_a_clean_base(adapters, no_noise):
    fresh = VoiceBank(tiny_synthesizer())
    with pytest.raises(VoiceError, match="32000"):
        fresh.add_voice(adapters["other"])
    assert fresh.peft_model is None and fresh.names == []
    inputs = random_inputs(tiny_config(), frames=40, seed=8)
    torch.testing.assert_close(fresh.infer(**inputs)[0], tiny_synthesizer().infer(**inputs)[0], atol=1e-6, rtol=0)


def test_remove_voice(bank, no_noise):
    bank.activate("bob", merge=True)
    bank.remove_voice("bob")
    assert bank.names == ["alice"] and bank.active is None and bank.merged is None
    with pytest.raises(VoiceError, match="no voice named 'bob'"):
        bank.activate("bob")
    bank.remove_voice("alice")
    assert bank.names == []
    inputs = random_inputs(tiny_config(), frames=40, seed=9)
    torch.testing.assert_close(bank.infer(**inputs)[0], tiny_synthesizer().infer(**inputs)[0], atol=1e-5, rtol=0)


def test_a_peft_model_can_be_used_directly(adapters, encoder, no_noise):
    """Users of plain PEFT pass their PeftModel; its adapters are the voices (speaker ids from their facts)."""
    model = PeftModel.from_pretrained(tiny_synthesizer(), str(adapters["alice"]), adapter_name="alice")
    model.load_adapter(str(adapters["bob"]), adapter_name="bob")
    converter = VoiceConverter(model, encoder, f0_method=steady_pitch, window=SMALL_WINDOW)
    assert converter.voices.names == ["alice", "bob"] and converter.voices.voice("bob").speaker_id == 2
    bank = VoiceBank(tiny_synthesizer())
    bank.add_voice(adapters["bob"])
    reference = VoiceConverter(bank, encoder, f0_method=steady_pitch, window=SMALL_WINDOW)
    clip = speech_like(0.8)
    np.testing.assert_allclose(converter.convert(clip, voice="bob")[0], reference.convert(clip, voice="bob")[0],
                               atol=1e-5)
