"""fairseq HuBERT/ContentVec checkpoints -> transformers, checked against fairseq's own `extract_features`.

fairseq (ve-fairseq) builds and saves small random HuBERTs in a separate process, the way RVC loads them, and
records its v1/v2 features; our loader must reproduce them without fairseq being importable.
"""

import argparse
import importlib.util
import json
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from rvc_peft.features.content_encoder import ContentEncoderError, load_content_encoder
from rvc_peft.features.fairseq_checkpoint import (
    FairseqCheckpointError,
    UnsafePickleError,
    convert_hubert_checkpoint,
    read_checkpoint,
    to_plain,
)
from rvc_peft.features.fairseq_config import parse_conv_feature_layers

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models run faster on one thread (and do not suffer when other jobs load the machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

# Run by a separate interpreter: fairseq never enters the test process.
REFERENCE_SCRIPT = r'''
import json, logging, os, sys, warnings
try:
    from fairseq import checkpoint_utils
    from fairseq.data import Dictionary
    from fairseq.dataclass.configs import FairseqConfig
    from fairseq.models.hubert import HubertConfig
    from fairseq.tasks.hubert_pretraining import HubertPretrainingConfig, HubertPretrainingTask
except Exception as exc:  # noqa: BLE001 - any failure to import fairseq means "skip"
    print(f"FAIRSEQ_IMPORT_FAILED {type(exc).__name__}: {exc}")
    sys.exit(3)
logging.disable(logging.WARNING)
warnings.filterwarnings("ignore")
import numpy as np, torch
from omegaconf import OmegaConf

out = sys.argv[1]
TINY = dict(encoder_layers=12, encoder_embed_dim=64, encoder_ffn_embed_dim=128, encoder_attention_heads=2,
            conv_feature_layers="[(32,10,5)] + [(32,3,2)] * 4 + [(32,2,2)] * 2", conv_pos=16, conv_pos_groups=4)
VARIANTS = {
    # RVC's hubert_base.pt (ContentVec legacy) layout, shrunk: 500 classes, 256-d final_proj, post-norm encoder
    "contentvec": (TINY, 500, False, dict(final_dim=256)),
    # pre-norm encoder, layer-norm conv stack with bias, normalised waveform (HuBERT-large style)
    "prenorm": (TINY, 100, True, dict(final_dim=32, layer_norm_first=True, extractor_mode="layer_norm",
                                      conv_bias=True)),
    # full HuBERT-base size (95 M parameters, ~360 MB) for the memory measurement; no reference features
    "base": ({}, 500, False, dict(final_dim=256)),
}
torch.manual_seed(0)
wav = torch.randn(2, 8000 + 321)
refs = {"wav": wav.numpy()}
for name, (size, classes, normalize, extra) in VARIANTS.items():
    labels = Dictionary()
    for i in range(classes):
        labels.add_symbol(str(i))
    task_cfg = HubertPretrainingConfig(data="/nonexistent", labels=["km"], label_rate=50.0, sample_rate=16000,
                                       normalize=normalize)
    task = HubertPretrainingTask(task_cfg)
    task.state.merge_state_dict({"dictionaries": [labels]})
    cfg = OmegaConf.structured(FairseqConfig())
    OmegaConf.set_struct(cfg, False)
    cfg.task = OmegaConf.structured(task_cfg)
    cfg.task._name = "hubert_pretraining"
    cfg.model = OmegaConf.structured(HubertConfig(**size, **extra))
    cfg.model._name = "hubert"
    model = task.build_model(cfg.model)
    with torch.no_grad():  # move norms away from 1/0 so a mis-mapped norm cannot go unnoticed
        for key, p in model.named_parameters():
            if "norm" in key or key.endswith("conv_layers.0.2.weight") or key.endswith("conv_layers.0.2.bias"):
                p.add_(0.2 * torch.randn_like(p))
    state = {"cfg": OmegaConf.to_container(cfg, resolve=True, enum_to_str=True), "args": None,
             "model": model.state_dict(), "task_state": task.state_dict(),
             "optimizer_history": [{"criterion_name": "HubertCriterion", "best_loss": None,
                                    "optimizer_name": "Adam", "lr_scheduler_state": {}, "num_updates": 0}],
             "extra_state": {}, "last_optimizer_state": None}
    path = os.path.join(out, f"{name}.pt")
    torch.save(state, path)
    if name == "base":
        continue
    # Reload exactly like RVC (checkpoint_utils, suffix="") and extract with fairseq's own code.
    torch.serialization.add_safe_globals([Dictionary])
    models, saved_cfg, _ = checkpoint_utils.load_model_ensemble_and_task([path], suffix="")
    hubert = models[0].eval()
    source = torch.nn.functional.layer_norm(wav, wav.shape[-1:]) if saved_cfg.task.normalize else wav
    padding_mask = torch.zeros_like(source, dtype=torch.bool)
    with torch.no_grad():
        for layer in (8, 9, 12):
            refs[f"{name}_layer{layer}"] = hubert.extract_features(
                source=source, padding_mask=padding_mask, output_layer=layer)[0].numpy()
        refs[f"{name}_v1"] = hubert.final_proj(torch.from_numpy(refs[f"{name}_layer9"])).numpy()
        refs[f"{name}_v2"] = refs[f"{name}_layer12"]
np.savez(os.path.join(out, "reference.npz"), **refs)
print("REFERENCE_OK")
'''

# Run by a fresh interpreter: loads the HuBERT-base-size checkpoint and reports memory and imported modules.
LOAD_SCRIPT = r'''
import json, os, sys
import torch
from rvc_peft.features.content_encoder import load_content_encoder

def rss_mib():
    with open("/proc/self/status") as status:
        return int(status.read().split("VmRSS:")[1].split()[0]) / 1024

def peak_rss_mib():
    # VmHWM belongs to this process's own address space; ru_maxrss would also count the parent's peak, which
    # Linux carries across the vfork+exec that subprocess uses (a big pytest parent then looks like our peak)
    with open("/proc/self/status") as status:
        return int(status.read().split("VmHWM:")[1].split()[0]) / 1024

before = rss_mib()
encoder = load_content_encoder(sys.argv[1], "v1")
peak = peak_rss_mib()
with torch.no_grad():
    shape = list(encoder(torch.randn(1, 16000)).shape)
print(json.dumps({"rss_before_mib": before, "peak_rss_mib": peak, "file_mib": os.path.getsize(sys.argv[1]) / 2**20,
                  "shape": shape, "kind": encoder.kind,
                  "fairseq_modules": sorted(m for m in sys.modules if m.split(".")[0] == "fairseq")}))
'''


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}


