"""`rvc-peft convert` never loses an output: names are claimed when each file is written, reports name real files.

Most tests drive `convert_files` with a stand-in converter that returns the input's own samples, so every output can
be traced to its input by content; the CLI tests run the real pipeline on the tiny models.
"""

from __future__ import annotations

import errno
import os
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from rvc_peft.cli import main
from rvc_peft.inference import audio_io
from rvc_peft.inference.batch import collect_inputs, convert_files, plan_outputs
from rvc_peft.utils import files

from .conftest import speech_like


def echo(path: Path) -> tuple[np.ndarray, int]:
    """A 'conversion' that returns the input itself (16 kHz)."""
    audio, rate = sf.read(path, dtype="float32")
    return audio, rate


def write_tone(path: Path, level: float, seconds: float = 0.1) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.full(int(16000 * seconds), level, np.float32), 16000,
             subtype="FLOAT" if path.suffix == ".wav" else None)


def level_of(path: Path) -> float:
    audio, _ = sf.read(path, dtype="float32")
    return round(float(audio[0]), 3)


def hidden(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob(".*")]


# --- names claimed at write time ------------------------------------------------------------------------------------

def test_a_file_that_appears_at_the_planned_path_is_not_replaced(tmp_path) -> None:
    write_tone(tmp_path / "in" / "src.wav", 0.25)
    inputs = collect_inputs([tmp_path / "in"])
    outputs = plan_outputs(inputs, tmp_path / "out")
    assert outputs == [tmp_path / "out" / "src.wav"]

    def convert_while_another_run_writes(path: Path) -> tuple[np.ndarray, int]:
        write_tone(tmp_path / "out" / "src.wav", 0.5)  # someone else's result lands on the planned name
        return echo(path)

    report = convert_files(convert_while_another_run_writes, inputs, outputs, progress=False, subtype="FLOAT")
    assert report.written == [(inputs[0].path, tmp_path / "out" / "src (1).wav")]
    assert level_of(tmp_path / "out" / "src.wav") == 0.5  # theirs, untouched
    assert level_of(tmp_path / "out" / "src (1).wav") == 0.25  # ours, and reported under its real name
    assert hidden(tmp_path / "out") == []


def test_overwrite_replaces_the_planned_file(tmp_path) -> None:
    write_tone(tmp_path / "in" / "src.wav", 0.25)
    write_tone(tmp_path / "out" / "src.wav", 0.5)
    inputs = collect_inputs([tmp_path / "in"])
    outputs = plan_outputs(inputs, tmp_path / "out", overwrite=True)
    report = convert_files(echo, inputs, outputs, progress=False, subtype="FLOAT", overwrite=True)
    assert report.written == [(inputs[0].path, tmp_path / "out" / "src.wav")]
    assert level_of(tmp_path / "out" / "src.wav") == 0.25
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["src.wav"]


