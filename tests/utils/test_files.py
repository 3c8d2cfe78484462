"""`rvc_peft.utils.files`: file modes, disk-full errors, names claimed without replacing, at every writer that uses it."""

from __future__ import annotations

import errno
import os
import shutil
import stat
import subprocess
import threading
from collections import namedtuple
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from rvc_peft.utils import files
from rvc_peft.utils.files import DiskFullError, atomic_write, disk_full_kind, write_folder_atomically

Usage = namedtuple("Usage", "total used free")


@contextmanager
def umask(mask: int):
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def only_files(folder: Path) -> list[str]:
    """Everything in `folder`, hidden entries included (a leftover temporary file would show here)."""
    return sorted(p.name for p in folder.iterdir())


def full_disk_message(path: Path) -> str:
    return f"no space left on device while writing {path}"


# --- modes ------------------------------------------------------------------------------------------------------------

def test_new_files_get_the_umask_mode_whatever_the_writer_does(tmp_path) -> None:
    from safetensors.torch import save_file

    def private(tmp: Path) -> None:  # what tempfile.mkstemp and safetensors leave behind
        tmp.write_text("x")
        os.chmod(tmp, 0o600)

    for mask in (0o022, 0o077, 0o002, 0o027):
        with umask(mask):
            atomic_write(tmp_path / f"p_{mask:o}.txt", private)
            atomic_write(tmp_path / f"w_{mask:o}.safetensors",
                         lambda tmp: save_file({"w": torch.zeros(3)}, str(tmp)))
        for name in (f"p_{mask:o}.txt", f"w_{mask:o}.safetensors"):
            assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o666 & ~mask, name
    # a claimed (not replaced) name gets the same mode
    with umask(0o022):
        claimed = atomic_write(tmp_path / "p_22.txt", private, overwrite=False)
    assert claimed.name == "p_22 (1).txt" and stat.S_IMODE(os.stat(claimed).st_mode) == 0o644
    # replacing keeps the replaced file's mode
    shared = tmp_path / "shared.safetensors"
    shared.write_bytes(b"old")
    os.chmod(shared, 0o640)
    with umask(0o077):
        atomic_write(shared, lambda tmp: save_file({"w": torch.zeros(3)}, str(tmp)))
    assert stat.S_IMODE(os.stat(shared).st_mode) == 0o640
    assert not [n for n in only_files(tmp_path) if n.startswith(".")]


def test_saved_adapter_files_follow_the_umask(tmp_path) -> None:
    """The end-of-training save goes through `write_folder_atomically`: adapter_model.safetensors is not 0o600."""
    from rvc_peft.testing import random_synthesizer, small_config
    from rvc_peft.tuners import RVCLoraConfig, get_rvc_peft_model

    model = get_rvc_peft_model(random_synthesizer(small_config("v1", True, 40000)),
                               RVCLoraConfig(target_modules="generator", r=2, lora_alpha=4))
    with umask(0o022):
        moved = write_folder_atomically(tmp_path / "voice", lambda d: model.save_pretrained(str(d)))
    names = sorted(p.name for p in moved)
    assert "adapter_model.safetensors" in names and "adapter_config.json" in names
    for path in moved:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o644, path
    assert only_files(tmp_path / "voice") == names  # no staging folder left


# --- disk full, simulated -----------------------------------------------------------------------------------------------

def test_enospc_from_the_writer_names_the_final_path_and_keeps_the_old_file(tmp_path) -> None:
    path = tmp_path / "voice.pth"
    path.write_bytes(b"previous voice")

    def fails(tmp: Path) -> None:
        tmp.write_bytes(b"half a fi")
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp))

    with pytest.raises(DiskFullError) as caught:
        atomic_write(path, fails)
    assert str(caught.value) == full_disk_message(path)
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(path)
    assert isinstance(caught.value, OSError)
    assert path.read_bytes() == b"previous voice" and only_files(tmp_path) == ["voice.pth"]

    def quota(tmp: Path) -> None:
        raise OSError(errno.EDQUOT, "Disk quota exceeded")

    with pytest.raises(DiskFullError, match=r"^no space left on device while writing .*voice.pth \(disk quota exceeded\)$"):
        atomic_write(path, quota)
    assert path.read_bytes() == b"previous voice" and only_files(tmp_path) == ["voice.pth"]


