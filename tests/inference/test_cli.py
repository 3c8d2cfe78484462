"""`rvc-peft convert` and `rvc-peft eval` end to end on files written in the real on-disk formats."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import soundfile as sf

from rvc_peft.cli import main
from rvc_peft.inference.batch import collect_inputs, plan_outputs

from .conftest import speech_like


def write_inputs(folder):
    (folder / "sub").mkdir(parents=True)
    sf.write(folder / "one.wav", speech_like(0.8, seed=1), 16000)
    sf.write(folder / "sub" / "two.flac", speech_like(0.6, seed=2), 22050)
    (folder / "broken.wav").write_text("not audio")
    (folder / "notes.txt").write_text("ignored: not an audio extension")


def run_convert(inputs, out, models, *extra):
    args = ["convert", *map(str, inputs), "--base", str(models / "base.pth"), "--content-encoder",
            str(models / "hubert"), "--f0-method", "pm", "-o", str(out), "--no-progress", "--seed", "0", *extra]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the fp16 export has other weights than the adapter's base: a soft warning
        return main(args)


def test_convert_a_folder_with_an_adapter(tmp_path, models, adapters, capsys):
    write_inputs(tmp_path / "in")
    code = run_convert([tmp_path / "in"], tmp_path / "out", models, "--adapter", str(adapters["alice"]),
                       "--pitch", "2", "--index-rate", "0", "--protect", "0.4", "--rms-mix-rate", "0.5")
    captured = capsys.readouterr()
    assert code == 1  # one input failed; the others were converted
    assert "broken.wav" in captured.err and "converted 2 of 3 files" in captured.out
    one, rate = sf.read(tmp_path / "out" / "one.wav", dtype="int16")
    assert rate == 40000 and sf.info(tmp_path / "out" / "one.wav").subtype == "PCM_16"
    assert abs(len(one) / rate - 0.8) < 0.05 and np.abs(one).max() > 0
    assert (tmp_path / "out" / "sub" / "two.wav").is_file()  # the input tree is mirrored
    # a second run never replaces earlier outputs (or inputs): new names instead
    assert run_convert([tmp_path / "in" / "one.wav"], tmp_path / "out", models, "--float") == 0
    assert (tmp_path / "out" / "one (1).wav").is_file()
    assert sf.info(tmp_path / "out" / "one (1).wav").subtype == "FLOAT"


def test_output_inside_the_input_folder_and_onto_an_input(tmp_path, models):
    write_inputs(tmp_path / "in")
    (tmp_path / "in" / "broken.wav").unlink()
    assert run_convert([tmp_path / "in"], tmp_path / "in" / "converted", models) == 0
    assert run_convert([tmp_path / "in"], tmp_path / "in" / "converted", models) == 0  # outputs are not inputs
    assert sorted(p.name for p in (tmp_path / "in" / "converted").rglob("*.wav")) == [
        "one (1).wav", "one.wav", "two (1).wav", "two.wav"]
    before = (tmp_path / "in" / "one.wav").read_bytes()
    assert run_convert([tmp_path / "in" / "one.wav"], tmp_path / "in" / "one.wav", models) == 0
    assert (tmp_path / "in" / "one.wav").read_bytes() == before
    assert (tmp_path / "in" / "one (1).wav").is_file()


def test_plan_outputs_never_picks_an_input(tmp_path):
    (tmp_path / "a.wav").write_bytes(b"")
    (tmp_path / "a (1).wav").write_bytes(b"")
    inputs = collect_inputs([tmp_path / "a.wav", tmp_path / "a (1).wav"])
    planned = plan_outputs(inputs, tmp_path, overwrite=True)
    assert [p.name for p in planned] == ["a (2).wav", "a (1) (1).wav"]
    with pytest.raises(FileNotFoundError, match="nowhere: no such file"):
        collect_inputs([tmp_path / "nowhere"])


def test_adapter_for_another_base_fails_clearly(tmp_path, models, adapters, capsys):
    write_inputs(tmp_path / "in")
    code = run_convert([tmp_path / "in" / "one.wav"], tmp_path / "out", models, "--adapter", str(adapters["other"]))
    err = capsys.readouterr().err
    assert code == 1 and "rvc-peft convert: error:" in err and "other" in err and "32000" in err
    assert not (tmp_path / "out").exists()


def test_eval_command(tmp_path, capsys):
    sf.write(tmp_path / "ref.wav", speech_like(0.8, seed=1), 16000)
    sf.write(tmp_path / "conv.wav", speech_like(0.8, seed=1) * 0.5, 40000)  # other rate: resampled for analysis
    code = main(["eval", str(tmp_path / "conv.wav"), str(tmp_path / "ref.wav"), "--json", str(tmp_path / "m.json"),
                 "--figure", str(tmp_path / "m.png"), "--align", "none"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads((tmp_path / "m.json").read_text())
    assert printed == saved
    assert set(saved) >= {"mcd_db", "f0_rmse_cents", "f0_corr", "vuv_error_rate", "spectral_convergence"}
    assert (tmp_path / "m.png").stat().st_size > 10_000
    assert main(["eval", str(tmp_path / "conv.wav"), str(tmp_path / "missing.wav")]) == 1


def test_export_keeps_info_in_both_flavors(tmp_path, models, adapters, capsys):
    import torch

    def export(flavor, *info):
        out = tmp_path / f"{flavor}{len(info)}.pth"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the fp16 export has other weights than the adapter's base
            code = main(["export", "--base", str(models / "base.pth"), "--adapter", str(adapters["alice"]), "--out",
                         str(out), "--flavor", flavor, *info])
        assert code == 0, capsys.readouterr().err
        return torch.load(out, weights_only=True)

    text = "alice, 200 steps of LoRA r4"
    assert export("webui", "--info", text)["info"] == text
    applio = export("applio", "--info", text)
    assert applio["info"] == text and applio["sr"] == 40000 and applio["f0"] is True  # still Applio's variant
    assert "info" not in export("applio")  # nothing given: Applio's own layout, no info key
    assert export("webui")["info"] == ""  # the base is an exported voice with an empty info
