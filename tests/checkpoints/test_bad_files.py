"""Bad input never reaches deep inside torch: each case names the file and the problem."""

import io
import os
import pickle
import random
import re
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

import rvc_peft
from rvc_peft.checkpoints import CheckpointError, rvc_state_dict
from rvc_peft.testing import random_synthesizer, small_config


@pytest.fixture(scope="module")
def voice(tmp_path_factory):
    path = tmp_path_factory.mktemp("voice") / "voice.pth"
    return rvc_peft.export_rvc(random_synthesizer(small_config("v2", True, 40000)), path)


def test_missing_file(tmp_path) -> None:
    with pytest.raises(CheckpointError, match=r"nothing\.pth: file not found"):
        rvc_peft.load_synthesizer(tmp_path / "nothing.pth")


def test_empty_file(tmp_path) -> None:
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"empty\.pth: file is empty"):
        rvc_peft.load_synthesizer(tmp_path / "empty.pth")


def test_truncated_file(tmp_path, voice) -> None:
    data = voice.read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"cut\.pth: truncated or damaged"):
        rvc_peft.load_synthesizer(tmp_path / "cut.pth")


def test_random_bytes(tmp_path) -> None:
    rng = random.Random(7)
    noise = bytes([0x7F]) + bytes(rng.randrange(256) for _ in range(4095))  # neither pickle (0x80) nor zip (PK)
    (tmp_path / "noise.pth").write_bytes(noise)
    with pytest.raises(CheckpointError, match=r"noise\.pth: not a PyTorch checkpoint \(unknown file format\)"):
        rvc_peft.load_synthesizer(tmp_path / "noise.pth")


def _garbled_files() -> list[bytes]:
    """Seeded garbage that gets past the magic-number checks, so torch's unpickler itself has to fail.

    Random bodies behind every pickle protocol header and behind a zip header, plus 1-3 random byte changes in real
    files of both torch formats (zip and the legacy pickle stream). Before every unpickling failure became a
    CheckpointError, about one pickle case in ten and some mutations escaped as IndexError, KeyError,
    AssertionError or BadZipFile.
    """
    rng = random.Random(2024)
    body = lambda: bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))
    cases = [bytes([0x80, rng.choice([2, 3, 4, 5])]) + body() for _ in range(240)]
    cases += [b"PK\x03\x04" + body() for _ in range(60)]
    small = {"weight": {"emb_g.weight": torch.zeros(2, 3, dtype=torch.float16)}, "config": [1, 2], "info": "x"}
    for legacy in (False, True):
        buffer = io.BytesIO()
        torch.save(small, buffer, _use_new_zipfile_serialization=not legacy)
        real = buffer.getvalue()
        for _ in range(150):
            mutated = bytearray(real)
            for _ in range(rng.randrange(1, 4)):
                mutated[rng.randrange(len(mutated))] = rng.randrange(256)
            cases.append(bytes(mutated))
    return cases


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_garbled_pickles_and_zips_are_checkpoint_errors(tmp_path) -> None:
    path = tmp_path / "garbled.pth"
    escaped = []
    for number, data in enumerate(_garbled_files()):
        path.write_bytes(data)
        try:
            rvc_peft.load_synthesizer(path)
        except CheckpointError as err:
            assert str(err).startswith(f"{path}: "), err
        except Exception as err:  # noqa: BLE001 - collected so that one run reports every escape
            escaped.append(f"case {number}: {type(err).__name__}: {err}")
        else:
            escaped.append(f"case {number}: loaded as a synthesizer")
    assert not escaped, "\n".join(escaped[:10])


def test_garbled_pickle_reports_the_unpickler_failure(tmp_path) -> None:
    # APPEND on an empty stack: the weights-only unpickler raises IndexError("pop from empty list").
    (tmp_path / "pop.pth").write_bytes(b"\x80\x02a.")
    with pytest.raises(CheckpointError, match=r"pop\.pth: not a readable PyTorch checkpoint \(IndexError: pop from"):
        rvc_peft.load_synthesizer(tmp_path / "pop.pth")
    # A memo lookup of a key that was never stored: KeyError.
    (tmp_path / "memo.pth").write_bytes(b"\x80\x02h\x07.")
    with pytest.raises(CheckpointError, match=r"memo\.pth: not a readable PyTorch checkpoint \(KeyError"):
        rvc_peft.load_synthesizer(tmp_path / "memo.pth")
    # An opcode the weights-only unpickler does not implement: the reason, not torch's weights_only=False advice.
    (tmp_path / "opcode.pth").write_bytes(b"\x80\x020.")
    with pytest.raises(CheckpointError, match=r"opcode\.pth: not a readable PyTorch checkpoint \(Unsupported operand"):
        rvc_peft.load_synthesizer(tmp_path / "opcode.pth")


