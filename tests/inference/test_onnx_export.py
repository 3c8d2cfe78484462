"""ONNX export in RVC WebUI's and VCClient's layouts: onnxruntime's output against `RVCSynthesizer.infer`.

The reference is the PyTorch model's own conversion pass with its noise pinned (the prior noise set to the `rnd`
fed to the graph, the NSF excitation noise to zero), on graphs exported at one length and run at others.
"""

from __future__ import annotations

import json
from unittest import mock

import numpy as np
import pytest
import torch

pytest.importorskip("onnx", reason="ONNX export needs the `onnx` package (pip install onnx)")
ort = pytest.importorskip("onnxruntime", reason="running exported graphs needs `onnxruntime`")

import onnx

from rvc_peft.cli import main
from rvc_peft.inference.onnx_export import (
    OnnxSynthesizer,
    example_inputs,
    export_onnx,
    input_names,
    read_onnx_metadata,
)
from rvc_peft.models import has_weight_norm
from rvc_peft.models.synthesizer import PRIOR_NOISE_SCALE
from rvc_peft.testing import random_synthesizer, small_config

from .conftest import make_adapter, tiny_config, tiny_synthesizer

TOLERANCE = 1e-4  # fp32, max abs on the audio (the bar)


def model_for(version: str, use_f0: bool):
    return tiny_synthesizer(small_config(version, use_f0, 40000, resblock_kernel_sizes=[3],
                                         resblock_dilation_sizes=[[1, 3, 5]]))