@pytest.mark.parametrize("error", [
    # what safetensors (Rust), faiss and a wrapped OSError say on a full disk (messages copied from real failures)
    Exception("Error while serializing: I/O error: No space left on device (os error 28)"),
    RuntimeError("Error: 'ret == (size * 4)' failed: write error in /x/e.index: 131027 != 1024000 "
                 "(No space left on device)"),
    ValueError("could not save"),  # its cause says it: see __cause__ below
])
def test_library_errors_that_mean_a_full_disk(tmp_path, error) -> None:
    if isinstance(error, ValueError):
        error.__cause__ = OSError(errno.ENOSPC, "No space left on device")
    path = tmp_path / "out.bin"

    def fails(tmp: Path) -> None:
        tmp.write_bytes(b"partial")
        raise error

    with pytest.raises(DiskFullError, match=f"^{full_disk_message(path)}$") as caught:
        atomic_write(path, fails)
    assert caught.value.__cause__ is error
    assert only_files(tmp_path) == []


def test_errors_without_errno_count_as_disk_full_only_when_the_disk_is_full(tmp_path, monkeypatch) -> None:
    """soundfile says "System error." and torch "file write failed" on a full disk: the free space decides."""
    path = tmp_path / "a.wav"
    path.write_bytes(b"old")

    def fails(tmp: Path) -> None:
        tmp.write_bytes(b"partial")
        raise RuntimeError("Error opening 'x.wav': System error.")

    with pytest.raises(RuntimeError, match="System error") as caught:  # plenty of space: not a full disk
        atomic_write(path, fails)
    assert not isinstance(caught.value, DiskFullError)
    measured = []

    def no_space(folder):
        measured.append(only_files(Path(folder)))
        return Usage(1 << 30, 1 << 30, 4096)

    monkeypatch.setattr(files.shutil, "disk_usage", no_space)
    with pytest.raises(DiskFullError, match=f"^{full_disk_message(path)}$"):
        atomic_write(path, fails)
    assert len(measured[0]) == 2  # measured while the partial file still held its blocks
    assert path.read_bytes() == b"old" and only_files(tmp_path) == ["a.wav"]
    # a programming error is never dressed up as a full disk
    with pytest.raises(TypeError):
        atomic_write(path, lambda tmp: (_ for _ in ()).throw(TypeError("bug")))
    assert disk_full_kind(KeyError("x"), tmp_path) is None


def test_full_disk_while_creating_the_temporary_file(tmp_path, monkeypatch) -> None:
    real_open = os.open

    def no_inodes(name, flags, mode=0o777, *args, **kwargs):
        if flags & os.O_CREAT:
            raise OSError(errno.ENOSPC, "No space left on device", name)
        return real_open(name, flags, mode, *args, **kwargs)

    monkeypatch.setattr(files.os, "open", no_inodes)
    with pytest.raises(DiskFullError, match=f"^{full_disk_message(tmp_path / 'x.txt')}$"):
        atomic_write(tmp_path / "x.txt", lambda tmp: tmp.write_text("x"))


@pytest.fixture()
def tiny_filesystem(tmp_path):
    """A real 128 KiB tmpfs (needs root, as in the project's containers; skipped elsewhere)."""
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=128k", "tmpfs", str(mount)],
                          check=False, capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_a_really_full_file_system(tiny_filesystem) -> None:
    """Every kind of writer on a real 128 KiB file system: the kernel's ENOSPC as each library reports it."""
    from safetensors.torch import save_file

    folder = tiny_filesystem
    writers = {
        "a.wav": lambda tmp: sf.write(str(tmp), np.zeros(100_000, np.float32), 16000, format="WAV", subtype="FLOAT"),
        "b.pth": lambda tmp: torch.save({"w": torch.zeros(100_000)}, tmp),
        "c.safetensors": lambda tmp: save_file({"w": torch.zeros(100_000)}, str(tmp)),
        "d.json": lambda tmp: tmp.write_text("x" * 500_000),
    }
    for name, write in writers.items():
        target = folder / name
        target.write_bytes(b"previous")
        with pytest.raises(DiskFullError, match=f"^{full_disk_message(target)}$"):
            atomic_write(target, write)
        assert target.read_bytes() == b"previous"
        assert only_files(folder) == [name]
        target.unlink()