class _RunsACommand:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_that_runs_code_is_refused(tmp_path) -> None:
    marker = tmp_path / "pwned"
    payload = _RunsACommand()
    payload.marker = marker
    for name, writer in {
        "evil_zip.pth": lambda p: torch.save({"weight": payload}, p),
        "evil_legacy.pth": lambda p: p.write_bytes(pickle.dumps({"model": payload}, protocol=2)),
    }.items():
        writer(tmp_path / name)
        with pytest.raises(CheckpointError, match=rf"{name}: refusing to load: the file asks to run Python code"):
            rvc_peft.load_synthesizer(tmp_path / name)
    assert not marker.exists()


def test_discriminator_given_as_generator(tmp_path) -> None:
    path = rvc_peft.save_rvc_checkpoint(rvc_peft.MultiPeriodDiscriminator("v1"), tmp_path / "f0D40k.pth")
    with pytest.raises(CheckpointError, match=r"f0D40k\.pth: this is a discriminator \(D\) checkpoint"):
        rvc_peft.load_synthesizer(path)


def test_generator_given_as_discriminator(tmp_path, voice) -> None:
    with pytest.raises(CheckpointError, match=r"voice\.pth: this is an exported voice"):
        rvc_peft.load_discriminator(voice)
    base = rvc_peft.save_rvc_checkpoint(random_synthesizer(small_config()), tmp_path / "f0G40k.pth")
    with pytest.raises(CheckpointError, match=r"f0G40k\.pth: this is a synthesizer \(G\) checkpoint"):
        rvc_peft.load_discriminator(base)


def test_unknown_formats(tmp_path) -> None:
    torch.save({"state": 1, "epoch": 3}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match=r"other\.pth: unknown format: .*found keys \[epoch, state\]"):
        rvc_peft.load_synthesizer(tmp_path / "other.pth")
    torch.save([torch.zeros(2)], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match=r"list\.pth: unknown format: the file holds a list"):
        rvc_peft.load_synthesizer(tmp_path / "list.pth")
    (tmp_path / "model.onnx").write_bytes(b"\x08\x07ONNX")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        rvc_peft.load_synthesizer(tmp_path / "model.onnx")


def test_other_vocoder_rejected(tmp_path, voice) -> None:
    ckpt = torch.load(voice, weights_only=True)
    ckpt["vocoder"] = "RefineGAN"
    torch.save(ckpt, tmp_path / "refine.pth")
    with pytest.raises(CheckpointError, match=r"refine\.pth: uses Applio's 'RefineGAN' vocoder"):
        rvc_peft.load_synthesizer(tmp_path / "refine.pth")


def test_weights_that_do_not_fit(tmp_path, voice) -> None:
    ckpt = torch.load(voice, weights_only=True)
    ckpt["weight"]["dec.conv_pre.weight"] = torch.zeros(3, 3, 3, dtype=torch.float16)
    del ckpt["weight"]["flow.flows.0.pre.bias"]
    torch.save(ckpt, tmp_path / "broken.pth")
    with pytest.raises(CheckpointError, match=r"broken\.pth: weights do not fit the model: 1 missing keys"):
        rvc_peft.load_synthesizer(tmp_path / "broken.pth")
    ckpt = torch.load(voice, weights_only=True)
    ckpt["weight"]["dec.conv_pre.weight"] = torch.zeros(3, 3, 3, dtype=torch.float16)
    torch.save(ckpt, tmp_path / "shape.pth")
    with pytest.raises(CheckpointError, match=r"dec\.conv_pre\.weight has shape \[3, 3, 3\] in the file"):
        rvc_peft.load_synthesizer(tmp_path / "shape.pth")


