"""examples/demo.py --out: an earlier demo's output is cleared, and a folder with anything else is never touched."""

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo():
    sys.path.insert(0, str(REPO / "examples"))
    try:
        import demo
    finally:
        sys.path.remove(str(REPO / "examples"))
    return demo


def _earlier_demo(out: Path) -> None:
    (out / "dataset").mkdir(parents=True)
    (out / "dataset" / "rvc_dataset.json").write_text("{}")
    (out / "my_voice.pth").write_bytes(b"x")
    (out / "demo.json").write_text(json.dumps({"status": "finished", "seconds": 1.0}))


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_new_and_empty_folders_are_used(demo, tmp_path):
    for out in (tmp_path / "new" / "deeper", tmp_path / "empty"):
        if out.name == "empty":
            out.mkdir()
        assert demo.prepare_out(out) is None
        assert json.loads((out / "demo.json").read_text()) == {"status": "running"}


def test_an_earlier_demo_is_cleared(demo, tmp_path):
    out = tmp_path / "out"
    _earlier_demo(out)
    assert demo.prepare_out(out) is None
    assert sorted(p.name for p in out.iterdir()) == ["demo.json"]
    assert json.loads((out / "demo.json").read_text()) == {"status": "running"}


@pytest.mark.parametrize("case", ["user files", "user files next to a demo", "foreign demo.json",
                                  "demo.json not ours"])
def test_a_folder_with_other_files_is_refused_untouched(demo, tmp_path, case):
    out = tmp_path / "mine"
    out.mkdir()
    if case == "user files next to a demo":
        _earlier_demo(out)
    if case in ("user files", "user files next to a demo"):
        (out / "thesis.txt").write_text("irreplaceable")
        (out / "photos").mkdir()
        (out / "photos" / "a.jpg").write_bytes(b"\xff\xd8")
    elif case == "foreign demo.json":  # another program's marker-named file, with our entry names beside it
        (out / "demo.json").write_text("[1, 2]")
        (out / "dataset").mkdir()
    else:
        (out / "demo.json").write_text("not json")
    before = _tree(out)
    reason = demo.prepare_out(out)
    assert reason is not None and reason.startswith(f"{out} holds files that are not an earlier demo's")
    assert "nothing was deleted" in reason
    if case.startswith("user files"):
        assert "photos, thesis.txt" in reason  # names what is in the way
    assert _tree(out) == before
    assert (out / "dataset").exists() == (case != "user files" and case != "demo.json not ours")


def test_a_file_as_out_is_refused(demo, tmp_path):
    path = tmp_path / "file.txt"
    path.write_text("keep")
    assert "is a file, not a folder" in demo.prepare_out(path)
    assert path.read_text() == "keep"
