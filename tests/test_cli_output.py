"""What `rvc-peft` prints: only its own log lines and progress on stderr, -v/-q anywhere, --version, fast --help."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from rvc_peft import __version__
from rvc_peft.cli import build_parser, configure_logging, main
from rvc_peft.utils.log import TqdmLogHandler

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _reset_rvc_logger():
    """`main` configures the "rvc_peft" logger; leave it as other tests expect it."""
    yield
    logger = logging.getLogger("rvc_peft")
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    logger.setLevel(logging.NOTSET)
    logger.propagate = True


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "rvc_peft.cli", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=300, check=False)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """An exported voice as the base, a transformers content-encoder folder, a faiss index and one input WAV."""
    from rvc_peft.checkpoints import export_rvc
    from rvc_peft.data.index import build_index, save_index
    from tests.inference.conftest import speech_like, tiny_encoder, tiny_synthesizer

    root = tmp_path_factory.mktemp("cli-output")
    export_rvc(tiny_synthesizer(), root / "base.pth")
    from rvc_peft import RVCLoraConfig, get_rvc_peft_model, load_synthesizer

    # an adapter too: PEFT reads transformers' deprecated `is_gradient_checkpointing` when it loads one
    get_rvc_peft_model(load_synthesizer(root / "base.pth"), RVCLoraConfig(r=2)).save_pretrained(root / "voice")
    tiny_encoder().save_pretrained(root / "hubert")
    features = np.random.default_rng(0).standard_normal((400, 256)).astype(np.float32)
    save_index(build_index(features, show_progress=False), root / "voice.index")
    sf.write(root / "in.wav", speech_like(0.8, seed=1), 16000)
    return root


def _convert_args(models: Path, out: Path, *extra: str) -> list[str]:
    return ["convert", str(models / "in.wav"), "--base", str(models / "base.pth"), "--content-encoder",
            str(models / "hubert"), "--f0-method", "pm", "--index", str(models / "voice.index"), "-o", str(out),
            "--seed", "0", *extra]


@pytest.mark.slow  # a fresh process (faiss must be imported after the CLI set up logging): ~10-25 s on 2 cores
def test_convert_prints_no_third_party_noise(models, tmp_path):
    """faiss logs "Loading faiss with AVX512 support" / "Could not load library ..." at INFO when imported (the
    --index here imports it); with the root logger at INFO those lines used to show on every command."""
    done = _run(*_convert_args(models, tmp_path / "out", "--adapter", str(models / "voice")))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"converted 1 of 1 files -> {tmp_path / 'out' / 'in.wav'}"
    pieces = [piece.strip() for piece in re.split(r"[\r\n]", done.stderr) if piece.strip()]
    ours = [p for p in pieces if p.startswith("INFO loaded contentvec content encoder (256-d v1 features) from ")]
    bars = [p for p in pieces if p.startswith("converting:")]
    assert len(ours) == 1 and bars
    assert [p for p in pieces if p not in ours and p not in bars] == []  # nothing else: no faiss, no warnings
    assert "faiss" not in done.stderr.lower()


def test_quiet_after_the_subcommand_hides_info_lines(models, tmp_path, capfd):
    assert main(_convert_args(models, tmp_path / "quiet", "-q", "--no-progress")) == 0
    captured = capfd.readouterr()
    assert captured.err == ""
    assert captured.out.startswith("converted 1 of 1 files")
    assert main(_convert_args(models, tmp_path / "default", "--no-progress")) == 0
    captured = capfd.readouterr()
    assert captured.err.startswith("INFO loaded contentvec content encoder (256-d v1 features) from ")
    assert captured.err.count("\n") == 1


@pytest.mark.parametrize("argv", [
    ["-v", "convert", "a.wav", "--base", "b.pth"],
    ["convert", "a.wav", "--base", "b.pth", "-v"],
    ["convert", "-v", "a.wav", "--base", "b.pth"],
    ["index", "ds", "--out", "x.index", "--verbose"],
    ["train", "--pretrained_model_name_or_path", "f0G40k.pth", "--train_data_dir", "data", "-v"],
])
def test_verbose_anywhere_on_the_command_line(argv):
    args = build_parser().parse_args(argv)
    assert args.verbose is True and args.quiet is False


def test_quiet_before_and_verbose_default():
    args = build_parser().parse_args(["-q", "convert", "a.wav", "--base", "b.pth"])
    assert args.quiet is True and args.verbose is False
    args = build_parser().parse_args(["eval", "a.wav", "b.wav"])
    assert args.quiet is False and args.verbose is False


def test_verbose_and_quiet_together_are_refused(capsys):
    with pytest.raises(SystemExit) as info:
        main(["index", "ds", "--out", "x.index", "-v", "-q"])
    assert info.value.code == 2
    assert "-v/--verbose and -q/--quiet contradict each other" in capsys.readouterr().err


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"rvc-peft {__version__}\n"
    done = _run("--version")
    assert done.returncode == 0 and done.stdout == f"rvc-peft {__version__}\n"


def test_log_lines_do_not_glue_onto_progress_bars(capsys):
    from tqdm import tqdm

    root_handlers = list(logging.getLogger().handlers)
    configure_logging()
    assert logging.getLogger().handlers == root_handlers  # the root logger is left alone
    bar = tqdm(total=3, file=sys.stderr, desc="converting", ascii=True)
    bar.update(1)
    logging.getLogger("rvc_peft.inference").info("a line of its own")
    bar.update(2)
    bar.close()
    err = capsys.readouterr().err
    before = err.split("INFO a line of its own")[0]
    assert "converting" in before
    # whatever the bar printed on this line was erased (carriage return + blanks) before the log line
    assert before.rsplit("\n", 1)[-1].rsplit("\r", 1)[-1].strip() == ""
    assert "INFO a line of its own\n" in err


def test_configure_logging_levels_and_idempotence():
    logger = logging.getLogger("rvc_peft")
    configure_logging(verbose=True)
    configure_logging(quiet=True)
    ours = [h for h in logger.handlers if isinstance(h, TqdmLogHandler)]  # (pytest adds capture handlers)
    assert logger.level == logging.WARNING and len(ours) == 1 and not logger.propagate  # replaced, not stacked
    configure_logging(verbose=True)
    assert logger.level == logging.DEBUG


def test_help_and_import_stay_light():
    """`rvc-peft --help` and `import rvc_peft` import no torch / transformers / PEFT (benchmarks/bench_startup.py
    times them)."""
    code = ("import sys, rvc_peft, rvc_peft.cli as cli; cli.build_parser(); "
            "print(sorted(m for m in ('torch', 'transformers', 'peft', 'numpy', 'huggingface_hub') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=str(ROOT)),
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_a_typod_adapter_folder_is_reported_as_such(models, tmp_path, monkeypatch, capsys):
    """`--adapter my_voice_lroa` (a mistyped local folder) used to go to the Hub: ~29 s of retries, then an error
    that never said the folder does not exist."""
    import time

    monkeypatch.chdir(tmp_path)
    (tmp_path / "my_voice_lora").mkdir()
    start = time.perf_counter()
    code = main(_convert_args(models, tmp_path / "out", "--adapter", "my_voice_lroa", "--no-progress"))
    assert code == 1 and time.perf_counter() - start < 10  # guards against retries; the base and encoder load too
    assert capsys.readouterr().err.endswith(
        "rvc-peft convert: error: no such file or folder: my_voice_lroa (did you mean 'my_voice_lora'?)\n")


@pytest.mark.parametrize("argv, missing", [
    (["export", "--base", "BASE", "--adapter", "my_voice_lroa", "--out", "x.pth"], "my_voice_lroa"),
    (["convert", "song.wav", "--base", "BASE", "--adapter", "./voices/alice"], "voices/alice"),
    (["convert", "sogn.wav", "--base", "BASE"], "sogn.wav"),
    (["train", "--pretrained_model_name_or_path", "BASE", "--train_data_dir", "data/my_vocie"], "data/my_vocie"),
    (["index", "my_datset", "--out", "x.index"], "my_datset"),
])
def test_a_mistyped_path_fails_before_anything_heavy_loads(tmp_path, argv, missing):
    """Issue 10: a typo'd local path fails at once naming it (here: without importing torch), never a Hub lookup."""
    (tmp_path / "BASE").write_bytes(b"not read")
    (tmp_path / "song.wav").write_bytes(b"not read")
    (tmp_path / "my_voice_lora").mkdir()
    code = ("import sys; from rvc_peft.cli import main; status = main(sys.argv[1:]); "
            "print('torch' in sys.modules, status)")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", code, *argv], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.stdout.split() == ["False", "1"], done.stderr
    assert done.stderr.startswith(f"rvc-peft {argv[0]}: error: no such file or folder: ")
    assert missing in done.stderr and "Traceback" not in done.stderr
    if argv[0] == "export":
        assert done.stderr.rstrip().endswith("(did you mean 'my_voice_lora'?)")