def test_wrong_version_requested(voice) -> None:
    with pytest.raises(CheckpointError, match="version=v1 was requested but the weights are v2"):
        rvc_peft.load_synthesizer(voice, version="v1")
    with pytest.raises(CheckpointError, match="sample_rate=48k was requested but the file is a 40k model"):
        rvc_peft.load_synthesizer(voice, sample_rate="48k")


def test_missing_hub_id_fails_fast(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(CheckpointError, match="someone/voice/f0G40k.pth: not a local file and not downloadable"):
        rvc_peft.load_synthesizer("someone/voice", filename="f0G40k.pth")
    with pytest.raises(CheckpointError, match="voice.pth: file not found"):
        rvc_peft.load_synthesizer("voice.pth")


def _entry(index, value, message, name):
    """A case that replaces entry `index` of the 'config' list."""
    return pytest.param(lambda ckpt: ckpt["config"].__setitem__(index, value), f"invalid 'config' list: {message}",
                        id=name)


def _field(key, value, message, name):
    return pytest.param(lambda ckpt: ckpt.__setitem__(key, value), message, id=name)


@pytest.mark.parametrize("change,message", [
    _entry(2, None, r"entry 2 \(inter_channels\) is None; expected a positive integer", "channels-none"),
    _entry(6, True, r"entry 6 \(n_layers\) is True; expected a positive integer", "layers-bool"),
    _entry(12, "10,10", r"entry 12 \(upsample_rates\) holds '10,10'; expected a list of positive integers",
           "rates-str"),
    _entry(11, [[1, 3, 5]], r"entry 11 \(resblock_dilation_sizes\) is \[\[1, 3, 5\]\]; expected 3 lists",
           "dilations-short"),
    _entry(11, [[1, 3, 5], [1, None, 5], [1, 3, 5]], r"entry 11 \(resblock_dilation_sizes\) holds \[1, None, 5\]",
           "dilation-none"),
    _entry(14, [16, 16, 4], r"entries 12 and 14 \(upsample_rates \[10, 10, 2, 2\], "
           r"upsample_kernel_sizes \[16, 16, 4\]\) differ in length", "kernels-short"),
    _entry(8, "0", r"entry 8 \(p_dropout\) is '0'; expected a number in \[0, 1\)", "dropout-str"),
    _entry(17, None, r"entry 17 \(sampling_rate\) is None", "sr-none"),
    _field("config", 5, r"'config' is 5; RVC exports hold a list of 18 entries", "config-int"),
    _field("f0", "yes", r"'f0' is 'yes'; RVC writes 0/1 \(WebUI\) or False/True \(Applio\)", "f0-str"),
    _field("f0", None, r"'f0' is None", "f0-none"),
    _field("f0", 2, r"'f0' is 2", "f0-two"),
    _field("version", "v3", r"'version' is 'v3'; RVC WebUI/Applio voices are 'v1' or 'v2'", "version-v3"),
    _field("version", None, r"'version' is None", "version-none"),
    pytest.param(lambda c: c.__setitem__("config", c["config"][:17]), r"'config' has 17 entries; RVC exports have 18",
                 id="config-17"),
    pytest.param(lambda c: c["weight"].__setitem__(3, torch.zeros(1)),
                 r"state dict key 3 is not a parameter name \(a string\)", id="int-key"),
    pytest.param(lambda c: c["weight"].__setitem__("emb_g.weight", torch.zeros(4)),
                 r"emb_g\.weight has shape \[4\]: not an RVC", id="speaker-table-1d"),
])
def test_malformed_exported_voice(tmp_path, voice, change, message) -> None:
    ckpt = torch.load(voice, weights_only=True)
    change(ckpt)
    torch.save(ckpt, tmp_path / "malformed.pth")
    with pytest.raises(CheckpointError, match=rf"malformed\.pth: {message}"):
        rvc_peft.load_synthesizer(tmp_path / "malformed.pth")


@pytest.mark.parametrize("change,message", [
    pytest.param(lambda s: s.pop("enc_p.emb_phone.weight"), r"missing 'enc_p.emb_phone.weight'", id="no-phone"),
    pytest.param(lambda s: s.__setitem__("enc_p.emb_phone.weight", torch.zeros(3)),
                 r"enc_p.emb_phone.weight has shape \[3\]", id="phone-1d"),
    pytest.param(lambda s: s.pop("dec.ups.1.weight_v"), r"missing 'dec.ups.1.weight_v'", id="no-upsampler"),
    pytest.param(lambda s: s.__setitem__("enc_p.encoder.attn_layers.0.emb_rel_k", torch.zeros(1, 21, 5)),
                 r"attention width 5 does not divide the hidden width 16", id="heads"),
])
def test_malformed_config_less_checkpoint(tmp_path, change, message) -> None:
    state = rvc_state_dict(random_synthesizer(small_config("v2", True, 40000)))
    change(state)
    torch.save({"model": state}, tmp_path / "G_1.pth")
    with pytest.raises(CheckpointError, match=rf"G_1\.pth: {message}"):
        rvc_peft.load_synthesizer(tmp_path / "G_1.pth")


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hf") / "voice"
    random_synthesizer(small_config("v2", True, 40000)).save_pretrained(folder)
    return folder


def _rewrite_weights(source, target, change) -> None:
    shutil.copytree(source, target)
    tensors = load_file(target / "model.safetensors")
    change(tensors)
    save_file(tensors, target / "model.safetensors", metadata={"format": "pt"})


def test_hf_folder_with_missing_unexpected_or_misshaped_keys(tmp_path, hf_folder) -> None:
    def missing_and_unexpected(tensors):
        del tensors["flow.flows.0.pre.bias"]
        tensors["junk.weight"] = torch.zeros(2)

    _rewrite_weights(hf_folder, tmp_path / "keys", missing_and_unexpected)
    pattern = (r"keys: model\.safetensors does not fit config\.json: 1 missing keys \(flow\.flows\.0\.pre\.bias\); "
               r"1 unexpected keys \(junk\.weight\)")
    with pytest.raises(CheckpointError, match=pattern):
        rvc_peft.load_synthesizer(tmp_path / "keys")

    _rewrite_weights(hf_folder, tmp_path / "shape", lambda t: t.__setitem__("dec.conv_pre.bias", torch.zeros(5)))
    pattern = (r"shape: model\.safetensors does not fit config\.json: 1 keys of the wrong shape "
               r"\(dec\.conv_pre\.bias \[5\] in the file, \[32\] in the model\)")
    with pytest.raises(CheckpointError, match=pattern):
        rvc_peft.load_synthesizer(tmp_path / "shape")


def test_hf_folder_with_damaged_safetensors(tmp_path, hf_folder) -> None:
    shutil.copytree(hf_folder, tmp_path / "garbage")
    (tmp_path / "garbage" / "model.safetensors").write_bytes(b"garbage" * 10)
    with pytest.raises(CheckpointError, match=r"garbage/model\.safetensors: not a readable safetensors file"):
        rvc_peft.load_synthesizer(tmp_path / "garbage")
    shutil.copytree(hf_folder, tmp_path / "cut")
    data = (hf_folder / "model.safetensors").read_bytes()
    (tmp_path / "cut" / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"cut/model\.safetensors: not a readable safetensors file"):
        rvc_peft.load_synthesizer(tmp_path / "cut")
    shutil.copytree(hf_folder, tmp_path / "nojson")
    (tmp_path / "nojson" / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"nojson: cannot load the Hugging Face model folder"):
        rvc_peft.load_synthesizer(tmp_path / "nojson")


def test_mistyped_local_path_is_not_sent_to_the_hub(tmp_path, monkeypatch) -> None:
    import huggingface_hub

    def no_hub(*args, **kwargs):
        raise AssertionError(f"asked the Hub for {args}")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_hub)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_hub)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "assets" / "weights").mkdir(parents=True)
    pattern = (r"^assets/weights/myvoice\.pth: file not found \(the folder assets/weights exists but holds no "
               r"'myvoice\.pth'; for a Hub repo write hf://assets/weights/myvoice\.pth\)$")
    with pytest.raises(CheckpointError, match=pattern):
        rvc_peft.load_synthesizer("assets/weights/myvoice.pth")
    for text in ("assets/myvoice", "./weights/voice.pth", "~/no-such-folder-here/voice.pth", "my voice/model.pth",
                 "C:\\voices\\model.pth"):
        with pytest.raises(CheckpointError, match="file not found"):
            rvc_peft.load_synthesizer(text)


