"""`rvc_peft.utils.hub`: one "local path or Hub reference" rule for every loader, fast clear errors either way.

The Hub is never contacted: offline mode (tests/conftest.py), an endpoint that refuses connections, monkeypatched
`huggingface_hub` download functions, or the local fake Hub (tests/fakehub.py) in a subprocess.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from rvc_peft.utils import hub
from rvc_peft.utils.hub import (
    HubReference,
    HubUnavailableError,
    LocalPathNotFoundError,
    classify,
    parse_hub_reference,
    resolve,
)
from tests.fakehub import hub_env, serve_fake_hub

ROOT = Path(__file__).resolve().parents[2]
# Far below huggingface_hub's retry storm (five retries with 1+2+4+8+8 s of back-off) yet generous for a loaded CI
# machine: these guard against retries, they are not benchmarks.
FAST_S = 5.0
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def no_hub(monkeypatch):
    """Any Hub download is a test failure."""
    import huggingface_hub

    def refuse(*args, **kwargs):
        raise AssertionError(f"asked the Hub for {args} {kwargs}")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", refuse)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", refuse)


@pytest.fixture
def online_without_network(monkeypatch, tmp_path):
    """Not in offline mode, but the endpoint refuses connections (port 9 on localhost: nothing listens there)."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(hub, "_probe_cache", {})
    return tmp_path / "hub-cache"


def _cache_file(cache: Path, repo_id: str, filename: str, content: bytes) -> Path:
    """Lay a file out the way huggingface_hub stores a downloaded one."""
    root = cache / f"models--{repo_id.replace('/', '--')}"
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(COMMIT)
    path = root / "snapshots" / COMMIT / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