# --- claiming names ---------------------------------------------------------------------------------------------------

def test_without_overwrite_nothing_is_replaced_and_the_real_name_is_returned(tmp_path) -> None:
    path = tmp_path / "song.wav"
    assert atomic_write(path, lambda tmp: tmp.write_text("first"), overwrite=False) == path
    assert atomic_write(path, lambda tmp: tmp.write_text("second"), overwrite=False) == tmp_path / "song (1).wav"
    # names the caller keeps for other files (its inputs, other planned outputs) are skipped
    third = atomic_write(path, lambda tmp: tmp.write_text("third"), overwrite=False,
                         avoid=[tmp_path / "song (2).wav"])
    assert third == tmp_path / "song (3).wav"
    assert [(tmp_path / n).read_text() for n in ("song.wav", "song (1).wav", "song (3).wav")] == [
        "first", "second", "third"]
    # a numbered name that is taken continues the count rather than nesting: "song (3).wav" -> "song (4).wav"
    assert atomic_write(third, lambda tmp: tmp.write_text("4th"), overwrite=False) == tmp_path / "song (4).wav"

    def intruder(tmp: Path) -> None:  # another process takes the name while this file is being written
        tmp.write_text("mine")
        (tmp_path / "late.wav").write_text("theirs")

    got = atomic_write(tmp_path / "late.wav", intruder, overwrite=False)
    assert got == tmp_path / "late (1).wav" and got.read_text() == "mine"
    assert (tmp_path / "late.wav").read_text() == "theirs"
    assert not [n for n in only_files(tmp_path) if n.startswith(".")]


def test_claiming_without_hard_links(tmp_path, monkeypatch) -> None:
    """On a file system without hard links (FAT, some shares) names are claimed with an exclusive create."""
    def no_links(src, dst, *args, **kwargs):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(files.os, "link", no_links)
    (tmp_path / "a.wav").write_text("old")
    got = atomic_write(tmp_path / "a.wav", lambda tmp: tmp.write_text("new"), overwrite=False)
    assert got == tmp_path / "a (1).wav" and got.read_text() == "new"
    assert (tmp_path / "a.wav").read_text() == "old" and only_files(tmp_path) == ["a (1).wav", "a.wav"]


def test_concurrent_writers_of_one_name_all_keep_their_results(tmp_path) -> None:
    start = threading.Barrier(8)
    results: dict[int, Path] = {}

    def writer(k: int) -> None:
        def write(tmp: Path) -> None:
            tmp.write_text(f"writer {k}")
            start.wait()  # all finish writing before any claims the name: the worst case

        results[k] = atomic_write(tmp_path / "out.wav", write, overwrite=False)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(results.values())) == 8
    assert {p.name for p in results.values()} == {"out.wav"} | {f"out ({n}).wav" for n in range(1, 8)}
    for k, path in results.items():
        assert path.read_text() == f"writer {k}"
    assert len(only_files(tmp_path)) == 8


# --- unusable destinations ----------------------------------------------------------------------------------------------

def test_a_folder_at_the_output_path(tmp_path) -> None:
    (tmp_path / "out.wav").mkdir()
    with pytest.raises(IsADirectoryError, match=r"out\.wav is a folder; cannot write a file there"):
        atomic_write(tmp_path / "out.wav", lambda tmp: tmp.write_text("x"))
    got = atomic_write(tmp_path / "out.wav", lambda tmp: tmp.write_text("x"), overwrite=False)
    assert got == tmp_path / "out (1).wav" and (tmp_path / "out.wav").is_dir()
    # a file where a folder is needed
    (tmp_path / "notes").write_text("a file")
    with pytest.raises(NotADirectoryError, match=r"cannot write .*notes/a\.wav: .*notes is a file, not a folder"):
        atomic_write(tmp_path / "notes" / "a.wav", lambda tmp: tmp.write_text("x"))