# --- weight values and zip CRCs (issue 11) ---------------------------------------------------------------------

LAB_BASE = os.path.join(os.path.dirname(rvc_peft.__file__), "lab", "weights", "f0G32k.pth")


def test_weight_value_checks_name_file_tensor_and_problem() -> None:
    from rvc_peft.checkpoints.safe_load import MAX_WEIGHT_MAGNITUDE, check_weights

    cases = [
        (torch.tensor([1.0, float("nan")], dtype=torch.float16), "contains NaN"),
        (torch.tensor([1.0, float("-inf")], dtype=torch.bfloat16), "contains inf"),
        (torch.tensor([0.5, -3.1e38]), "max |value| 3.1e+38 is not a trained weight"),
        (torch.tensor([1, 2]), "has integer dtype torch.int64 where floating weights are expected"),
        (torch.tensor([True]), "has boolean dtype torch.bool where floating weights are expected"),
        (torch.zeros(2, dtype=torch.complex64), "has complex dtype torch.complex64"),
    ]
    for tensor, problem in cases:
        with pytest.raises(CheckpointError) as caught:
            check_weights({"ok.weight": torch.ones(3), "dec.w": tensor}, "voice.pth")
        assert str(caught.value).startswith(f"voice.pth: tensor 'dec.w' {problem}"), str(caught.value)
    # what real files hold passes: BatchNorm step counters and statistics (RMVPE; a variance follows its input's
    # scale), empty tensors, values right at the bound
    with pytest.raises(CheckpointError, match="'bn.running_var' contains NaN"):
        check_weights({"bn.running_var": torch.tensor([float("nan")])}, "voice.pth")
    check_weights({"bn.num_batches_tracked": torch.tensor(7), "empty": torch.zeros(0), "bn.running_var": torch.full(
                   (4,), 3e5),
                   "edge": torch.tensor([MAX_WEIGHT_MAGNITUDE, -MAX_WEIGHT_MAGNITUDE])}, "ok.pth")