# --- the rule ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    "my_voice_lroa",            # a bare name: our Hub references are always org/repo[/file]
    "voice.pth",
    "./voices/alice",
    "../voices/alice",
    "~/no-such-folder-here/voice.pth",
    "/no/such/folder/voice.pth",
    "C:\\voices\\model.pth",
    "weights/voice.pth",        # a file name where the repo name would be
    "out/added_IVF1_Flat.index",
    "logs/info.json",
    "my voice/model.pth",       # not a valid repo id
    "a--b/model",
])
def test_local_looking_paths_fail_at_once_naming_the_path(text, no_hub, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    start = time.perf_counter()
    with pytest.raises(LocalPathNotFoundError) as info:
        resolve(text)
    assert time.perf_counter() - start < FAST_S
    assert str(info.value).startswith(f"no such file or folder: {text}")
    assert info.value.path == text and isinstance(info.value, FileNotFoundError)


def test_a_typo_gets_a_did_you_mean_hint(no_hub, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my_voice_lora").mkdir()
    (tmp_path / "voices" / "alice").mkdir(parents=True)
    (tmp_path / "voices" / "alice.pth").write_bytes(b"")
    with pytest.raises(LocalPathNotFoundError, match=r"^no such file or folder: my_voice_lroa \(did you mean "
                                                     r"'my_voice_lora'\?\)$"):
        resolve("my_voice_lroa")
    # deeper: the nearest existing folder is searched
    with pytest.raises(LocalPathNotFoundError, match=r"^no such file or folder: voices/alcie\.pth \(did you mean "
                                                     r"'voices/alice\.pth'\?\)$"):
        resolve("voices/alcie.pth")
    # a valid repo id whose first folder exists here: local, with the hf:// way out
    with pytest.raises(LocalPathNotFoundError) as info:
        resolve("voices/alcie")
    assert str(info.value) == ("no such file or folder: voices/alcie (the folder voices exists but holds no "
                               "'alcie'; for a Hub repo write hf://voices/alcie; did you mean 'voices/alice'?)")
    assert info.value.suggestions == ("voices/alice",)
    absolute = tmp_path / "my_voice_lroa"
    with pytest.raises(LocalPathNotFoundError, match=f"did you mean '{tmp_path / 'my_voice_lora'}'"):
        resolve(absolute)


def test_existing_paths_are_local_even_when_they_look_like_hub_ids(no_hub, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "org" / "repo").mkdir(parents=True)
    (tmp_path / "org" / "repo" / "rmvpe.pt").write_bytes(b"x")
    assert resolve("org/repo") == Path("org/repo")
    assert resolve("org/repo", filename="rmvpe.pt") == Path("org/repo/rmvpe.pt")
    assert resolve("org/repo/rmvpe.pt") == Path("org/repo/rmvpe.pt")
    with pytest.raises(LocalPathNotFoundError, match=r"org/repo/other\.pt \(the folder org/repo holds no 'other\.pt'"):
        resolve("org/repo", filename="other.pt")


@pytest.mark.parametrize(("text", "filename", "expected"), [
    ("org/repo", None, HubReference("org/repo")),
    ("org/repo/sub/f0G40k.pth", None, HubReference("org/repo", "sub/f0G40k.pth")),
    ("org/repo", "sub/f0G40k.pth", HubReference("org/repo", "sub/f0G40k.pth")),
    ("org/repo/sub", "rmvpe.pt", HubReference("org/repo", "sub/rmvpe.pt")),
    ("hf://org/repo", None, HubReference("org/repo")),
    ("hf://org/repo/sub/f0G40k.pth", None, HubReference("org/repo", "sub/f0G40k.pth")),
    ("hf://org/repo@v1.0/rmvpe.pt", None, HubReference("org/repo", "rmvpe.pt", "v1.0")),
    ("hf://lj1995/VoiceConversionWebUI/hubert_base.pt", None,
     HubReference("lj1995/VoiceConversionWebUI", "hubert_base.pt")),
])
def test_hub_references_parse(text, filename, expected, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert classify(text, filename) == expected
    assert parse_hub_reference(text, filename) == expected


def test_hf_prefix_wins_over_a_local_folder(no_hub, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "org" / "repo").mkdir(parents=True)
    assert classify("hf://org/repo") == HubReference("org/repo")


@pytest.mark.parametrize(("text", "message"), [
    ("hf://gpt2", "not a Hugging Face Hub reference"),
    ("hf://datasets/org/data", "only model repos"),
    ("hf://org/re--po/x.pth", "not a valid Hugging Face Hub repo id"),
    ("hf://org/repo@/x.pth", "empty revision"),
])
def test_bad_hf_references(text, message, no_hub):
    with pytest.raises(ValueError, match=message):
        parse_hub_reference(text)
    with pytest.raises(ValueError, match=f"^{text}: .*{message}"):
        resolve(text)


# --- offline and no network ----------------------------------------------------------------------------------------

def test_offline_mode_fails_at_once_with_what_to_pass(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    start = time.perf_counter()
    with pytest.raises(HubUnavailableError) as info:
        resolve("nobody/voice/f0G40k.pth", offline_note="; pass a local .pth file")
    assert time.perf_counter() - start < FAST_S
    assert str(info.value) == ("nobody/voice/f0G40k.pth: not a local file or folder, and cannot get it from the "
                               "Hugging Face Hub (HF_HUB_OFFLINE is set, and it is not in the local cache); pass a "
                               "local .pth file")
    assert isinstance(info.value, ConnectionError)


def test_no_network_fails_at_once_without_retries(online_without_network, caplog):
    start = time.perf_counter()
    with pytest.raises(HubUnavailableError) as info:
        resolve("hf://nobody/voice/rmvpe.pt")
    assert time.perf_counter() - start < FAST_S
    assert "the Hub is unreachable: cannot connect to 127.0.0.1:9" in str(info.value)
    assert "not in the local cache" in str(info.value)
    assert "Retrying" not in caplog.text  # huggingface_hub's back-off never started


def test_no_network_still_uses_the_local_cache(online_without_network):
    cached = _cache_file(online_without_network, "someone/rmvpe", "rmvpe.pt", b"weights")
    start = time.perf_counter()
    assert resolve("someone/rmvpe/rmvpe.pt").read_bytes() == b"weights"
    assert resolve("someone/rmvpe", default_filename="rmvpe.pt").resolve() == cached.resolve()
    assert time.perf_counter() - start < FAST_S


def test_the_probe_is_remembered(online_without_network, monkeypatch):
    import socket

    calls = []
    real = socket.create_connection

    def counting(*args, **kwargs):
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", counting)
    for _ in range(3):
        with pytest.raises(HubUnavailableError):
            resolve("nobody/voice/a.pth")
    assert calls == [("127.0.0.1", 9)]


# --- the fake Hub: a reachable endpoint --------------------------------------------------------------------------

SCRIPT = textwrap.dedent("""
    import json, sys, time
    from rvc_peft.utils.hub import HubEntryNotFoundError, resolve

    results = {"facts": json.loads(resolve("org/voice", filename="rvc_adapter.json").read_text())}
    results["snapshot"] = sorted(p.name for p in resolve("org/voice", allow_patterns=["*.json"]).iterdir())
    results["file"] = resolve("hf://org/voice/sub/rmvpe.pt").read_text()
    start = time.perf_counter()
    try:
        resolve("org/voice/missing.pth")
    except HubEntryNotFoundError as error:
        results["missing"] = str(error)
    results["missing_s"] = time.perf_counter() - start
    json.dump(results, sys.stdout)
""")


def test_fake_hub_downloads_and_missing_files(tmp_path):
    with serve_fake_hub() as fake:
        fake.commit("org/voice", {"rvc_adapter.json": json.dumps({"version": "v2"}).encode(),
                                  "sub/rmvpe.pt": b"rmvpe weights"})
        env = hub_env(fake.endpoint, tmp_path / "cache", PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
        done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=120,
                              check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout)
    assert results["facts"] == {"version": "v2"}
    assert results["file"] == "rmvpe weights"
    assert results["snapshot"] == ["rvc_adapter.json"]
    assert results["missing"].startswith("org/voice/missing.pth: not a local file or folder, and not on the Hugging "
                                         "Face Hub (not found there:")
    assert results["missing_s"] < FAST_S


# --- every loader goes through the resolver ----------------------------------------------------------------------

@pytest.fixture
def spy(monkeypatch):
    """Records each call of `rvc_peft.utils.hub.resolve` (the call sites import it when called)."""
    calls = []
    real = hub.resolve

    def recording(path_or_ref, **kwargs):
        calls.append(str(path_or_ref))
        return real(path_or_ref, **kwargs)

    monkeypatch.setattr(hub, "resolve", recording)
    return calls


def test_every_loader_uses_the_resolver(spy, no_hub, tmp_path, monkeypatch):
    import rvc_peft
    from rvc_peft.checkpoints import CheckpointError
    from rvc_peft.features.content_encoder import ContentEncoderError, load_content_encoder
    from rvc_peft.features.rmvpe import RMVPELoadError, load_rmvpe

    monkeypatch.chdir(tmp_path)
    for name in ("my_voice_lora", "hubert"):
        (tmp_path / name).mkdir()
    (tmp_path / "rmvpe.pt").write_bytes(b"")
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match=r"^my_voice_lroa: file not found \(did you mean 'my_voice_lora'\?\)$"):
        rvc_peft.load_synthesizer("my_voice_lroa")
    with pytest.raises(ContentEncoderError, match=r"^hubret: no such file or folder \(did you mean 'hubert'\?\)$"):
        load_content_encoder("hubret")
    with pytest.raises(RMVPELoadError, match=r"^rmvep\.pt: no such RMVPE weights file \(did you mean 'rmvpe\.pt'\?\)$"):
        load_rmvpe("rmvep.pt")
    with pytest.raises(LocalPathNotFoundError, match=r"^no such file or folder: my_voice_lroa \(did you mean "):
        rvc_peft.read_adapter_info("my_voice_lroa")
    assert time.perf_counter() - start < FAST_S
    assert spy == ["my_voice_lroa", "hubret", "rmvep.pt"]  # read_adapter_info classifies before any download


def test_hf_prefix_in_every_loader(spy, tmp_path, monkeypatch):
    """`hf://` works for the content encoder, RMVPE and adapter info too (load_synthesizer: tests/checkpoints)."""
    import huggingface_hub

    import rvc_peft
    from rvc_peft.features.content_encoder import ContentEncoderError, load_content_encoder
    from rvc_peft.features.rmvpe import RMVPELoadError, load_rmvpe

    calls = []
    (tmp_path / "rvc_adapter.json").write_text(json.dumps({"version": "v1"}))
    (tmp_path / "empty.pt").write_bytes(b"")

    def fake_file(repo_id, filename, revision=None):
        calls.append((repo_id, filename, revision))
        return str(tmp_path / ("rvc_adapter.json" if filename.endswith(".json") else "empty.pt"))

    def fake_snapshot(repo_id, revision=None, allow_patterns=None):
        calls.append((repo_id, None, revision))
        return str(tmp_path)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_file)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot)
    assert rvc_peft.read_adapter_info("hf://me/voice@v2") == {"version": "v1"}
    with pytest.raises(RMVPELoadError, match="empty.pt"):  # downloaded, then refused as weights
        load_rmvpe("hf://me/rmvpe-repo/sub/rmvpe.pt")
    with pytest.raises(ContentEncoderError, match="no config.json"):  # the snapshot folder holds no encoder
        load_content_encoder("hf://me/contentvec")
    assert calls == [("me/voice", "rvc_adapter.json", "v2"), ("me/rmvpe-repo", "sub/rmvpe.pt", None),
                     ("me/contentvec", None, None)]
    assert spy == ["me/voice/rvc_adapter.json", "hf://me/rmvpe-repo/sub/rmvpe.pt", "hf://me/contentvec"]


def test_defaults_are_named_when_offline(tmp_path, monkeypatch):
    from huggingface_hub import constants

    from rvc_peft.features.content_encoder import ContentEncoderError, load_content_encoder
    from rvc_peft.features.rmvpe import RMVPELoadError, load_rmvpe

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(RMVPELoadError) as info:
        load_rmvpe()
    assert str(info.value).startswith("lj1995/VoiceConversionWebUI/rmvpe.pt: cannot fetch RMVPE weights")
    assert "RVC's default RMVPE, used when no --rmvpe / rmvpe_model is given" in str(info.value)
    assert "pass a local rmvpe.pt (--rmvpe PATH" in str(info.value)
    with pytest.raises(ContentEncoderError) as info:
        load_content_encoder("lj1995/VoiceConversionWebUI/hubert_base.pt")
    assert str(info.value).startswith("lj1995/VoiceConversionWebUI/hubert_base.pt: not a local file or folder, and "
                                      "cannot get it from the Hugging Face Hub (HF_HUB_OFFLINE is set")
    assert "RVC's default content encoder (hubert_base.pt): download it once" in str(info.value)
    assert "--content-encoder PATH" in str(info.value)


def test_a_typod_adapter_never_reaches_the_network(online_without_network, tmp_path, monkeypatch):
    """The issue's case: `--adapter my_voice_lroa` was ~29 s of Hub retries and an error that blamed the Hub."""
    import socket

    from rvc_peft.tuners.provenance import read_adapter_info

    def no_connection(*args, **kwargs):
        raise AssertionError(f"opened a connection to {args}")

    monkeypatch.setattr(socket, "create_connection", no_connection)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my_voice_lora").mkdir()
    start = time.perf_counter()
    with pytest.raises(LocalPathNotFoundError, match=r"^no such file or folder: my_voice_lroa \(did you mean "
                                                     r"'my_voice_lora'\?\)$"):
        read_adapter_info("my_voice_lroa")
    assert time.perf_counter() - start < FAST_S


def test_unreachable_hub_adapter_is_named(online_without_network):
    from rvc_peft.tuners.provenance import read_adapter_info

    with pytest.raises(HubUnavailableError, match=r"^someone/voice: not a local adapter folder, and cannot get it "
                                                  r"from the Hugging Face Hub \(the Hub is unreachable: cannot "
                                                  r"connect to 127\.0\.0\.1:9"):
        read_adapter_info("someone/voice")