@pytest.fixture(scope="module")
def fairseq_reference(tmp_path_factory) -> Path:
    if importlib.util.find_spec("fairseq") is None:
        pytest.skip("fairseq (pip install ve-fairseq==0.12.3) is not installed; the comparison needs it")
    out = tmp_path_factory.mktemp("fairseq")
    script = out / "make_reference.py"
    script.write_text(REFERENCE_SCRIPT)
    done = subprocess.run([sys.executable, str(script), str(out)], capture_output=True, text=True, env=_env(),
                          timeout=300, check=False)
    if done.returncode == 3 and "FAIRSEQ_IMPORT_FAILED" in done.stdout:
        pytest.skip(f"fairseq cannot be imported: {done.stdout.strip()}")
    assert done.returncode == 0 and "REFERENCE_OK" in done.stdout, done.stderr[-3000:]
    return out


@pytest.fixture
def no_fairseq(monkeypatch):
    """Make `import fairseq` fail in this process while our loader runs."""
    monkeypatch.setitem(sys.modules, "fairseq", None)


@pytest.mark.parametrize("variant", ["contentvec", "prenorm"])
def test_features_equal_fairseq_extract_features(fairseq_reference, no_fairseq, variant):
    reference = np.load(fairseq_reference / "reference.npz")
    wav = torch.from_numpy(reference["wav"])
    for version, dim in (("v1", 256 if variant == "contentvec" else 32), ("v2", 64)):
        encoder = load_content_encoder(fairseq_reference / f"{variant}.pt", version)
        assert encoder.output_dim == dim
        with torch.no_grad():
            ours = encoder(wav).numpy()
        expected = reference[f"{variant}_{version}"]
        assert ours.shape == expected.shape == (2, (wav.shape[1] - 400) // 320 + 1, dim)
        np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-5)
    # the comparison is sensitive: a neighbouring layer is far off
    with torch.no_grad():
        layer9 = encoder.hidden_state(wav, 9).numpy()
    np.testing.assert_allclose(layer9, reference[f"{variant}_layer9"], rtol=0, atol=1e-5)
    assert np.abs(layer9 - reference[f"{variant}_layer8"]).max() > 1e-2