def test_the_bound_is_far_above_real_rvc_weights() -> None:
    """The shipped lab base (trained) and the random test models peak at about 4: the 1e4 bound is generous."""
    from rvc_peft.checkpoints.safe_load import MAX_WEIGHT_MAGNITUDE

    state = torch.load(LAB_BASE, weights_only=True)["model"]
    lab_peak = max(float(v.float().abs().max()) for v in state.values() if v.is_floating_point())
    random_peak = max(float(v.abs().max()) for v in random_synthesizer(small_config()).state_dict().values()
                      if v.is_floating_point())
    assert 1.0 < lab_peak < 10.0 and 1.0 < random_peak < 10.0
    assert MAX_WEIGHT_MAGNITUDE >= 1000 * max(lab_peak, random_peak)
    rvc_peft.load_synthesizer(LAB_BASE)  # and it loads


def test_crc_of_every_member_is_checked(tmp_path) -> None:
    """torch's zip reader ignores CRCs: a flipped bit in a tensor record would load as a slightly wrong weight."""
    import time
    import zipfile

    from rvc_peft.checkpoints.safe_load import verify_zip_crc

    flipped = tmp_path / "f0G32k.pth"
    shutil.copy(LAB_BASE, flipped)
    with zipfile.ZipFile(flipped) as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith("/data/5"))
    data = bytearray(flipped.read_bytes())
    header = info.header_offset
    start = header + 30 + int.from_bytes(data[header + 26:header + 28], "little") + \
        int.from_bytes(data[header + 28:header + 30], "little")
    data[start + 10] ^= 0x10
    flipped.write_bytes(bytes(data))
    torch.load(flipped, weights_only=True)  # torch itself accepts it
    with pytest.raises(CheckpointError, match=rf"f0G32k\.pth: corrupt file \(CRC check failed for member "
                                              rf"{re.escape(info.filename)}\)"):
        rvc_peft.load_synthesizer(flipped)
    started = time.perf_counter()
    verify_zip_crc(LAB_BASE)
    assert time.perf_counter() - started < 1.0  # about 0.03 s for the 27 MB base


def test_oversized_tensor_views_are_refused() -> None:
    from rvc_peft.checkpoints.safe_load import check_weights

    view = torch.zeros(4).as_strided((10**6, 10**6), (0, 0))
    with pytest.raises(CheckpointError, match=r"x\.pth: tensor 'w' is a view of 1000000000000 elements over a "
                                              r"storage of 4 \(a crafted file\)"):
        check_weights({"w": view}, "x.pth")
