"""A loopback HTTP server that speaks the Hugging Face Hub endpoints huggingface_hub's real client
uses to create a repo, commit files (regular and LFS) and download them, so tests run that client end to end.

It keeps repositories as folders ``root/<org>/<name>/<branch>/<files>``; every commit gets a 40-hex id.
Writes need ``Authorization: Bearer <token>`` with the token the server was given; a request that
carries any other token is refused (HTTP 401), as the real Hub refuses it.

What it answers, route by route (the names are the keys of :attr:`FakeHub.faults`):

- ``create``   POST /api/repos/create: records ``visibility`` ("private" or "public").
- ``yaml``     POST /api/validate-yaml: checks a README's front matter.
- ``preupload`` POST /api/models/<repo>/preupload/<rev>: "lfs" for what the real Hub stores in LFS
  (the default .gitattributes patterns such as *.safetensors and *.onnx, any sample with a NUL byte such
  as a PNG, anything of 10 MiB or more), "regular" for small text files.
- ``lfs-batch``  POST /<repo>.git/info/lfs/objects/batch: git-lfs batch API, "basic" transfer only; an object
  already stored gets no actions (nothing to upload), as in git-lfs.
- ``lfs-upload`` PUT /lfs-upload/<oid>?X-Amz-Signature=...: the presigned single-part upload (no token,
  as on S3; the signature is one the batch answer handed out); the bytes must hash to the oid.
- ``lfs-verify`` POST /<repo>.git/info/lfs/objects/verify: the object must be stored with that size.
- ``commit``   POST /api/models/<repo>/commit/<rev>: "file" (base64) and "lfsFile" (oid of an uploaded
  object) lines.
- ``branch``   POST /api/models/<repo>/branch/<rev>.
- ``resolve``  HEAD/GET /<repo>/resolve/<rev>/<file>: private repos need the token (HTTP 401 with
  X-Error-Code RepoNotFound otherwise); a missing branch is RevisionNotFound, a missing file EntryNotFound.
- ``xet``     the Xet token route: refused, so a client that tries Xet fails loudly. huggingface_hub 2.x uploads
  every LFS file through Xet whenever hf_xet is installed, without asking the server, so a client of this
  server must run with ``HF_HUB_DISABLE_XET=1`` (:meth:`FakeHub.client_env`, :meth:`FakeHub.connect`).

``faults[route] = 500`` (any status) makes that route answer it; ``faults[route] = "not-json"`` makes it
answer 200 with an HTML page, as a captive portal or a misconfigured proxy does; ``"echo-token"`` makes it
answer 400 with the request's Authorization header in the error, as a careless server or proxy might.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import re
import secrets
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

# The real Hub's default .gitattributes: files matching these are stored in LFS whatever their content.
LFS_PATTERNS = (
    "*.7z",
    "*.arrow",
    "*.bin",
    "*.bz2",
    "*.ckpt",
    "*.ftz",
    "*.gz",
    "*.h5",
    "*.joblib",
    "*.mlmodel",
    "*.model",
    "*.msgpack",
    "*.npy",
    "*.npz",
    "*.onnx",
    "*.ot",
    "*.parquet",
    "*.pb",
    "*.pickle",
    "*.pkl",
    "*.pt",
    "*.pth",
    "*.rar",
    "*.safetensors",
    "*.tar",
    "*.tflite",
    "*.tgz",
    "*.wasm",
    "*.xz",
    "*.zip",
    "*.zst",
)
LFS_MIN_SIZE = 10 * 1024 * 1024  # the Hub refuses regular files this large
HTML_PAGE = b"<html><body><h1>Welcome to the guest network</h1>Please sign in.</body></html>"


def wants_lfs(path: str, size: int, sample: bytes) -> bool:
    """Whether the real Hub's preupload answers "lfs" for this file."""
    name = path.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatch(name, p) for p in LFS_PATTERNS) or size >= LFS_MIN_SIZE or b"\x00" in sample