def test_a_read_only_folder_is_named(tmp_path, monkeypatch) -> None:
    folder = tmp_path / "locked"
    folder.mkdir()
    if os.geteuid() == 0:  # root writes anywhere: simulate the kernel's refusal
        real_open = os.open

        def refuse(name, flags, mode=0o777, *args, **kwargs):
            if flags & os.O_CREAT and Path(name).parent == folder:
                raise PermissionError(errno.EACCES, "Permission denied", name)
            return real_open(name, flags, mode, *args, **kwargs)

        monkeypatch.setattr(files.os, "open", refuse)
    else:
        folder.chmod(0o555)
    try:
        with pytest.raises(PermissionError) as caught:
            atomic_write(folder / "a.wav", lambda tmp: tmp.write_text("x"))
    finally:
        folder.chmod(0o755)
    assert str(caught.value) == f"cannot write {folder / 'a.wav'}: the folder {folder} is not writable (permission denied)"
    assert only_files(folder) == []


# --- write_folder_atomically --------------------------------------------------------------------------------------------

def test_folder_write_failing_on_a_full_disk_leaves_the_folder_as_it_was(tmp_path) -> None:
    folder = tmp_path / "voice"
    folder.mkdir()
    (folder / "adapter_config.json").write_text("old config")
    (folder / "README.md").write_text("# my notes")
    seen_card = []

    def save(staging: Path) -> None:
        seen_card.append((staging / "README.md").read_text())  # carried in, so a card is updated, not recreated
        (staging / "adapter_config.json").write_text("new con")
        raise OSError(errno.ENOSPC, "No space left on device", str(staging / "adapter_config.json"))

    with pytest.raises(DiskFullError, match=f"^{full_disk_message(folder / 'adapter_config.json')}$"):
        write_folder_atomically(folder, save, carry=("README.md",))
    assert seen_card == ["# my notes"]
    assert (folder / "adapter_config.json").read_text() == "old config"
    assert only_files(folder) == ["README.md", "adapter_config.json"]
    moved = write_folder_atomically(folder, lambda d: (d / "adapter_config.json").write_text("new config"))
    assert moved == [folder / "adapter_config.json"] and moved[0].read_text() == "new config"


# --- each writer that goes through it -----------------------------------------------------------------------------------

def enospc_after(partial: bytes = b"partial"):
    """A stand-in for a library's save(obj, filename): writes a little, then the disk is full."""
    def save(obj, filename, *args, **kwargs):
        Path(filename).write_bytes(partial)
        raise OSError(errno.ENOSPC, "No space left on device", str(filename))
    return save


@pytest.mark.filterwarnings("ignore:adapter 'default' was made for base")  # fp16 export: other weights, same shapes
def test_rvc_peft_export_on_a_full_disk(tmp_path, monkeypatch, capsys) -> None:
    from rvc_peft.checkpoints import export_rvc
    from rvc_peft.cli import main
    from rvc_peft.testing import random_synthesizer, small_config
    from rvc_peft.tuners import RVCLoraConfig, get_rvc_peft_model

    base = export_rvc(random_synthesizer(small_config("v1", True, 40000)), tmp_path / "base.pth")
    adapter = get_rvc_peft_model(random_synthesizer(small_config("v1", True, 40000)),
                                 RVCLoraConfig(target_modules="generator", r=2, lora_alpha=4))
    adapter.save_pretrained(str(tmp_path / "voice"))
    out = tmp_path / "out" / "voice.pth"
    out.parent.mkdir()
    out.write_bytes(b"previous export")
    monkeypatch.setattr(torch, "save", enospc_after())
    code = main(["export", "--base", str(base), "--adapter", str(tmp_path / "voice"), "--out", str(out)])
    assert code == 1
    assert capsys.readouterr().err.strip() == f"rvc-peft export: error: {full_disk_message(out)}"
    assert out.read_bytes() == b"previous export" and only_files(out.parent) == ["voice.pth"]


def test_rvc_peft_index_on_a_full_disk(tmp_path, monkeypatch) -> None:
    faiss = pytest.importorskip("faiss")
    from rvc_peft.data.index import save_index

    index = faiss.IndexFlatL2(8)
    index.add(np.random.default_rng(0).standard_normal((50, 8)).astype(np.float32))
    path = tmp_path / "added_IVF1_Flat_nprobe_1_voice_v2.index"
    save_index(index, path)
    before = path.read_bytes()

    def faiss_full(idx, filename):  # faiss's own wording (copied from a real failure on a full tmpfs)
        Path(filename).write_bytes(b"partial")
        raise RuntimeError(f"Error in void faiss::write_index(const Index*, IOWriter*, int): Error: 'ret == (size * 4)'"
                           f" failed: write error in {filename}: 131027 != 1024000 (No space left on device)")

    monkeypatch.setattr(faiss, "write_index", faiss_full)
    with pytest.raises(DiskFullError, match=f"^{full_disk_message(path)}$"):
        save_index(index, path)
    assert path.read_bytes() == before and only_files(tmp_path) == [path.name]


