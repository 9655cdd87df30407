"""Local stand-ins for the Hugging Face Hub, so push and pull run without the internet.

* Download side: **olah** (a real, third-party Hub-compatible mirror server) serves
  model repos that are plain git repositories under ``<mirrors>/models/<org>/<name>``.
  huggingface_hub's own download and cache code talks to it over HTTP.
* Upload side: :class:`FakeHubUploadServer` is a **test double** of the Hub's write
  API (olah is read-only and the real Hub is unreachable here). It implements the
  endpoints huggingface_hub's ``create_repo``, ``create_branch`` and ``upload_folder``
  call (``/api/repos/create``, ``.../branch/<name>``, ``.../preupload/<rev>``,
  ``.../commit/<rev>`` with the NDJSON commit payload) and turns each commit into a
  real git commit in the mirror folder, which olah then serves.
"""
from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Dict, List, Optional
from urllib.parse import unquote, urlparse

TEST_TOKEN = "hf_test_double_token"
_GIT_ENV = {"GIT_AUTHOR_NAME": "e3d-zoo tests", "GIT_AUTHOR_EMAIL": "tests@e3d-zoo.invalid",
            "GIT_COMMITTER_NAME": "e3d-zoo tests", "GIT_COMMITTER_EMAIL": "tests@e3d-zoo.invalid"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _git(repo: Path, *args: str, input: Optional[bytes] = None, env: Optional[Dict[str, str]] = None) -> str:
    out = subprocess.run(["git", "--git-dir", str(repo), *args], input=input, capture_output=True,
                         check=True, env={**os.environ, **_GIT_ENV, **(env or {})})
    return out.stdout.decode().strip()


class _Handler(BaseHTTPRequestHandler):
    server: "FakeHubUploadServer._HTTPServer"

    def log_message(self, fmt, *args):  # keep pytest output clean; requests are recorded
        pass

    def _reply(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if status >= 400:
            self.send_header("X-Error-Message", body.get("error", ""))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_POST(self):  # noqa: N802 - http.server API
        owner = self.server.owner
        path = unquote(urlparse(self.path).path)
        owner.requests.append(("POST", path))
        if self.headers.get("Authorization") != f"Bearer {owner.token}":
            return self._reply(401, {"error": "Invalid credentials in Authorization header"})
        body = self._body()
        parts = path.strip("/").split("/")
        try:
            if parts[:2] == ["api", "validate-yaml"]:
                # the Hub checks a README's metadata block before a commit; so does the double
                content = json.loads(body).get("content", "")
                lines = content.splitlines()
                if lines and lines[0] == "---" and "---" not in lines[1:]:
                    return self._reply(400, {"errors": [{"message": "unterminated metadata block"}]})
                return self._reply(200, {"errors": [], "warnings": []})
            if parts[:3] == ["api", "repos", "create"]:
                payload = json.loads(body)
                repo_id = f"{payload.get('organization')}/{payload['name']}"
                if owner.repo_path(repo_id).exists():
                    return self._reply(409, {"error": "You already created this model repo",
                                             "url": f"{owner.url}/{repo_id}"})
                owner.create_repo(repo_id)
                return self._reply(200, {"url": f"{owner.url}/{repo_id}"})
            if parts[:2] == ["api", "models"] and len(parts) >= 6:
                repo_id, action, rev = f"{parts[2]}/{parts[3]}", parts[4], "/".join(parts[5:])
                if not owner.repo_path(repo_id).exists():
                    return self._reply(404, {"error": "Repository not found"})
                if action == "preupload":
                    files = json.loads(body)["files"]
                    return self._reply(200, {"files": [
                        {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None}
                        for f in files]})
                if action == "commit":
                    lines = [json.loads(x) for x in body.decode().splitlines() if x.strip()]
                    sha = owner.commit(repo_id, rev, lines)
                    return self._reply(200, {"commitUrl": f"{owner.url}/{repo_id}/commit/{sha}",
                                             "commitOid": sha, "pullRequestUrl": None})
                if action == "branch":
                    start = json.loads(body or b"{}").get("startingPoint") or "main"
                    if owner.has_branch(repo_id, rev):
                        return self._reply(409, {"error": f"Reference already exists: {rev}"})
                    owner.create_branch(repo_id, rev, start)
                    return self._reply(200, {})
            return self._reply(404, {"error": f"the test double does not implement POST {path}"})
        except subprocess.CalledProcessError as exc:
            return self._reply(400, {"error": exc.stderr.decode(errors="replace")})


class FakeHubUploadServer:
    """TEST DOUBLE of the Hub's upload API, committing into git repos olah can serve."""

    class _HTTPServer(ThreadingHTTPServer):
        owner: "FakeHubUploadServer"

    def __init__(self, mirrors: Path, token: str = TEST_TOKEN):
        self.mirrors = Path(mirrors)
        self.token = token
        self.requests: List[tuple] = []
        self._lock = threading.Lock()
        self._httpd = self._HTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> "FakeHubUploadServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def repo_path(self, repo_id: str) -> Path:
        return self.mirrors / "models" / repo_id

    def create_repo(self, repo_id: str) -> None:
        path = self.repo_path(repo_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(path)], check=True)
        # like the Hub, a new repo starts with a commit holding .gitattributes
        self.commit(repo_id, "main", [{"key": "header", "value": {"summary": "initial commit"}},
                                      {"key": "file", "value": {"path": ".gitattributes", "encoding": "base64",
                                       "content": base64.b64encode(b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n").decode()}}],
                    allow_new=True)

    def has_branch(self, repo_id: str, branch: str) -> bool:
        try:
            _git(self.repo_path(repo_id), "rev-parse", "--verify", "-q", f"refs/heads/{branch}")
            return True
        except subprocess.CalledProcessError:
            return False

    def create_branch(self, repo_id: str, branch: str, start: str) -> None:
        repo = self.repo_path(repo_id)
        _git(repo, "update-ref", f"refs/heads/{branch}", _git(repo, "rev-parse", start))

    def commit(self, repo_id: str, revision: str, lines: List[dict], allow_new: bool = False) -> str:
        """Apply an NDJSON commit payload as one git commit on branch ``revision``."""
        repo = self.repo_path(repo_id)
        with self._lock:
            index = repo / f"index.{threading.get_ident()}"
            env = {"GIT_INDEX_FILE": str(index)}
            parent = None
            if not (allow_new and not self.has_branch(repo_id, revision)):
                parent = _git(repo, "rev-parse", f"refs/heads/{revision}")
                _git(repo, "read-tree", parent, env=env)
            header = {}
            for item in lines:
                key, value = item["key"], item["value"]
                if key == "header":
                    header = value
                elif key == "file":
                    data = base64.b64decode(value["content"])
                    blob = _git(repo, "hash-object", "-w", "--stdin", input=data)
                    _git(repo, "update-index", "--add", "--cacheinfo", f"100644,{blob},{value['path']}", env=env)
                elif key in ("deletedFile", "deletedFolder"):
                    _git(repo, "update-index", "--force-remove", value["path"], env=env)
                else:
                    raise subprocess.CalledProcessError(1, "commit", stderr=f"unsupported {key}".encode())
            tree = _git(repo, "write-tree", env=env)
            args = ["commit-tree", tree, "-m", header.get("summary") or "commit"]
            if parent:
                args += ["-p", parent]
            sha = _git(repo, *args)
            _git(repo, "update-ref", f"refs/heads/{revision}", sha)
            index.unlink(missing_ok=True)
            return sha


class OlahMirror:
    """A real olah server (subprocess) serving the git repos under ``mirrors``."""

    def __init__(self, mirrors: Path, workdir: Path):
        self.mirrors, self.workdir = Path(mirrors), Path(workdir)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: Optional[subprocess.Popen] = None

    def __enter__(self) -> "OlahMirror":
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "olah.toml"
        config.write_text(
            "[basic]\n"
            f'host = "127.0.0.1"\nport = {self.port}\n'
            f'repos-path = "{self.workdir / "cache"}"\n'
            f'mirrors-path = ["{self.mirrors}"]\n'
            f'mirror-netloc = "127.0.0.1:{self.port}"\n'
            f'mirror-lfs-netloc = "127.0.0.1:{self.port}"\n'
            "[accessibility]\noffline = true\n")
        exe = Path(sys.executable).with_name("olah-cli")
        self.log = open(self.workdir / "olah.log", "wb")
        self.proc = subprocess.Popen([str(exe), "-c", str(config)], cwd=self.workdir,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"olah exited early: {(self.workdir / 'olah.log').read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.2)
        self.__exit__()
        raise RuntimeError("olah did not start within 60 s")

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        if getattr(self, "log", None):
            self.log.close()