class FakeHub:
    def __init__(self, root: Path, token: str = "hf_test_token") -> None:
        self.root, self.token = root, token
        self.commits: list[dict] = []  # every commit payload received, decoded
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request
        self.auth_headers: list[str] = []  # the Authorization header of every write
        self.private: set[str] = set()  # repo ids created private
        self.upload_modes: dict[str, str] = {}  # path -> "lfs" or "regular", as preupload last answered
        self.lfs_puts: list[str] = []  # oids uploaded through the presigned URL
        self.lfs_verified: list[str] = []  # oids the client asked to verify
        self.faults: dict[str, int | str] = {}  # route -> status to answer, or "not-json"
        self._lfs: dict[str, bytes] = {}  # oid -> stored object
        self._signatures: dict[str, str] = {}  # oid -> the signature of its upload URL
        self._lock = threading.Lock()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_HEAD(self):
                hub._handle(self, "HEAD")

            def do_GET(self):
                hub._handle(self, "GET")

            def do_POST(self):
                hub._handle(self, "POST")

            def do_PUT(self):
                hub._handle(self, "PUT")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeHub:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- clients --------------------------------------------------------------------------------------------------

    def client_env(self, token: str | None = None) -> dict[str, str]:
        """Environment for a huggingface_hub client in a subprocess: this server, online, basic LFS (no Xet)."""
        env = {"HF_ENDPOINT": self.url, "HF_HUB_OFFLINE": "", "HF_HUB_DISABLE_XET": "1"}
        return env if token is None else {**env, "HF_TOKEN": token}

    def connect(self, monkeypatch, token: str | None = None) -> None:
        """The same for this process. huggingface_hub reads HF_HUB_DISABLE_XET when it is imported, so its
        constant is set as well as the variable."""
        from huggingface_hub import constants

        for key, value in self.client_env(token).items():
            monkeypatch.setenv(key, value)
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)

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

    def lfs_object(self, oid: str) -> bytes | None:
        """The bytes uploaded for ``oid``, or None."""
        return self._lfs.get(oid)

    @staticmethod
    def _reply(handler, status: int, body: bytes = b"", headers: dict | None = None, head: bool = False) -> None:
        handler.send_response(status)
        for k, v in (headers or {}).items():
            handler.send_header(k, v)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if not head and body:
            handler.wfile.write(body)

    def _json(self, handler, status: int, payload, headers: dict | None = None) -> None:
        body = json.dumps(payload).encode()
        self._reply(handler, status, body, {"Content-Type": "application/json", **(headers or {})})

    @staticmethod
    def _read_body(handler) -> bytes:
        """The request body, sent with a Content-Length or chunked."""
        if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts = []
            while size := int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16):
                parts.append(handler.rfile.read(size))
                handler.rfile.readline()  # the CRLF after each chunk
            handler.rfile.readline()  # the CRLF after the last, empty chunk
            return b"".join(parts)
        length = int(handler.headers.get("Content-Length") or 0)
        return handler.rfile.read(length) if length else b""

    def _bearer(self, handler) -> str | None:
        """The request's token: None when it sent none."""
        auth = handler.headers.get("Authorization", "")
        return auth.removeprefix("Bearer ") if auth else None

    def _refuse_token(self, handler, head: bool = False) -> None:
        body = json.dumps({"error": "Invalid credentials in Authorization header"}).encode()
        headers = {"Content-Type": "application/json", "X-Error-Message": "Invalid credentials in Authorization header"}
        self._reply(handler, 401, body, headers, head)

    def _authorised(self, handler) -> bool:
        """Writes need the server's token."""
        self.auth_headers.append(handler.headers.get("Authorization", ""))
        if self._bearer(handler) != self.token:
            self._refuse_token(handler)
            return False
        return True

    def _fault(self, handler, route: str, head: bool = False) -> bool:
        """Answer with the fault set for ``route``, if any; True when it did."""
        fault = self.faults.get(route)
        if fault is None:
            return False
        if fault == "not-json":
            self._reply(handler, 200, HTML_PAGE, {"Content-Type": "text/html"}, head)
        elif fault == "echo-token":
            said = f"malformed request (Authorization: {handler.headers.get('Authorization', '')})"
            self._reply(handler, 400, json.dumps({"error": said}).encode(), {"Content-Type": "application/json"}, head)
        else:
            body = json.dumps({"error": "Internal Error - We're working hard to fix this as soon as possible!"})
            self._reply(handler, int(fault), body.encode(), {"Content-Type": "application/json"}, head)
        return True

    # -- routing --------------------------------------------------------------------------------------------------

    def _handle(self, handler, method: str) -> None:
        self.requests.append((method, handler.path))
        body = self._read_body(handler) if method in ("POST", "PUT") else b""  # read before any answer
        path = handler.path.split("?")[0]
        head = method == "HEAD"
        if method in ("HEAD", "GET"):
            return self._resolve(handler, path, head)
        if method == "PUT":
            return self._lfs_put(handler, path, handler.path.partition("?")[2], body)
        if re.match(r"^/api/models/[^/]+/[^/]+/xet-write-token/", path):
            if self._fault(handler, "xet"):
                return None
            message = "this loopback Hub speaks basic LFS only; run the client with HF_HUB_DISABLE_XET=1"
            return self._json(handler, 501, {"error": message})
        if not self._authorised(handler):
            return None
        if path == "/api/validate-yaml":
            return self._fault(handler, "yaml") or self._validate_yaml(handler, body)
        if path == "/api/repos/create":
            return self._fault(handler, "create") or self._create(handler, body)
        m = re.match(r"^/([^/]+/[^/]+)\.git/info/lfs/objects/(batch|verify)$", path)
        if m:
            route = f"lfs-{m.group(2)}"
            if self._fault(handler, route):
                return None
            return (self._lfs_batch if route == "lfs-batch" else self._lfs_verify)(handler, m.group(1), body)
        m = re.match(r"^/api/models/([^/]+/[^/]+)/(preupload|commit|branch)/(.+)$", path)
        if not m:
            return self._json(handler, 404, {"error": f"no route {path}"})
        repo_id, action, revision = m.group(1), m.group(2), m.group(3)
        if self._fault(handler, action):
            return None
        if not (self.root / repo_id).is_dir():
            return self._reply(handler, 404, b"Repository not found", {"X-Error-Code": "RepoNotFound"})
        if action == "branch":
            if not self.repo_dir(repo_id, revision).exists():
                shutil.copytree(self.repo_dir(repo_id, "main"), self.repo_dir(repo_id, revision))
            return self._json(handler, 200, {})
        if not self.repo_dir(repo_id, revision).is_dir():
            return self._revision_not_found(handler, revision)
        if action == "preupload":
            return self._preupload(handler, body)
        return self._commit(handler, repo_id, revision, body)

    # -- downloads ------------------------------------------------------------------------------------------------

    def _resolve(self, handler, path: str, head: bool) -> None:
        if self._fault(handler, "resolve", head):
            return None
        m = re.match(r"^/(?:api/models/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)$", path)
        if not m:
            return self._reply(handler, 404, b"not found", {"X-Error-Code": "RepoNotFound"}, head)
        repo_id, revision, filename = m.group(1), m.group(2), m.group(3)
        token = self._bearer(handler)
        if token is not None and token != self.token:
            return self._refuse_token(handler, head)
        if not (self.root / repo_id).is_dir() or (repo_id in self.private and token is None):
            # The real Hub does not tell a private repository from a missing one to a stranger.
            headers = {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"}
            return self._reply(handler, 401 if token is None else 404, b"Repository not found", headers, head)
        if not self.repo_dir(repo_id, revision).is_dir():
            return self._revision_not_found(handler, revision, head)
        file = self.repo_dir(repo_id, revision) / filename
        if not file.is_file():
            return self._reply(handler, 404, b"Entry not found", {"X-Error-Code": "EntryNotFound"}, head)
        body = file.read_bytes()
        headers = {
            "X-Repo-Commit": self.commit_id(repo_id, revision),
            "ETag": f'"{hashlib.sha256(body).hexdigest()}"',
            "Content-Type": "application/octet-stream",
        }
        self._reply(handler, 200, body, headers, head)

    def _revision_not_found(self, handler, revision: str, head: bool = False) -> None:
        headers = {"X-Error-Code": "RevisionNotFound", "X-Error-Message": f"Invalid rev id: {revision}"}
        self._reply(handler, 404, f"Invalid rev id: {revision}".encode(), headers, head)

    # -- uploads --------------------------------------------------------------------------------------------------

    def _validate_yaml(self, handler, body: bytes) -> None:
        import yaml

        content = json.loads(body)["content"]
        try:
            yaml.safe_load(content.split("---\n")[1])
        except (IndexError, yaml.YAMLError) as e:
            return self._json(handler, 400, {"error": f"invalid front matter: {e}"})
        return self._json(handler, 200, {"warnings": []})

    def _create(self, handler, body: bytes) -> None:
        payload = json.loads(body)
        repo_id = f"{payload['organization']}/{payload['name']}"
        if (self.root / repo_id).is_dir():
            return self._json(
                handler, 409, {"error": "You already created this model repo", "url": f"{self.url}/{repo_id}"}
            )
        self.repo_dir(repo_id).mkdir(parents=True)
        if payload.get("visibility") == "private":
            self.private.add(repo_id)
        return self._json(handler, 200, {"url": f"{self.url}/{repo_id}", "name": repo_id})

    def _preupload(self, handler, body: bytes) -> None:
        answers = []
        for f in json.loads(body)["files"]:
            mode = "lfs" if wants_lfs(f["path"], f["size"], base64.b64decode(f["sample"])) else "regular"
            self.upload_modes[f["path"]] = mode
            answers.append({"path": f["path"], "uploadMode": mode, "shouldIgnore": False, "oid": None})
        return self._json(handler, 200, {"files": answers})

    def _lfs_batch(self, handler, repo_id: str, body: bytes) -> None:
        request = json.loads(body)
        if request.get("operation") != "upload" or "basic" not in request.get("transfers", ["basic"]):
            return self._json(handler, 422, {"message": "this Hub offers the basic upload transfer only"})
        objects = []
        for obj in request["objects"]:
            oid, size = obj["oid"], obj["size"]
            answer = {"oid": oid, "size": size, "authenticated": True}
            with self._lock:
                stored = oid in self._lfs
                signature = self._signatures.setdefault(oid, secrets.token_hex(16))
            if not stored:
                answer["actions"] = {
                    "upload": {"href": f"{self.url}/lfs-upload/{oid}?X-Amz-Signature={signature}"},
                    "verify": {"href": f"{self.url}/{repo_id}.git/info/lfs/objects/verify", "header": {}},
                }
            objects.append(answer)
        headers = {"Content-Type": "application/vnd.git-lfs+json"}
        self._reply(handler, 200, json.dumps({"transfer": "basic", "objects": objects}).encode(), headers)

    def _lfs_put(self, handler, path: str, query: str, body: bytes) -> None:
        if self._fault(handler, "lfs-upload"):
            return None
        m = re.match(r"^/lfs-upload/([0-9a-f]{64})$", path)
        oid = m.group(1) if m else ""
        if not m or query != f"X-Amz-Signature={self._signatures.get(oid)}":
            return self._reply(handler, 403, b"<Error><Code>SignatureDoesNotMatch</Code></Error>")
        if hashlib.sha256(body).hexdigest() != oid:
            return self._reply(handler, 400, b"<Error><Code>BadDigest</Code></Error>")
        with self._lock:
            self._lfs[oid] = body
            self.lfs_puts.append(oid)
        return self._reply(handler, 200, b"", {"ETag": f'"{hashlib.md5(body).hexdigest()}"'})

    def _lfs_verify(self, handler, repo_id: str, body: bytes) -> None:
        request = json.loads(body)
        stored = self._lfs.get(request["oid"])
        self.lfs_verified.append(request["oid"])
        if stored is None or len(stored) != request["size"]:
            return self._json(handler, 404, {"message": f"object {request['oid']} was not uploaded"})
        return self._json(handler, 200, {"message": "Object verified"})

    def _commit(self, handler, repo_id: str, revision: str, body: bytes) -> None:
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        commit = {"repo_id": repo_id, "revision": revision, "header": None, "files": {}, "lfs_files": []}
        written: dict[str, bytes] = {}
        for line in lines:
            key, value = line["key"], line["value"]
            if key == "header":
                commit["header"] = value
            elif key == "file":
                written[value["path"]] = base64.b64decode(value["content"])
            elif key == "lfsFile":
                data = self._lfs.get(value["oid"])
                if data is None or len(data) != value["size"]:
                    message = f"Your push was rejected: the LFS object of {value['path']} was not uploaded"
                    return self._json(handler, 422, {"error": message})
                written[value["path"]] = data
                commit["lfs_files"].append(value["path"])
            else:
                return self._json(handler, 400, {"error": f"this test hub takes files and LFS files only, got {key}"})
        dest = self.repo_dir(repo_id, revision)
        for name, data in written.items():
            commit["files"][name] = hashlib.sha256(data).hexdigest()
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            (dest / name).write_bytes(data)
        self.commits.append(commit)
        oid = self.commit_id(repo_id, revision)
        return self._json(handler, 200, {"commitUrl": f"{self.url}/{repo_id}/commit/{oid}", "commitOid": oid})