def test_converted_audio_on_a_full_disk(tmp_path, monkeypatch) -> None:
    """soundfile reports a full disk as "System error." (no errno): the free space tells."""
    from rvc_peft.inference.audio_io import write_audio

    path = tmp_path / "song.wav"
    write_audio(path, np.zeros(1600, np.float32), 16000)
    before = path.read_bytes()

    def sf_full(file, *args, **kwargs):
        Path(file).write_bytes(b"RIFF")
        raise sf.LibsndfileError(2, "Error writing: ")  # SF_ERR_SYSTEM: "System error."

    monkeypatch.setattr(sf, "write", sf_full)
    monkeypatch.setattr(files.shutil, "disk_usage", lambda folder: Usage(1 << 30, 1 << 30, 0))
    for overwrite in (True, False):
        with pytest.raises(DiskFullError, match=f"^{full_disk_message(path)}$"):
            write_audio(path, np.ones(1600, np.float32) * 0.1, 16000, overwrite=overwrite)
        assert path.read_bytes() == before and only_files(tmp_path) == ["song.wav"]


def test_final_adapter_save_on_a_full_disk(tmp_path, monkeypatch) -> None:
    """The end-of-training save (`finalize._save_adapter`): the previous adapter stays whole."""
    from types import SimpleNamespace

    import peft.peft_model

    from rvc_peft.testing import random_synthesizer, small_config
    from rvc_peft.training import finalize
    from rvc_peft.tuners import RVCLoraConfig, get_rvc_peft_model

    model = get_rvc_peft_model(random_synthesizer(small_config("v1", True, 40000)),
                               RVCLoraConfig(target_modules="generator", r=2, lora_alpha=4))
    out = tmp_path / "my_voice"
    trainer = SimpleNamespace(generator=model, output_dir=out)
    monkeypatch.setattr(finalize, "training_summary", lambda trainer, elapsed: {"steps": 10})
    with umask(0o022):
        assert finalize._save_adapter(trainer, 1.0) == out
    saved = {name: (out / name).read_bytes() for name in only_files(out)}
    assert {"adapter_model.safetensors", "adapter_config.json", "rvc_adapter.json", "README.md"} <= set(saved)
    assert stat.S_IMODE(os.stat(out / "adapter_model.safetensors").st_mode) == 0o644  # not safetensors' 0o600
    (out / "README.md").write_text((out / "README.md").read_text() + "\nMy own notes.\n")
    saved["README.md"] = (out / "README.md").read_bytes()

    monkeypatch.setattr(peft.peft_model, "safe_save_file", enospc_after())
    with pytest.raises(DiskFullError, match=f"^{full_disk_message(out / 'adapter_model.safetensors')}$"):
        finalize._save_adapter(trainer, 2.0)
    assert {name: (out / name).read_bytes() for name in only_files(out)} == saved  # nothing changed, nothing left
    monkeypatch.undo()
    monkeypatch.setattr(finalize, "training_summary", lambda trainer, elapsed: {"steps": 20})
    finalize._save_adapter(trainer, 3.0)
    assert "My own notes." in (out / "README.md").read_text()  # the card is updated, not recreated
    assert '"steps": 20' in (out / "rvc_adapter.json").read_text()


def test_follow_umask_gives_checkpoint_files_the_umask_mode(tmp_path):
    from safetensors.torch import save_file

    from rvc_peft.utils.files import follow_umask

    save_file({"w": torch.zeros(2)}, str(tmp_path / "a.safetensors"))  # safetensors creates it 0o600
    (tmp_path / "b.json").write_text("{}")
    old = os.umask(0o022)
    try:
        follow_umask(tmp_path)
    finally:
        os.umask(old)
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()} == {"a.safetensors": 0o644,
                                                                                   "b.json": 0o644}