def test_two_runs_writing_the_same_folder_both_keep_their_results(tmp_path) -> None:
    """Both plan the same names (nothing exists yet), both finish converting, then both write."""
    for run, level in (("a", 0.1), ("b", 0.2)):
        write_tone(tmp_path / run / "one.wav", level)
        write_tone(tmp_path / run / "two.wav", level + 0.5)
    both_converted = threading.Barrier(2)
    reports = {}

    def run(name: str) -> None:
        inputs = collect_inputs([tmp_path / name])
        outputs = plan_outputs(inputs, tmp_path / "out")
        assert [p.name for p in outputs] == ["one.wav", "two.wav"]

        def convert(path: Path) -> tuple[np.ndarray, int]:
            result = echo(path)
            both_converted.wait()
            return result

        reports[name] = convert_files(convert, inputs, outputs, progress=False, subtype="FLOAT")

    threads = [threading.Thread(target=run, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    written = {out: level_of(src) for report in reports.values() for src, out in report.written}
    assert len(written) == 4 and not any(r.failed for r in reports.values())
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["one (1).wav", "one.wav", "two (1).wav", "two.wav"]
    for out, level in written.items():  # every reported path holds that input's result
        assert level_of(out) == level
    assert sorted(written.values()) == [0.1, 0.2, 0.6, 0.7]


def test_a_taken_name_moves_to_a_name_no_other_output_of_the_run_uses(tmp_path) -> None:
    """"a.wav" is taken meanwhile; "a (1).wav" is the plan of another input, so the file goes to "a (2).wav"."""
    write_tone(tmp_path / "in" / "a.wav", 0.1)
    write_tone(tmp_path / "in" / "a.flac", 0.2)  # same stem: planned as "a (1).wav"
    inputs = collect_inputs([tmp_path / "in"])
    outputs = plan_outputs(inputs, tmp_path / "out")
    assert [(i.path.name, o.name) for i, o in zip(inputs, outputs)] == [("a.flac", "a.wav"), ("a.wav", "a (1).wav")]

    def convert(path: Path) -> tuple[np.ndarray, int]:
        if path.name == "a.flac":
            write_tone(tmp_path / "out" / "a.wav", 0.9)
        return echo(path)

    report = convert_files(convert, inputs, outputs, progress=False, subtype="FLOAT")
    assert [(src.name, out.name) for src, out in report.written] == [("a.flac", "a (2).wav"), ("a.wav", "a (1).wav")]
    assert [level_of(tmp_path / "out" / n) for n in ("a.wav", "a (1).wav", "a (2).wav")] == [0.9, 0.1, 0.2]


def test_the_same_input_twice_and_inputs_sharing_an_output_name(tmp_path) -> None:
    write_tone(tmp_path / "in" / "x.wav", 0.3)
    write_tone(tmp_path / "in" / "sub" / "y.wav", 0.4)
    inputs = collect_inputs([tmp_path / "in" / "x.wav", tmp_path / "in", str(tmp_path / "in" / "x.wav")])
    assert [i.path.name for i in inputs] == ["x.wav", "y.wav"]  # listed three times, converted once
    # files given directly land flat in -o: two inputs called y.wav get two names
    write_tone(tmp_path / "other" / "y.wav", 0.5)
    inputs = collect_inputs([tmp_path / "in" / "sub" / "y.wav", tmp_path / "other" / "y.wav"])
    outputs = plan_outputs(inputs, tmp_path / "out")
    report = convert_files(echo, inputs, outputs, progress=False, subtype="FLOAT")
    assert [(level_of(src), out.name) for src, out in report.written] == [(0.4, "y.wav"), (0.5, "y (1).wav")]
    assert [level_of(out) for _, out in report.written] == [0.4, 0.5]


# --- where outputs may go -------------------------------------------------------------------------------------------

def test_output_folder_and_input_folder(tmp_path) -> None:
    write_tone(tmp_path / "in" / "a.wav", 0.1)
    write_tone(tmp_path / "in" / "done" / "old.wav", 0.2)
    with pytest.raises(ValueError, match=r"in: the output folder is the input folder; pick another -o"):
        collect_inputs([tmp_path / "in"], exclude=tmp_path / "in")
    # an output folder inside the input folder is skipped while scanning (a re-run does not convert its outputs) ...
    assert [i.relative.as_posix() for i in collect_inputs([tmp_path / "in"], exclude=tmp_path / "in" / "done")] == [
        "a.wav"]
    # ... but a file named directly is taken, and so is an input folder inside the output folder
    named = collect_inputs([tmp_path / "in" / "done" / "old.wav"], exclude=tmp_path / "in" / "done")
    assert [i.path.name for i in named] == ["old.wav"]
    inside = collect_inputs([tmp_path / "in" / "done"], exclude=tmp_path / "in")
    assert [i.path.name for i in inside] == ["old.wav"]
    assert plan_outputs(inside, tmp_path / "in") == [tmp_path / "in" / "old.wav"]


def test_an_existing_folder_named_like_a_file_is_a_folder(tmp_path) -> None:
    write_tone(tmp_path / "src.wav", 0.1)
    (tmp_path / "out.wav").mkdir()
    inputs = collect_inputs([tmp_path / "src.wav"])
    assert plan_outputs(inputs, tmp_path / "out.wav") == [tmp_path / "out.wav" / "src.wav"]
    assert plan_outputs(inputs, tmp_path / "new.wav") == [tmp_path / "new.wav"]


def test_a_read_only_output_folder_is_reported_by_name(tmp_path, monkeypatch) -> None:
    write_tone(tmp_path / "in" / "a.wav", 0.1)
    locked = tmp_path / "out"
    locked.mkdir()
    real_open = os.open

    def refuse(name, flags, mode=0o777, *args, **kwargs):  # what the kernel says for a folder we may not write
        if flags & os.O_CREAT and Path(name).parent == locked:
            raise PermissionError(errno.EACCES, "Permission denied", name)
        return real_open(name, flags, mode, *args, **kwargs)

    monkeypatch.setattr(files.os, "open", refuse)
    inputs = collect_inputs([tmp_path / "in"])
    report = convert_files(echo, inputs, plan_outputs(inputs, locked), progress=False, log=lambda _: None)
    assert report.written == []
    reason = f"{inputs[0].path}: cannot write {locked / 'a.wav'}: the folder {locked} is not writable (permission denied)"
    assert report.failed == [(inputs[0].path, reason)]


def test_a_full_disk_fails_the_file_and_keeps_the_previous_output(tmp_path, monkeypatch) -> None:
    write_tone(tmp_path / "in" / "a.wav", 0.1)
    write_tone(tmp_path / "out" / "a.wav", 0.7)

    def full(file, *args, **kwargs):
        Path(file).write_bytes(b"RIFF")
        raise OSError(errno.ENOSPC, "No space left on device", str(file))

    monkeypatch.setattr(sf, "write", full)
    inputs = collect_inputs([tmp_path / "in"])
    report = convert_files(echo, inputs, plan_outputs(inputs, tmp_path / "out", overwrite=True), progress=False,
                           overwrite=True, log=lambda _: None)
    target = tmp_path / "out" / "a.wav"
    assert report.failed == [(inputs[0].path, f"{inputs[0].path}: no space left on device while writing {target}")]
    monkeypatch.undo()
    assert level_of(target) == 0.7 and sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.wav"]


# --- the command ------------------------------------------------------------------------------------------------------

def run_convert(inputs, out, models, *extra):
    args = ["convert", *map(str, inputs), "--base", str(models / "base.pth"), "--content-encoder",
            str(models / "hubert"), "--f0-method", "pm", "-o", str(out), "--no-progress", "--seed", "0", *extra]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return main(args)


def test_convert_prints_the_path_it_wrote(tmp_path, models, monkeypatch, capsys) -> None:
    sf.write(tmp_path / "src.wav", speech_like(0.5, seed=3), 16000)
    (tmp_path / "out").mkdir()
    write_tone(tmp_path / "out" / "voice.wav", 0.9)  # exists when planning: planned as "voice (1).wav"
    real_write = audio_io.write_audio

    def another_run_finishes_first(path, *args, **kwargs):
        write_tone(Path(path), 0.8)  # and "voice (1).wav" is taken while converting
        return real_write(path, *args, **kwargs)

    monkeypatch.setattr(audio_io, "write_audio", another_run_finishes_first)
    assert run_convert([tmp_path / "src.wav"], tmp_path / "out" / "voice.wav", models) == 0
    assert capsys.readouterr().out.strip() == f"converted 1 of 1 files -> {tmp_path / 'out' / 'voice (2).wav'}"
    assert level_of(tmp_path / "out" / "voice.wav") == 0.9 and level_of(tmp_path / "out" / "voice (1).wav") == 0.8
    assert sf.info(tmp_path / "out" / "voice (2).wav").samplerate == 40000
    # a folder run lists every file it wrote under its real name
    monkeypatch.undo()
    (tmp_path / "in").mkdir()
    sf.write(tmp_path / "in" / "b.wav", speech_like(0.5, seed=4), 16000)
    assert run_convert([tmp_path / "in", tmp_path / "src.wav"], tmp_path / "out", models) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines == [f"converted 2 of 2 files -> {tmp_path / 'out'}",
                     f"  {tmp_path / 'in' / 'b.wav'} -> {tmp_path / 'out' / 'b.wav'}",
                     f"  {tmp_path / 'src.wav'} -> {tmp_path / 'out' / 'src.wav'}"]


def test_convert_refuses_the_input_folder_as_output(tmp_path, capsys) -> None:
    write_tone(tmp_path / "in" / "a.wav", 0.1)
    (tmp_path / "unused.pth").write_bytes(b"never read")
    code = main(["convert", str(tmp_path / "in"), "--base", str(tmp_path / "unused.pth"), "-o", str(tmp_path / "in"),
                 "--no-progress"])
    assert code == 1
    assert capsys.readouterr().err.strip() == (
        f"rvc-peft convert: error: {tmp_path / 'in'}: the output folder is the input folder; pick another -o "
        "(outputs are written to a separate folder so that they never mix with, or replace, the inputs)")
    assert sorted(p.name for p in (tmp_path / "in").iterdir()) == ["a.wav"]
