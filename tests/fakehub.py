"""A local fake of the Hugging Face Hub HTTP API, enough for push_to_hub / upload_folder and hf_hub_download.

Serve it on 127.0.0.1 and point `HF_ENDPOINT` at it **before huggingface_hub is imported** (the endpoint is read at
import time), i.e. run the code that pushes or pulls in a subprocess with `hub_env(...)`:

    with serve_fake_hub(tmp_path) as hub:
        subprocess.run([sys.executable, "push.py"], env=hub_env(hub.endpoint, tmp_path / "cache"), check=True)
        assert "adapter_model.safetensors" in hub.files("org/voice")

Implemented (huggingface_hub 2.4): `POST /api/repos/create`, `POST /api/validate-yaml`,
`POST /api/{models,datasets}/{repo}/preupload/{rev}` (every file "regular", so no LFS/Xet),
`POST /api/{type}s/{repo}/commit/{rev}` (NDJSON with base64 file contents and deletions),
`GET /api/{type}s/{repo}[/revision/{rev}]` (repo info with siblings), `GET /api/{type}s/{repo}/tree/{rev}`,
`HEAD`/`GET /{repo}/resolve/{rev}/{path}` (with ETag, X-Repo-Commit; 404 + X-Error-Code otherwise).
Anything else is answered 404 and recorded in `FakeHub.unhandled` (handy when a new client version adds a call).
Repos live in memory; `FakeHub.root` (if given) receives a copy of every committed file for inspection.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pytest

_API_REPO = re.compile(r"^/api/(models|datasets|spaces)/([^/]+/[^/]+)(?:/(revision|tree|preupload|commit)/([^/]+)(/.*)?)?$")
_RESOLVE = re.compile(r"^/(?:(datasets|spaces)/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")


@dataclass
class _Repo:
    files: dict[str, bytes] = field(default_factory=dict)
    commits: list[str] = field(default_factory=list)
    private: bool = False

    @property
    def head(self) -> str:
        return self.commits[-1] if self.commits else "0" * 40


@dataclass
class FakeHub:
    """State of a running fake hub: `endpoint` (http://127.0.0.1:PORT), repos, and the requests it did not know."""

    endpoint: str = ""
    root: Path | None = None
    repos: dict[str, _Repo] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    unhandled: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def files(self, repo_id: str) -> dict[str, bytes]:
        """The files at the head of `repo_id` (empty if the repo does not exist)."""
        repo = self.repos.get(repo_id)
        return dict(repo.files) if repo else {}

    def commit(self, repo_id: str, files: dict[str, bytes], deleted: tuple[str, ...] = ()) -> str:
        """Add a commit (also used by the HTTP handler); returns its 40-hex id."""
        with self.lock:
            repo = self.repos.setdefault(repo_id, _Repo())
            for path in deleted:
                repo.files.pop(path, None)
            repo.files.update(files)
            digest = hashlib.sha1(repo.head.encode() + json.dumps(sorted(files)).encode())
            for path in sorted(files):
                digest.update(files[path])
            repo.commits.append(digest.hexdigest())
            if self.root is not None:
                for path, content in files.items():
                    target = self.root / repo_id / path
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(content)
            return repo.head


class _Handler(BaseHTTPRequestHandler):
    hub: FakeHub  # set on the per-server subclass
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return

    # --- helpers ----------------------------------------------------------------------------------------------------
    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, payload: Any = None, headers: dict[str, str] | None = None, raw: bytes | None = None,
              head_only: bool = False) -> None:
        body = raw if raw is not None else (json.dumps(payload).encode() if payload is not None else b"")
        self.send_response(status)
        self.send_header("Content-Type", "application/json" if raw is None else "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if not head_only:
            self.wfile.write(body)

    def _error(self, status: int, code: str, message: str, head_only: bool = False) -> None:
        self._send(status, {"error": message}, {"X-Error-Code": code, "X-Error-Message": message}, head_only=head_only)

    def _repo_info(self, repo_id: str, repo: _Repo) -> dict[str, Any]:
        return {
            "id": repo_id, "modelId": repo_id, "sha": repo.head, "private": repo.private, "disabled": False,
            "gated": False, "tags": [], "downloads": 0, "likes": 0, "createdAt": "2026-01-01T00:00:00.000Z",
            "lastModified": "2026-01-01T00:00:00.000Z", "siblings": [{"rfilename": path} for path in sorted(repo.files)],
        }

    # --- verbs --------------------------------------------------------------------------------------------------
    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        path = unquote(urlparse(self.path).path)
        self.hub.requests.append(f"{method} {path}")
        body = self._body() if method == "POST" else b""
        head = method == "HEAD"
        if method == "POST" and path == "/api/repos/create":
            return self._create_repo(json.loads(body or b"{}"))
        if method == "POST" and path == "/api/validate-yaml":
            return self._send(200, {})
        match = _API_REPO.match(path)
        if match:
            _kind, repo_id, action, _revision, rest = match.groups()
            repo = self.hub.repos.get(repo_id)
            if repo is None:
                return self._error(404, "RepoNotFound", f"Repository {repo_id} not found", head)
            if action == "preupload" and method == "POST":
                files = json.loads(body or b"{}").get("files", [])
                return self._send(200, {"files": [
                    {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None} for f in files
                ], "commitOid": repo.head})
            if action == "commit" and method == "POST":
                return self._commit(repo_id, body)
            if action in (None, "revision") and method in ("GET", "HEAD"):
                return self._send(200, self._repo_info(repo_id, repo), head_only=head)
            if action == "tree" and method == "GET":
                prefix = (rest or "").strip("/")
                entries = [
                    {"type": "file", "path": p, "size": len(c), "oid": hashlib.sha1(c).hexdigest()}
                    for p, c in sorted(repo.files.items()) if not prefix or p.startswith(prefix + "/")
                ]
                return self._send(200, entries)
        match = _RESOLVE.match(path)
        if match and method in ("GET", "HEAD"):
            _kind, repo_id, _revision, file_path = match.groups()
            repo = self.hub.repos.get(repo_id)
            if repo is None:
                return self._error(404, "RepoNotFound", f"Repository {repo_id} not found", head)
            if file_path not in repo.files:
                return self._error(404, "EntryNotFound", f"{file_path} does not exist in {repo_id}", head)
            content = repo.files[file_path]
            headers = {"ETag": f'"{hashlib.sha256(content).hexdigest()}"', "X-Repo-Commit": repo.head}
            return self._send(200, raw=content, headers=headers, head_only=head)
        self.hub.unhandled.append(f"{method} {path}")
        return self._error(404, "EntryNotFound", f"fake hub: no handler for {method} {path}", head)

    def _create_repo(self, payload: dict[str, Any]) -> None:
        name, organization = payload.get("name", ""), payload.get("organization")
        repo_id = f"{organization}/{name}" if organization else name
        if "/" not in repo_id:
            repo_id = f"user/{repo_id}"
        with self.hub.lock:
            repo = self.hub.repos.setdefault(repo_id, _Repo())
            repo.private = payload.get("visibility") == "private" or bool(payload.get("private"))
        self._send(200, {"url": f"{self.hub.endpoint}/{repo_id}", "name": repo_id, "id": repo_id})

    def _commit(self, repo_id: str, body: bytes) -> None:
        files: dict[str, bytes] = {}
        deleted: list[str] = []
        for line in body.decode().splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item.get("key"), item.get("value") or {}
            if key == "file":
                content = value.get("content", "")
                files[value["path"]] = base64.b64decode(content) if value.get("encoding") == "base64" else content.encode()
            elif key in ("deletedFile", "deletedFolder"):
                deleted.append(value["path"])
            elif key == "lfsFile":
                self._error(400, "BadRequest", "fake hub: LFS uploads are not supported (preupload says regular)")
                return
        commit = self.hub.commit(repo_id, files, tuple(deleted))
        self._send(200, {
            "commitUrl": f"{self.hub.endpoint}/{repo_id}/commit/{commit}", "commitOid": commit,
            "commitMessage": "", "pullRequestUrl": None, "success": True,
        })


@contextmanager
def serve_fake_hub(root: str | os.PathLike | None = None) -> Iterator[FakeHub]:
    """Run a fake hub on 127.0.0.1 (a free port) for the duration of the block; yields its `FakeHub` state."""
    hub = FakeHub(root=Path(root) if root is not None else None)
    handler = type("FakeHubHandler", (_Handler,), {"hub": hub})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    hub.endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, name="fake-hub", daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def hub_env(endpoint: str, cache_dir: str | os.PathLike, **extra: str) -> dict[str, str]:
    """An environment for a subprocess that talks to the fake hub (online, dummy token, private cache)."""
    env = dict(os.environ)
    cache = Path(cache_dir)
    env.update(
        HF_ENDPOINT=endpoint, HF_TOKEN="dummy-token", HF_HUB_OFFLINE="0", HF_HOME=str(cache / "home"),
        HF_HUB_CACHE=str(cache / "hub"), HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_PROGRESS_BARS="1",
        HF_HUB_ETAG_TIMEOUT="30", HF_HUB_DOWNLOAD_TIMEOUT="60", TRANSFORMERS_OFFLINE="0",
        NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost",
    )
    env.update(extra)
    return env


@pytest.fixture
def fake_hub(tmp_path: Path) -> Iterator[FakeHub]:
    """pytest fixture: a running fake hub whose committed files are mirrored under tmp_path/fake_hub."""
    with serve_fake_hub(tmp_path / "fake_hub") as hub:
        yield hub
