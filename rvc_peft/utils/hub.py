"""One answer to "is this a local path or a Hugging Face Hub reference?", and fast, clear errors either way.

Every loader that accepts "a file, a folder, or a Hub id" (`load_synthesizer`, `load_content_encoder`,
`load_rmvpe`, `read_adapter_info`) resolves through `resolve`, so they all accept the same spellings and fail the
same way.

The rule (`classify`), applied to the text as given:

1. `hf://org/repo[@revision][/path/in/repo]` is always a Hub reference (never looked up locally).
2. Anything that exists here (file or folder, after `~` expansion) is local.
3. Otherwise it is a *local path that does not exist* -- reported at once as "no such file or folder: X", with a
   "did you mean" hint when a similarly named sibling exists -- when any of these holds:
   absolute, starts with `./`, `../`, `.` or `~`, contains a backslash or a drive letter (`C:`), has a single
   segment (`my_voice`: Hub references here are always `org/repo[/file]`; the Hub's legacy single-name ids such as
   `gpt2` now redirect to `org/name`, so write that), its first two segments are not a valid Hub repo id
   (`huggingface_hub.utils.validate_repo_id`: letters, digits, `-_.`, at most 96 characters, no `--`/`..`), its repo
   name has a file extension (`weights/voice.pth`, `out/model.index`, `logs/info.json`), or its first segment is an
   existing local folder (`assets/weights/voice.pth` with `./assets` present is a mistyped local file).
4. What is left (`org/repo`, `org/repo/sub/file.pth`) is a Hub reference: `org/repo` is the repo id and the rest is
   the path of a file inside it.

Hub lookups never turn into a retry storm: with `HF_HUB_OFFLINE=1` only the local cache is read, and otherwise a
single TCP connection to the endpoint (`HF_ENDPOINT`, at most `HF_HUB_ETAG_TIMEOUT` or 3 s, remembered for a
minute) decides first whether the Hub is reachable at all; when it is not, only the local cache is read.
(`huggingface_hub` itself would retry a failed HEAD request five times with back-off, about 25 s, logging a warning
each time, before reporting that it cannot find the file.) Behind a proxy (`HTTPS_PROXY`, `ALL_PROXY`) the probe is
skipped and `huggingface_hub` decides.

Errors: `LocalPathNotFoundError` (a `FileNotFoundError`), `HubUnavailableError` (a `ConnectionError`: offline and not
in the cache) and `HubEntryNotFoundError` (a `FileNotFoundError`: no such repo, revision or file on the Hub, or no
access to it), all `OSError`s whose message names the path or reference. Callers with their own error types
re-raise them with the same text.
"""

from __future__ import annotations

import difflib
import os
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

__all__ = [
    "HUB_PREFIX",
    "HubEntryNotFoundError",
    "HubError",
    "HubReference",
    "HubUnavailableError",
    "LocalPathNotFoundError",
    "check_path_options",
    "check_paths",
    "classify",
    "hub_offline",
    "parse_hub_reference",
    "resolve",
]

HUB_PREFIX = "hf://"
# A repo *name* ending in one of these is a local file name, not a repo ("weights/voice.pth").
_FILE_SUFFIXES = frozenset({
    ".pth", ".pt", ".ckpt", ".bin", ".safetensors", ".index", ".json", ".onnx", ".npy", ".npz", ".pkl", ".yaml",
    ".yml", ".txt", ".wav", ".flac", ".mp3", ".ogg", ".zip", ".tar", ".gz",
})
_PROBE_TTL_S = 60.0
_PROBE_MAX_TIMEOUT_S = 3.0
_probe_cache: dict[tuple[str, int], tuple[float, str | None]] = {}


class LocalPathNotFoundError(FileNotFoundError):
    """A local path (see the module rules) that does not exist. `path`, `hint` (may be empty), `suggestions`."""

    def __init__(self, path: str, hint: str = "", suggestions: tuple[str, ...] = ()) -> None:
        self.path = path
        self.hint = hint
        self.suggestions = suggestions
        super().__init__(f"no such file or folder: {path}{hint}")

    def __reduce__(self):  # OSError's default pickling would pass the message as `path`
        return (type(self), (self.path, self.hint, self.suggestions))