def test_checkpoint_facts(fairseq_reference, no_fairseq):
    contentvec = convert_hubert_checkpoint(fairseq_reference / "contentvec.pt")
    assert (contentvec.kind, contentvec.num_label_classes, contentvec.normalize) == ("contentvec", 500, False)
    assert contentvec.config.feat_extract_norm == "group" and not contentvec.config.do_stable_layer_norm
    assert contentvec.config.conv_kernel == [10, 3, 3, 3, 3, 2, 2] and contentvec.config.conv_stride == [5] + [2] * 6
    assert (contentvec.config.num_conv_pos_embeddings, contentvec.config.num_conv_pos_embedding_groups) == (16, 4)
    assert contentvec.final_proj["weight"].shape == (256, 64)
    prenorm = convert_hubert_checkpoint(fairseq_reference / "prenorm.pt")
    assert (prenorm.kind, prenorm.num_label_classes, prenorm.normalize) == ("hubert", 100, True)
    assert prenorm.config.feat_extract_norm == "layer" and prenorm.config.do_stable_layer_norm
    assert prenorm.config.conv_bias


def test_fresh_process_never_imports_fairseq_and_memory_stays_near_file_size(fairseq_reference, tmp_path):
    script = tmp_path / "load.py"
    script.write_text(LOAD_SCRIPT)
    done = subprocess.run([sys.executable, str(script), str(fairseq_reference / "base.pt")], capture_output=True,
                          text=True, env=_env(), timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    print("HuBERT-base fairseq checkpoint load:", report)
    assert report["fairseq_modules"] == []
    assert report["shape"] == [1, 49, 256] and report["kind"] == "contentvec"
    assert report["file_mib"] > 300
    # the converted model is the only full copy: far below twice the checkpoint size
    assert report["peak_rss_mib"] - report["rss_before_mib"] < 1.3 * report["file_mib"]


def test_round_trip_through_a_transformers_folder(fairseq_reference, no_fairseq, tmp_path):
    wav = torch.randn(1, 7000)
    for variant, version in (("contentvec", "v1"), ("prenorm", "v2")):
        converted = load_content_encoder(fairseq_reference / f"{variant}.pt", version)
        converted.save_pretrained(tmp_path / variant)
        reloaded = load_content_encoder(tmp_path / variant, version)
        assert (reloaded.kind, reloaded.normalize) == (converted.kind, converted.normalize)
        with torch.no_grad():
            assert torch.equal(reloaded(wav), converted(wav))


def _rewrite(source: Path, target: Path, change) -> None:
    checkpoint = read_checkpoint(source)
    checkpoint["task_state"] = to_plain(checkpoint["task_state"])  # placeholders are not re-picklable
    change(checkpoint)
    torch.save(checkpoint, target)


def test_other_checkpoint_spellings(fairseq_reference, no_fairseq, tmp_path):
    """Parametrized weight norm names, fairseq<=0.10 `args` Namespace instead of `cfg`, omegaconf DictConfig."""
    reference = np.load(fairseq_reference / "reference.npz")
    wav = torch.from_numpy(reference["wav"])
    source = fairseq_reference / "contentvec.pt"

    def parametrized(ckpt):
        model = ckpt["model"]
        model["encoder.pos_conv.0.parametrizations.weight.original0"] = model.pop("encoder.pos_conv.0.weight_g")
        model["encoder.pos_conv.0.parametrizations.weight.original1"] = model.pop("encoder.pos_conv.0.weight_v")

    def namespace_args(ckpt):
        cfg = ckpt.pop("cfg")
        ckpt["cfg"] = None
        ckpt["args"] = argparse.Namespace(**{k: v for k, v in cfg["model"].items() if k != "_name"},
                                          arch="hubert", normalize=cfg["task"]["normalize"])

    def half_precision(ckpt):  # like the fp16 copies of hubert_base.pt that circulate
        ckpt["model"] = {k: v.half() for k, v in ckpt["model"].items()}

    changes = {"parametrized": parametrized, "namespace": namespace_args, "half": half_precision}
    if importlib.util.find_spec("omegaconf") is not None:
        from omegaconf import OmegaConf

        changes["omegaconf"] = lambda ckpt: ckpt.update(cfg=OmegaConf.create(ckpt["cfg"]))
    for name, change in changes.items():
        _rewrite(source, tmp_path / f"{name}.pt", change)
        encoder = load_content_encoder(tmp_path / f"{name}.pt", "v1")
        assert encoder.kind == "contentvec", name
        assert next(encoder.parameters()).dtype == torch.float32
        with torch.no_grad():
            np.testing.assert_allclose(encoder(wav).numpy(), reference["contentvec_v1"], rtol=0,
                                       atol=1e-2 if name == "half" else 1e-5, err_msg=name)


# --- checks that need no fairseq -----------------------------------------------------------------------------------

class _RunsCode:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    payload = _RunsCode()
    payload.marker = marker
    path = tmp_path / "hubert_base.pt"
    torch.save({"model": {"w": torch.zeros(2)}, "extra_state": payload}, path)
    with pytest.raises(UnsafePickleError, match=rf"{path}: the pickle refers to (posix|os)\.system, which is not "
                                                r"allowed"):
        read_checkpoint(path)
    with pytest.raises(ValueError, match="hubert_base.pt: the pickle refers to"):
        load_content_encoder(path)
    assert not marker.exists()
    evil_eval = tmp_path / "eval.pt"
    torch.save({"x": _Eval()}, evil_eval)
    with pytest.raises(UnsafePickleError, match=r"eval.pt: the pickle refers to builtins\.eval"):
        read_checkpoint(evil_eval)


class _Eval:
    def __reduce__(self):
        return (eval, ("1 + 1",))


def test_damaged_and_foreign_files(tmp_path):
    good = tmp_path / "good.pt"
    torch.save({"model": {"label_embs_concat": torch.zeros(504, 8)}, "cfg": None}, good)
    data = good.read_bytes()
    (tmp_path / "half.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(FairseqCheckpointError, match=r"half.pt: not a zip-format PyTorch checkpoint \(truncated"):
        load_content_encoder(tmp_path / "half.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(FairseqCheckpointError, match="empty.pt: file is empty"):
        read_checkpoint(tmp_path / "empty.pt")
    (tmp_path / "raw.pt").write_bytes(pickle.dumps({"model": {}}))
    with pytest.raises(FairseqCheckpointError, match="raw.pt: not a zip-format"):
        read_checkpoint(tmp_path / "raw.pt")
    # a zip whose tensor record lost bytes (the directory is intact, the data is not)
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(tmp_path / "short.pt", "w") as dst:
        for info in src.infolist():
            content = src.read(info)
            dst.writestr(info, content[:100] if info.filename.endswith("data/0") else content)
    with pytest.raises(FairseqCheckpointError, match=r"short.pt: tensor record '.*data/0' has 100 bytes, expected "
                                                     r"16128 \(truncated or corrupt\)"):
        read_checkpoint(tmp_path / "short.pt")
    # an RVC voice model is a zip checkpoint, but not a HuBERT
    torch.save({"weight": {"enc_p.emb_phone.weight": torch.zeros(2, 2)}, "config": [1, 2], "info": "x"},
               tmp_path / "voice.pth")
    with pytest.raises(FairseqCheckpointError, match=r"voice.pth: not a fairseq checkpoint: no 'model' state dict "
                                                     r"\(top level: weight, config, info\)"):
        load_content_encoder(tmp_path / "voice.pth")
    torch.save({"model": {"encoder.pos_conv.0.bias": torch.zeros(4), "quantizer.vars": torch.zeros(1)},
                "cfg": {"model": {"_name": "wav2vec2"}, "task": {}}}, tmp_path / "wav2vec2.pt")
    with pytest.raises(FairseqCheckpointError, match=r"wav2vec2.pt: not a HuBERT/ContentVec checkpoint \(model "
                                                     r"'wav2vec2'\)"):
        load_content_encoder(tmp_path / "wav2vec2.pt")
    torch.save({"model": {"mystery.weight": torch.zeros(2)}, "cfg": {"model": {"_name": "hubert"}}},
               tmp_path / "odd.pt")
    with pytest.raises(FairseqCheckpointError, match=r"odd.pt: cannot convert .*no HuBERT mapping: mystery.weight"):
        load_content_encoder(tmp_path / "odd.pt")
    assert issubclass(FairseqCheckpointError, ValueError) and issubclass(ContentEncoderError, ValueError)


def test_conv_feature_layers_are_parsed_without_eval():
    assert parse_conv_feature_layers("[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2") == (
        [(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2)
    with pytest.raises(ValueError, match="unsupported expression"):
        parse_conv_feature_layers("__import__('os').system('true')")
    with pytest.raises(ValueError, match="not a list"):
        parse_conv_feature_layers("[(1, 2)]")
