"""A loopback HTTP server that speaks the Hugging Face Hub endpoints huggingface_hub's real client
uses to create a repo, commit files and download them, so tests run that client end to end.

It keeps repositories as folders ``root/<org>/<name>/<branch>/<files>``; every commit gets a
40-hex id. Writes need ``Authorization: Bearer <token>`` with the token the server was given.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class FakeHub:
    def __init__(self, root: Path, token: str = "hf_test_token") -> None:
        self.root, self.token = root, token
        self.commits: list[dict] = []  # every commit payload received, decoded
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request
        self.auth_headers: list[str] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_HEAD(self):
                hub._resolve(self, head=True)

            def do_GET(self):
                hub._resolve(self, head=False)

            def do_POST(self):
                hub._post(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeHub:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- helpers --------------------------------------------------------------------------------------------------

    def repo_dir(self, repo_id: str, branch: str = "main") -> Path:
        return self.root / repo_id / branch

    def commit_id(self, repo_id: str, branch: str) -> str:
        h = hashlib.sha1(repo_id.encode())
        folder = self.repo_dir(repo_id, branch)
        for f in sorted(folder.rglob("*")) if folder.is_dir() else []:
            if f.is_file():
                h.update(f.relative_to(folder).as_posix().encode() + hashlib.sha256(f.read_bytes()).digest())
        return h.hexdigest()

    @staticmethod
    def _reply(handler, status: int, body: bytes = b"", headers: dict | None = None, head: bool = False) -> None:
        handler.send_response(status)
        for k, v in (headers or {}).items():
            handler.send_header(k, v)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if not head and body:
            handler.wfile.write(body)

    def _json(self, handler, status: int, payload) -> None:
        self._reply(handler, status, json.dumps(payload).encode(), {"Content-Type": "application/json"})

    def _authorised(self, handler) -> bool:
        auth = handler.headers.get("Authorization", "")
        self.auth_headers.append(auth)
        if auth != f"Bearer {self.token}":
            self._json(handler, 401, {"error": "Invalid credentials in Authorization header"})
            return False
        return True

    # -- downloads ------------------------------------------------------------------------------------------------

    def _resolve(self, handler, head: bool) -> None:
        self.requests.append(("HEAD" if head else "GET", handler.path))
        m = re.match(r"^/(?:api/models/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+?)(\?.*)?$", handler.path)
        if not m:
            return self._reply(handler, 404, b"not found", {"X-Error-Code": "RepoNotFound"}, head)
        repo_id, revision, filename = m.group(1), m.group(2), m.group(3)
        if not (self.root / repo_id).is_dir():
            return self._reply(handler, 404, b"Repository not found", {"X-Error-Code": "RepoNotFound"}, head)
        path = self.repo_dir(repo_id, revision) / filename
        if not path.is_file():
            return self._reply(handler, 404, b"Entry not found", {"X-Error-Code": "EntryNotFound"}, head)
        body = path.read_bytes()
        etag = hashlib.sha256(body).hexdigest()
        headers = {
            "X-Repo-Commit": self.commit_id(repo_id, revision),
            "ETag": f'"{etag}"',
            "Content-Type": "application/octet-stream",
        }
        self._reply(handler, 200, body, headers, head)

    # -- uploads --------------------------------------------------------------------------------------------------

    def _post(self, handler) -> None:
        self.requests.append(("POST", handler.path))
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        if not self._authorised(handler):
            return None
        path = handler.path.split("?")[0]
        if path == "/api/validate-yaml":  # the Hub checks a README's front matter before a commit
            import yaml

            content = json.loads(body)["content"]
            try:
                yaml.safe_load(content.split("---\n")[1])
            except (IndexError, yaml.YAMLError) as e:
                return self._json(handler, 400, {"error": f"invalid front matter: {e}"})
            return self._json(handler, 200, {"warnings": []})
        if path == "/api/repos/create":
            payload = json.loads(body)
            repo_id = f"{payload['organization']}/{payload['name']}"
            if (self.root / repo_id).is_dir():
                return self._json(
                    handler, 409, {"error": "You already created this model repo", "url": f"{self.url}/{repo_id}"}
                )
            self.repo_dir(repo_id).mkdir(parents=True)
            return self._json(handler, 200, {"url": f"{self.url}/{repo_id}", "name": repo_id})
        m = re.match(r"^/api/models/([^/]+/[^/]+)/(preupload|commit|branch)/(.+)$", path)
        if not m:
            return self._json(handler, 404, {"error": f"no route {path}"})
        repo_id, action, revision = m.group(1), m.group(2), m.group(3)
        if not (self.root / repo_id).is_dir():
            return self._reply(handler, 404, b"Repository not found", {"X-Error-Code": "RepoNotFound"})
        if action == "preupload":  # everything as a regular (inline) file: no LFS or xet needed
            files = json.loads(body)["files"]
            return self._json(
                handler,
                200,
                {
                    "files": [
                        {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None} for f in files
                    ]
                },
            )
        if action == "branch":
            if not self.repo_dir(repo_id, revision).exists():
                shutil.copytree(self.repo_dir(repo_id, "main"), self.repo_dir(repo_id, revision))
            return self._json(handler, 200, {})
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        commit = {"repo_id": repo_id, "revision": revision, "header": None, "files": {}}
        dest = self.repo_dir(repo_id, revision)
        for line in lines:
            if line["key"] == "header":
                commit["header"] = line["value"]
            elif line["key"] == "file":
                data = base64.b64decode(line["value"]["content"])
                commit["files"][line["value"]["path"]] = hashlib.sha256(data).hexdigest()
                (dest / line["value"]["path"]).parent.mkdir(parents=True, exist_ok=True)
                (dest / line["value"]["path"]).write_bytes(data)
            else:
                return self._json(handler, 400, {"error": f"this test hub takes regular files only, got {line['key']}"})
        self.commits.append(commit)
        oid = self.commit_id(repo_id, revision)
        return self._json(handler, 200, {"commitUrl": f"{self.url}/{repo_id}/commit/{oid}", "commitOid": oid})