def session(path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run(sess: ort.InferenceSession, inputs) -> np.ndarray:
    return sess.run(["audio"], {spec.name: x.numpy() for spec, x in zip(sess.get_inputs(), inputs)})[0]


def torch_reference(model, inputs, prior_noise: torch.Tensor | None) -> np.ndarray:
    """`model.infer` on the layout's inputs with randn_like pinned: the prior draw -> `prior_noise` (zero if None;
    infer scales it by 0.66666 itself), every other draw (the NSF excitation) -> 0."""
    prior_shape = (inputs[0].shape[0], model.config.inter_channels, inputs[0].shape[1])

    def pinned(x, *args, **kwargs):
        if prior_noise is not None and tuple(x.shape) == prior_shape:
            return prior_noise.clone()
        return torch.zeros_like(x)

    phone, lengths = inputs[0], inputs[1]
    with mock.patch.object(torch, "randn_like", pinned):
        if model.config.use_f0:
            audio = model.infer(phone, lengths, inputs[2], inputs[3], inputs[4])[0]
        else:
            audio = model.infer(phone, lengths, sid=inputs[2])[0]
    return audio.numpy()


@pytest.mark.parametrize("version", ["v1", "v2"])
@pytest.mark.parametrize("use_f0", [True, False], ids=["f0", "nono"])
def test_webui_layout_matches_torch_at_other_lengths(tmp_path, version, use_f0):
    model = model_for(version, use_f0)
    path = export_onnx(model, tmp_path / "model.onnx", source_noise=False, example_frames=48)
    sess = session(path)
    names = input_names("webui", use_f0)
    assert [i.name for i in sess.get_inputs()] == names
    assert names == (["phone", "phone_lengths", "pitch", "pitchf", "ds", "rnd"] if use_f0
                     else ["phone", "phone_lengths", "ds", "rnd"])
    shapes = {i.name: (i.type, i.shape) for i in sess.get_inputs()}
    assert shapes["phone"] == ("tensor(float)", ["batch", "frames", model.config.content_dim])
    assert shapes["rnd"] == ("tensor(float)", ["batch", model.config.inter_channels, "frames"])
    assert shapes["ds"] == ("tensor(int64)", ["batch"])
    for frames in (97, 7):  # longer, and shorter than the attention window (10)
        inputs = example_inputs(model.config, "webui", frames, seed=frames)
        audio = run(sess, inputs)
        reference = torch_reference(model, inputs, prior_noise=inputs[-1])
        assert audio.shape == reference.shape == (1, 1, frames * model.config.hop_length)
        assert np.abs(reference).max() > 0.05  # a decoder that actually responds, so the bound means something
        assert np.abs(audio - reference).max() <= TOLERANCE


def test_a_batch_of_different_lengths(tmp_path):
    model = model_for("v2", True)
    sess = session(export_onnx(model, tmp_path / "model.onnx", source_noise=False))
    inputs = [torch.cat(pair) for pair in zip(example_inputs(model.config, "webui", 30, seed=1),
                                              example_inputs(model.config, "webui", 30, seed=2))]
    inputs[1] = torch.tensor([30, 22])  # the second item is 22 frames long, padded to 30
    inputs[4] = torch.tensor([0, 3])  # and another speaker
    reference = torch_reference(model, inputs, prior_noise=inputs[-1])
    assert np.abs(run(sess, inputs) - reference).max() <= TOLERANCE


def test_webui_rnd_is_standard_normal_noise_and_noise_scale_is_baked_in(tmp_path):
    """Feeding rnd = ε gives infer's sampling (ε·0.66666); noise_scale=1 reproduces RVC's own graphs (ε·1)."""
    model = model_for("v2", False)
    inputs = example_inputs(model.config, "webui", 40, seed=5)
    for scale in (0.66666, 1.0):
        path = export_onnx(model, tmp_path / f"s{scale}.onnx", noise_scale=scale)
        reference = torch_reference(model, inputs, prior_noise=inputs[-1] * (scale / PRIOR_NOISE_SCALE))
        assert np.abs(run(session(path), inputs) - reference).max() <= TOLERANCE


@pytest.mark.parametrize("use_f0", [True, False], ids=["f0", "nono"])
def test_vcclient_layout_metadata_and_deterministic_graph(tmp_path, use_f0):
    model = model_for("v1", use_f0)
    path = export_onnx(model, tmp_path / "vc.onnx", layout="vcclient", noise_scale=0.0, source_noise=False,
                       metadata={"embedder": "contentvec"})
    proto = onnx.load(str(path))
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [17]
    assert not [n.op_type for n in proto.graph.node if n.op_type.startswith("Random")]
    sess = session(path)
    assert [i.name for i in sess.get_inputs()] == (["feats", "p_len", "pitch", "pitchf", "sid"] if use_f0
                                                   else ["feats", "p_len", "sid"])
    assert [o.name for o in sess.get_outputs()] == ["audio"]
    # What VCClient's model-slot loader reads: custom_metadata_map["metadata"], a JSON object.
    metadata = json.loads(sess.get_modelmeta().custom_metadata_map["metadata"])
    assert metadata == {
        "application": "VC_CLIENT", "version": "2", "modelType": "pyTorchRVC" if use_f0 else "pyTorchRVCNono",
        "samplingRate": 40000, "f0": use_f0, "embChannels": 256, "embedder": "contentvec",
        "embOutputLayer": 9, "useFinalProj": True,
    }
    assert read_onnx_metadata(path)["rvc_peft"]["layout"] == "vcclient"
    inputs = example_inputs(model.config, "vcclient", 83, seed=2)
    reference = torch_reference(model, inputs, prior_noise=None)
    assert np.abs(run(sess, inputs) - reference).max() <= TOLERANCE


def test_vcclient_default_graph_draws_its_noise(tmp_path):
    """As VCClient's own exports: prior noise (and NSF noise) drawn in the graph, so two runs differ."""
    model = model_for("v2", True)
    path = export_onnx(model, tmp_path / "vc.onnx", layout="vcclient")
    proto = onnx.load(str(path))
    assert sum(n.op_type == "RandomNormalLike" for n in proto.graph.node) == 2  # prior + NSF excitation
    assert read_onnx_metadata(path)["metadata"]["modelType"] == "pyTorchRVCv2"
    sess = session(path)
    inputs = example_inputs(model.config, "vcclient", 60, seed=1)
    first, second = run(sess, inputs), run(sess, inputs)
    assert np.isfinite(first).all() and np.abs(first).max() <= 1.0
    assert np.abs(first - second).max() > 1e-3


def test_adapter_is_merged_before_export(tmp_path):
    """base + adapter exported == the unmerged PEFT model (LoRA applied at run time), and != the base alone."""
    from peft import PeftModel

    make_adapter(tmp_path / "voice", seed=4)
    path = export_onnx(tiny_synthesizer(tiny_config()), tmp_path / "voice.onnx", adapter=tmp_path / "voice",
                       source_noise=False)
    inputs = example_inputs(tiny_config(), "webui", 50, seed=3)
    audio = run(session(path), inputs)
    runtime_lora = PeftModel.from_pretrained(tiny_synthesizer(tiny_config()), str(tmp_path / "voice"))
    reference = torch_reference(runtime_lora.base_model.model, inputs, prior_noise=inputs[-1])
    base_only = torch_reference(tiny_synthesizer(tiny_config()), inputs, prior_noise=inputs[-1])
    assert np.abs(audio - reference).max() <= TOLERANCE
    assert np.abs(audio - base_only).max() > 100 * TOLERANCE
    assert read_onnx_metadata(path)["rvc_peft"]["adapter"] == str(tmp_path / "voice")
    # A PEFT model object is merged the same way, on a copy: the caller's model keeps its LoRA layers.
    from_object = export_onnx(runtime_lora, tmp_path / "object.onnx", source_noise=False)
    assert np.abs(run(session(from_object), inputs) - reference).max() <= TOLERANCE
    assert any("lora_A" in name for name, _ in runtime_lora.named_parameters())


@pytest.mark.parametrize("opset", [13, 20])
def test_opsets_and_the_callers_model_is_untouched(tmp_path, opset):
    model = random_synthesizer(small_config("v2", True, 40000))  # weight norm not folded yet
    path = export_onnx(model, tmp_path / "o.onnx", opset=opset, source_noise=False)
    assert has_weight_norm(model.dec.ups[0]) and hasattr(model, "enc_q")
    proto = onnx.load(str(path))
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [opset]
    assert not any(i.name.endswith(("weight_g", "weight_v", "original0", "original1")) for i in proto.graph.initializer)
    inputs = example_inputs(model.config, "webui", 30, seed=4)
    reference = torch_reference(model, inputs, prior_noise=inputs[-1])
    assert np.abs(run(session(path), inputs) - reference).max() <= TOLERANCE


def test_half_exports(tmp_path):
    """fp16 weights; "webui" keeps RVC's float32 I/O (F0 stays float32), "vcclient" binds fp16 as VCClient does."""
    model = model_for("v2", True)
    webui = session(export_onnx(model, tmp_path / "h.onnx", half=True, source_noise=False))
    assert {i.name: i.type for i in webui.get_inputs()} == {
        "phone": "tensor(float)", "phone_lengths": "tensor(int64)", "pitch": "tensor(int64)",
        "pitchf": "tensor(float)", "ds": "tensor(int64)", "rnd": "tensor(float)"}
    proto = onnx.load(str(tmp_path / "h.onnx"))
    assert {onnx.helper.tensor_dtype_to_np_dtype(i.data_type) for i in proto.graph.initializer
            if len(i.dims) >= 2} == {np.dtype(np.float16)}  # every weight matrix / kernel is fp16
    inputs = example_inputs(model.config, "webui", 40, seed=6)
    reference = torch_reference(model, inputs, prior_noise=inputs[-1])
    audio = run(webui, inputs)
    assert audio.dtype == np.float32
    relative_rms = np.sqrt(((audio - reference) ** 2).mean() / (reference**2).mean())
    assert relative_rms < 1e-2  # fp16 rounding only (measured ~1e-3 here, 5e-4 on the lab base)

    vcclient = session(export_onnx(model, tmp_path / "v.onnx", layout="vcclient", half=True, noise_scale=0.0,
                                   source_noise=False))
    assert [(i.name, i.type) for i in vcclient.get_inputs()] == [
        ("feats", "tensor(float16)"), ("p_len", "tensor(int64)"), ("pitch", "tensor(int64)"),
        ("pitchf", "tensor(float16)"), ("sid", "tensor(int64)")]
    assert vcclient.get_outputs()[0].type == "tensor(float16)"
    half_inputs = tuple(x.half() if x.is_floating_point() else x for x in inputs[:-1])
    assert np.isfinite(run(vcclient, half_inputs).astype(np.float32)).all()


def test_onnx_synthesizer_runs_a_graph_with_infers_call(tmp_path):
    """`OnnxSynthesizer.infer` takes `RVCSynthesizer.infer`'s arguments (what an onnx backend of VoiceConverter swaps
    in) and gives the same audio; it refuses files that are not our exports, naming them."""
    model = model_for("v1", True)
    phone, lengths, pitch, pitchf, sid, rnd = example_inputs(model.config, "webui", 45, seed=9)
    reference = torch_reference(model, (phone, lengths, pitch, pitchf, sid), prior_noise=rnd)
    webui = OnnxSynthesizer(export_onnx(model, tmp_path / "w.onnx", source_noise=False), seed=0)
    assert (webui.layout, webui.sampling_rate, webui.hop_length) == ("webui", 40000, 400)
    audio, _, _ = webui.infer(phone, lengths, pitch, pitchf, sid, rnd=rnd)
    assert audio.dtype == torch.float32 and np.abs(audio.numpy() - reference).max() <= TOLERANCE
    drawn, _, _ = webui.infer(phone, lengths, pitch, pitchf, sid)  # its own N(0, 1) draw: a different sample
    assert drawn.shape == audio.shape and 1e-3 < np.abs(drawn.numpy() - reference).max() < 1.0

    vcclient = OnnxSynthesizer(export_onnx(model, tmp_path / "v.onnx", layout="vcclient", noise_scale=0.0,
                                           source_noise=False))
    quiet = torch_reference(model, (phone, lengths, pitch, pitchf, sid), prior_noise=None)
    assert np.abs(vcclient.infer(phone, lengths, pitch, pitchf)[0].numpy() - quiet).max() <= TOLERANCE
    with pytest.raises(ValueError, match=r"v.onnx: this model uses pitch"):
        vcclient.infer(phone, lengths)

    plain = onnx.helper.make_model(onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["x"], ["audio"])], "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [onnx.helper.make_tensor_value_info("audio", onnx.TensorProto.FLOAT, [1])]))
    onnx.save(plain, str(tmp_path / "plain.onnx"))
    with pytest.raises(ValueError, match=r"plain.onnx: not an rvc-peft ONNX export \(no 'rvc_peft' metadata"):
        OnnxSynthesizer(tmp_path / "plain.onnx")