class HubError(OSError):
    """A Hub reference that cannot be fetched: `reference` (org/repo[/file]), `reason` (the message after it),
    `cause` (what went wrong, short: for callers that word the message their own way) and `note` (what to do)."""

    def __init__(self, reference: str, reason: str, cause: str = "", note: str = "") -> None:
        self.reference = reference
        self.reason = reason
        self.cause = cause or reason
        self.note = note
        super().__init__(f"{reference}: {reason}")

    def __reduce__(self):
        return (type(self), (self.reference, self.reason, self.cause, self.note))


class HubUnavailableError(HubError, ConnectionError):
    """The Hub cannot be reached (offline mode or no network) and the reference is not in the local cache."""


class HubEntryNotFoundError(HubError, FileNotFoundError):
    """The Hub answered: no such repo, revision or file, or no access to it (gated, private)."""


@dataclass(frozen=True)
class HubReference:
    """`repo_id` ("org/repo"), `path` inside the repo (None: the repo as a whole) and `revision` (None: main)."""

    repo_id: str
    path: str | None = None
    revision: str | None = None

    def __str__(self) -> str:
        return f"{self.repo_id}/{self.path}" if self.path else self.repo_id


def hub_offline() -> bool:
    """True when `HF_HUB_OFFLINE` is set, in the environment or in `huggingface_hub.constants`."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return True
    import sys

    constants = sys.modules.get("huggingface_hub.constants")  # read at its import; do not import it just for this
    return bool(getattr(constants, "HF_HUB_OFFLINE", False))


def parse_hub_reference(text: str | os.PathLike, filename: str | None = None) -> HubReference:
    """`org/repo[/path]` or `hf://org/repo[@revision][/path]` -> `HubReference`; `filename` is appended to the path.

    Raises `ValueError` for text that is not a Hub reference of that form.
    """
    raw = os.fspath(text)
    body = raw.removeprefix(HUB_PREFIX)
    parts = body.strip("/").split("/")
    if len(parts) < 2 or not all(parts):
        raise ValueError(f"{raw}: not a Hugging Face Hub reference (expected org/repo[/path/in/repo], or hf://...)")
    if parts[0] in ("datasets", "spaces") and raw.startswith(HUB_PREFIX):
        raise ValueError(f"{raw}: only model repos are supported (hf://org/repo/...)")
    revision = None
    if raw.startswith(HUB_PREFIX) and "@" in parts[1]:  # fsspec's spelling: hf://org/repo@revision/path
        parts[1], revision = parts[1].split("@", 1)
        if not revision:
            raise ValueError(f"{raw}: empty revision after '@'")
    repo_id = "/".join(parts[:2])
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise ValueError(f"{raw}: {repo_id!r} is not a valid Hugging Face Hub repo id ({err})") from None
    path = "/".join(parts[2:]) or None
    if filename:
        path = f"{path}/{filename}" if path else filename
    return HubReference(repo_id, path, revision)


def _local_reason(text: str) -> str | None:
    """None if `text` (which does not exist here) may be a Hub reference; otherwise the hint for the error ("" when
    there is nothing to add)."""
    if text.startswith(HUB_PREFIX):
        return None
    if (text.startswith(("/", ".", "~")) or "\\" in text or (len(text) > 1 and text[1] == ":")
            or os.path.isabs(text)):
        return ""
    parts = text.strip("/").split("/")
    if len(parts) < 2 or not all(parts):
        return ""  # a bare name: our Hub references are always org/repo[/file]
    if Path(parts[1]).suffix.lower() in _FILE_SUFFIXES:
        return ""
    try:
        parse_hub_reference(text)
    except ValueError:
        return ""
    if Path(parts[0]).is_dir():
        # "assets/weights/voice.pth" with ./assets present is a mistyped local file, not repo "assets/weights"
        # (asking the Hub first costs tens of seconds without network, and then reports the wrong problem).
        parent = Path(text).parent
        where = (f"the folder {parent} exists but holds no {Path(text).name!r}" if parent.is_dir()
                 else f"the folder {parts[0]} exists here")
        return f" ({where}; for a Hub repo write {HUB_PREFIX}{text})"
    return None


def _suggestions(path: Path) -> tuple[str, ...]:
    """Names near the missing part of `path`, in the deepest folder of it that exists (difflib, best first)."""
    missing = path
    while not missing.parent.exists() and missing.parent != missing:
        missing = missing.parent
    folder = missing.parent
    try:
        names = [entry.name for entry in os.scandir(folder) if not entry.name.startswith(".")]
    except OSError:
        return ()
    close = difflib.get_close_matches(missing.name, names, n=3, cutoff=0.75)
    return tuple(str(folder / name) if str(folder) != "." else name for name in close)


def local_not_found(text: str, hint: str = "") -> LocalPathNotFoundError:
    """The error for a local path that does not exist, with a "did you mean" hint from its existing siblings."""
    suggestions = _suggestions(Path(text).expanduser())
    if suggestions:
        guess = " or ".join(repr(name) for name in suggestions)
        hint = f" (did you mean {guess}?)" if not hint else f"{hint[:-1]}; did you mean {guess}?)"
    return LocalPathNotFoundError(text, hint, suggestions)


def classify(path_or_ref: str | os.PathLike | HubReference, filename: str | None = None) -> Path | HubReference:
    """A local `Path` that exists (joined with `filename` for a folder), or a `HubReference` (see the module rules).

    Raises `LocalPathNotFoundError` for a local path that does not exist (a folder without `filename` included),
    `ValueError` for a malformed `hf://` reference.
    """
    if isinstance(path_or_ref, HubReference):
        if not filename:
            return path_or_ref
        inner = f"{path_or_ref.path}/{filename}" if path_or_ref.path else filename
        return HubReference(path_or_ref.repo_id, inner, path_or_ref.revision)
    text = os.fspath(path_or_ref)
    if not text.startswith(HUB_PREFIX):
        local = Path(text).expanduser()
        if local.exists():
            if filename and local.is_dir():
                joined = local / filename
                if not joined.exists():
                    raise local_not_found(str(Path(text) / filename), f" (the folder {text} holds no {filename!r})")
                return joined
            return local
        reason = _local_reason(text)
        if reason is not None:
            raise local_not_found(text, reason)
    try:
        return parse_hub_reference(text, filename)
    except ValueError as err:
        if text.startswith(HUB_PREFIX):
            raise  # a malformed hf:// reference: never a local path
        raise local_not_found(text, f" (and not a Hub reference: {str(err).split(': ', 1)[-1]})") from None


def _probe_hub(endpoint: str) -> str | None:
    """None if a TCP connection to the Hub endpoint opens (or a proxy decides), else why not. Cached a minute."""
    if any(os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "HTTP_PROXY",
                                              "http_proxy")):
        return None
    parsed = urlparse(endpoint)
    host, port = parsed.hostname or "", parsed.port or (443 if parsed.scheme == "https" else 80)
    key = (host, port)
    cached = _probe_cache.get(key)
    if cached is not None and time.monotonic() - cached[0] < _PROBE_TTL_S:
        return cached[1]
    from huggingface_hub import constants

    timeout = min(float(constants.HF_HUB_ETAG_TIMEOUT or _PROBE_MAX_TIMEOUT_S), _PROBE_MAX_TIMEOUT_S)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            problem = None
    except OSError as err:
        problem = f"cannot connect to {host}:{port}: {err.strerror or err}"
    _probe_cache[key] = (time.monotonic(), problem)
    return problem


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


def _download(ref: HubReference, revision: str | None, allow_patterns: list[str] | None, offline_note: str,
              download_kwargs: dict[str, Any]) -> Path:
    import huggingface_hub
    from huggingface_hub import constants
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if ref.revision is not None:
        if revision is not None and revision != ref.revision:
            raise ValueError(f"{ref}: revision {ref.revision!r} in the reference but revision={revision!r} given")
        revision = ref.revision
    kwargs = dict(download_kwargs)
    why_offline = None
    if hub_offline():
        why_offline = "HF_HUB_OFFLINE is set"
        if not constants.HF_HUB_OFFLINE:  # set in the environment after huggingface_hub read it
            kwargs["local_files_only"] = True
    elif not kwargs.get("local_files_only"):
        problem = _probe_hub(constants.ENDPOINT)
        if problem is not None:
            why_offline = f"the Hub is unreachable: {problem}"
            kwargs["local_files_only"] = True  # the cache only: no retries against a network that is not there
    try:
        if ref.path is not None:
            return Path(huggingface_hub.hf_hub_download(ref.repo_id, ref.path, revision=revision, **kwargs))
        if allow_patterns is not None:
            kwargs["allow_patterns"] = allow_patterns
        return Path(huggingface_hub.snapshot_download(ref.repo_id, revision=revision, **kwargs))
    except (OfflineModeIsEnabled, LocalEntryNotFoundError) as err:
        cause = f"{why_offline or _first_line(err)}, and it is not in the local cache"
        raise HubUnavailableError(str(ref), f"not a local file or folder, and cannot get it from the Hugging Face Hub "
                                            f"({cause}){offline_note}", cause, offline_note) from None
    except (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError) as err:
        cause = f"not found there: {_first_line(err)}"
        raise HubEntryNotFoundError(str(ref), f"not a local file or folder, and not on the Hugging Face Hub "
                                              f"({cause})", cause) from None
    except HfHubHTTPError as err:
        cause = f"the Hub refused it: {_first_line(err)}"
        raise HubEntryNotFoundError(str(ref), f"not a local file or folder, and the Hugging Face Hub refused it "
                                              f"({_first_line(err)})", cause) from None
    except Exception as err:
        # OSError: connection reset, disk full; httpx transport errors (not OSErrors): the network dropped after the
        # probe. Anything else is a bug and propagates.
        if not isinstance(err, OSError) and type(err).__module__.split(".")[0] not in ("httpx", "httpx2", "httpcore"):
            raise
        cause = f"{type(err).__name__}: {_first_line(err)}"
        raise HubUnavailableError(str(ref), f"not a local file or folder, and cannot get it from the Hugging Face Hub "
                                            f"({cause}){offline_note}", cause, offline_note) from None


def resolve(
    path_or_ref: str | os.PathLike | HubReference,
    *,
    filename: str | None = None,
    default_filename: str | None = None,
    revision: str | None = None,
    allow_patterns: list[str] | None = None,
    offline_note: str = "",
    **download_kwargs: Any,
) -> Path:
    """A local path for a file, a folder, or a Hub reference (see the module docstring for which is which).

    `filename`: a file inside the local folder or Hub repo named by `path_or_ref` (appended to a Hub path).
    `default_filename`: the file to take from a bare `org/repo` (ignored when the reference names a file).
    A bare `org/repo` without either downloads a snapshot (only `allow_patterns`, when given) and returns its folder.
    `offline_note`: appended to the "cannot get it" message, e.g. "; pass a local rmvpe.pt with --rmvpe".
    `download_kwargs` go to `hf_hub_download` / `snapshot_download` (token, cache_dir, ...).

    Raises `LocalPathNotFoundError`, `HubUnavailableError` or `HubEntryNotFoundError` (all `OSError`s naming the
    path or reference), and `ValueError` for a malformed `hf://` reference or a revision given twice with different
    values.
    """
    target = classify(path_or_ref, filename)
    if isinstance(target, Path):
        return target
    if target.path is None and default_filename:
        target = HubReference(target.repo_id, default_filename, target.revision)
    return _download(target, revision, allow_patterns, offline_note, download_kwargs)


def check_paths(references: Iterable[Any] = (), local: Iterable[Any] = ()) -> None:
    """Fail at once, before any heavy import, for a named input that cannot exist: `references` are "local path or
    Hub reference" values (checked by `classify`, no network), `local` must exist here. None entries are skipped.

    Raises `LocalPathNotFoundError` naming the first missing path (with a "did you mean" hint).
    """
    for value in references:
        if value is not None and not isinstance(value, HubReference):
            classify(value)
    for value in local:
        if value is not None and not Path(os.fspath(value)).expanduser().exists():
            raise local_not_found(os.fspath(value))


def check_path_options(options: Any, references: Iterable[str] = (), local: Iterable[str] = ()) -> None:
    """`check_paths` on the attributes of `options` (an argparse namespace) with these names; a missing attribute or
    None is skipped, a list is checked item by item."""

    def values(names: Iterable[str]) -> list[Any]:
        found: list[Any] = []
        for name in names:
            value = getattr(options, name, None)
            found.extend(value if isinstance(value, list) else [value])
        return found

    check_paths(references=values(references), local=values(local))