def test_bad_arguments_fail_before_writing(tmp_path):
    model = model_for("v1", False)
    out = tmp_path / "x.onnx"
    with pytest.raises(ValueError, match="unknown ONNX layout 'rvc': choose one of webui, vcclient"):
        export_onnx(model, out, layout="rvc")
    with pytest.raises(ValueError, match="vcclient layout is opset 17"):
        export_onnx(model, out, layout="vcclient", opset=13)
    with pytest.raises(ValueError, match="opset must be between 13 and 20, got 12"):
        export_onnx(model, out, opset=12)
    with pytest.raises(ValueError, match="opset must be between 13 and 20, got 21"):
        export_onnx(model, out, opset=21)
    with pytest.raises(ValueError, match=r"unknown VCClient metadata fields \['embeder'\]"):
        export_onnx(model, out, layout="vcclient", metadata={"embeder": "contentvec"})
    assert not out.exists()


@pytest.mark.filterwarnings("ignore:adapter 'default' was made for base")  # base.pth is the fp16-rounded base
def test_cli_export_onnx(tmp_path, capsys):
    from rvc_peft.checkpoints import export_rvc, load_synthesizer

    export_rvc(tiny_synthesizer(tiny_config()), tmp_path / "base.pth")
    make_adapter(tmp_path / "voice", seed=5)
    out = tmp_path / "out" / "voice.onnx"
    assert main(["export-onnx", "--base", str(tmp_path / "base.pth"), "--adapter", str(tmp_path / "voice"),
                 "--out", str(out), "--layout", "vcclient", "--embedder", "contentvec"]) == 0
    assert f"-> {out} (vcclient layout, fp32" in capsys.readouterr().out
    assert read_onnx_metadata(out)["metadata"]["embedder"] == "contentvec"
    assert [i.name for i in session(out).get_inputs()] == ["feats", "p_len", "pitch", "pitchf", "sid"]

    webui = tmp_path / "webui.onnx"
    assert main(["export-onnx", "--base", str(tmp_path / "base.pth"), "--out", str(webui), "--opset", "15",
                 "--no-source-noise"]) == 0
    base = load_synthesizer(tmp_path / "base.pth")
    inputs = example_inputs(base.config, "webui", 33, seed=8)
    reference = torch_reference(base, inputs, prior_noise=inputs[-1])
    assert np.abs(run(session(webui), inputs) - reference).max() <= TOLERANCE

    assert main(["export-onnx", "--base", str(tmp_path / "base.pth"), "--out", str(tmp_path / "y.onnx"),
                 "--embedder", "contentvec"]) == 1
    assert "--embedder sets VCClient's metadata: use it with --layout vcclient" in capsys.readouterr().err
    assert not (tmp_path / "y.onnx").exists()


def test_lab_base_dynamic_lengths(tmp_path):
    """The voice-lab base (v2 32k, pitch), exported at 16 frames and run at 37 and 230."""
    import rvc_peft
    from rvc_peft.lab.assets import lab_base_files

    try:
        base_file = lab_base_files().synthesizer
    except FileNotFoundError as error:
        pytest.skip(str(error))
    path = export_onnx(base_file, tmp_path / "lab.onnx", source_noise=False)
    model = rvc_peft.load_synthesizer(base_file, keep_posterior_encoder=False)
    sess = session(path)
    for frames in (37, 230):
        inputs = example_inputs(model.config, "webui", frames, seed=frames)
        reference = torch_reference(model, inputs, prior_noise=inputs[-1])
        assert np.abs(reference).max() > 0.05
        assert np.abs(run(sess, inputs) - reference).max() <= TOLERANCE
