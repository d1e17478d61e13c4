"""A small Hugging Face Hub-compatible HTTP server for the tests (127.0.0.1 only, no internet).

It implements the part of the Hub HTTP API that `huggingface_hub` (2.x, Xet disabled with
`HF_HUB_DISABLE_XET=1`) calls to create a repo, create a branch, upload (preupload + LFS basic
transfer + commit), resolve revisions, list files and download them:

    GET  /api/whoami-v2                                   who owns the token
    POST /api/validate-yaml                               README.md metadata check (always valid)
    POST /api/repos/create                                create a model repo (409 if it exists)
    GET  /api/models?author=A&filter=TAG                  list repos (author, tags of main's README.md card)
    GET  /api/models/{ns}/{name}[/revision/{rev}]         repo info: sha + siblings
    GET  /api/models/{ns}/{name}/tree/{rev}[/{path}]      file listing (recursive or not)
    GET  /api/models/{ns}/{name}/refs                     branches
    POST /api/models/{ns}/{name}/branch/{branch}          create a branch (409 if it exists)
    POST /api/models/{ns}/{name}/preupload/{rev}          upload mode per file (lfs for *.safetensors)
    POST /{ns}/{name}.git/info/lfs/objects/batch          LFS batch: an upload href on this server
    PUT  /__lfs__/upload/{oid}?sig=...                    LFS basic-transfer upload (checked sha256)
    POST /__lfs__/verify                                  LFS verify
    POST /api/models/{ns}/{name}/commit/{rev}             ndjson commit (regular + lfsFile + deletes)
    HEAD /{ns}/{name}/resolve/{rev}/{path}                file metadata (X-Repo-Commit, ETag, X-Linked-*)
    GET  /{ns}/{name}/resolve/{rev}/{path}                file content

Each branch points at a real commit (parent, message, file tree); a commit is applied atomically,
so a commit cut off mid-way leaves the branch where it was. Errors carry the headers the client
maps to its exceptions (`X-Error-Code: RepoNotFound | RevisionNotFound | EntryNotFound`,
`X-Error-Message`). Tokens: `tokens={"hf_xxx": "write" | "read"}`; a wrong token gets 401 on every
route, a missing or read-only token gets 401 / 403 on write routes, private repos are invisible
without a token.

Fault switches (set on `server.state`): `cut_commit = True` closes the connection in the middle of
the next commit request (nothing is committed); `truncate_downloads = {"file.safetensors"}` serves
half of that file's bytes on GET.

Run by hand: `python tests/hub_server.py --port 8765 --token hf_test` then
`HF_ENDPOINT=http://127.0.0.1:8765 HF_HUB_DISABLE_XET=1 HF_TOKEN=hf_test metalora push ...`.
"""
from __future__ import annotations

import base64
import hashlib
import itertools
import json
import secrets
import socket
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".pkl", ".h5", ".msgpack", ".gguf")
GITATTRIBUTES = b"".join(f"*{s} filter=lfs diff=lfs merge=lfs -text\n".encode() for s in LFS_SUFFIXES)


def git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


@dataclass
class FileEntry:
    path: str
    size: int
    sha256: str  # key of the content in the blob store
    lfs: bool

    @property
    def pointer(self) -> bytes:
        return lfs_pointer(self.sha256, self.size)

    def blob_id(self, content: bytes | None) -> str:
        # what git would store: the pointer file for LFS files, the content otherwise
        return git_blob_oid(self.pointer) if self.lfs else git_blob_oid(content or b"")


@dataclass
class Commit:
    oid: str
    parent: str | None
    message: str
    files: dict[str, FileEntry]
    date: str


@dataclass
class Repo:
    repo_id: str
    private: bool
    branches: dict[str, str] = field(default_factory=dict)
    commits: dict[str, Commit] = field(default_factory=dict)

    def resolve(self, revision: str) -> Commit | None:
        if revision in self.branches:
            return self.commits[self.branches[revision]]
        if len(revision) == 40 and revision in self.commits:
            return self.commits[revision]
        return None


class HubState:
    """All repos, blobs and switches of one server; thread-safe."""

    def __init__(self, root: Path, tokens: dict[str, str], user: str = "metalora-tester"):
        self.root = Path(root)
        self.blob_dir = self.root / "blobs"
        self.blob_dir.mkdir(parents=True, exist_ok=True)
        self.tokens = dict(tokens)
        self.user = user
        self.repos: dict[str, Repo] = {}
        self.lock = threading.RLock()
        self.upload_sigs: dict[str, str] = {}  # signature -> oid allowed to be PUT
        self.requests: list[tuple[str, str]] = []  # (method, path) log, for assertions
        self.unhandled: list[tuple[str, str]] = []  # routes the server does not know
        self.cut_commit = False
        self.truncate_downloads: set[str] = set()
        self._counter = itertools.count()

    # -- blobs ---------------------------------------------------------------------------------
    def put_blob(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        path = self.blob_dir / sha
        if not path.exists():
            tmp = path.with_suffix(f".tmp{secrets.token_hex(4)}")
            tmp.write_bytes(data)
            tmp.replace(path)
        return sha

    def has_blob(self, sha: str) -> bool:
        return (self.blob_dir / sha).is_file()

    def blob(self, sha: str) -> bytes:
        return (self.blob_dir / sha).read_bytes()

    # -- repos ---------------------------------------------------------------------------------
    def new_commit(self, repo: Repo, parent: str | None, message: str, files: dict[str, FileEntry]) -> Commit:
        tree = "\n".join(f"{p} {f.sha256}" for p, f in sorted(files.items()))
        oid = hashlib.sha1(f"{repo.repo_id}\n{parent}\n{message}\n{tree}\n{next(self._counter)}".encode()).hexdigest()
        date = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        commit = Commit(oid, parent, message, dict(files), date)
        repo.commits[oid] = commit
        return commit

    def create_repo(self, repo_id: str, private: bool) -> Repo:
        repo = Repo(repo_id, private)
        sha = self.put_blob(GITATTRIBUTES)
        files = {".gitattributes": FileEntry(".gitattributes", len(GITATTRIBUTES), sha, False)}
        commit = self.new_commit(repo, None, "initial commit", files)
        repo.branches["main"] = commit.oid
        self.repos[repo_id] = repo
        return repo

    def commit_files(self, repo_id: str, branch: str) -> dict[str, FileEntry]:
        """Files at a branch or commit (for tests)."""
        repo = self.repos[repo_id]
        return dict(repo.resolve(branch).files)

    def file_bytes(self, repo_id: str, revision: str, path: str) -> bytes:
        return self.blob(self.repos[repo_id].resolve(revision).files[path].sha256)


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}


class _Disconnect(Exception):
    """Close the connection without answering."""


class HubHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "MiniHub/0.1"
    state: HubState  # set on the subclass by HubServer

    def log_message(self, format, *args):  # noqa: A002 - quiet; never log headers (tokens)
        pass

    # -- plumbing ------------------------------------------------------------------------------
    @property
    def base(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def _read_body(self, limit: int | None = None) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                line = self.rfile.readline()
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        if limit is not None:
            length = min(length, limit)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None, content_type: str = "application/json",
              head_only: bool = False, content_length: int | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body) if content_length is None else content_length))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if not head_only and body:
            self.wfile.write(body)

    def _json(self, status: int, data, headers: dict | None = None) -> None:
        self._send(status, json.dumps(data).encode(), headers)

    def _error(self, err: HubError, head_only: bool = False) -> None:
        headers = {"X-Error-Message": err.message, **err.headers}
        if err.code:
            headers["X-Error-Code"] = err.code
        self._send(err.status, json.dumps({"error": err.message}).encode(), headers, head_only=head_only)

    def _token_role(self) -> str | None:
        """None (no token), 'read' or 'write'; a wrong token is a 401 right away."""
        auth = self.headers.get("Authorization")
        if not auth:
            return None
        scheme, _, token = auth.partition(" ")
        role = self.state.tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if role is None:
            raise HubError(401, "Invalid credentials in Authorization header")
        return role

    def _require_write(self) -> None:
        role = self._token_role()
        if role is None:
            raise HubError(401, "You must be authenticated (send a write token) to use this endpoint")
        if role != "write":
            raise HubError(403, "You don't have the rights to write to this repository: the token is read-only")

    def _repo(self, ns: str, name: str, for_write: bool = False) -> Repo:
        repo_id = f"{unquote(ns)}/{unquote(name)}"
        role = self._token_role()
        with self.state.lock:
            repo = self.state.repos.get(repo_id)
        if repo is None or (repo.private and role is None):
            raise HubError(404 if role else 401, "Repository not found", "RepoNotFound")
        if for_write:
            self._require_write()
        return repo

    def _commit(self, repo: Repo, revision: str) -> Commit:
        revision = unquote(revision)
        with self.state.lock:
            commit = repo.resolve(revision)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return commit

    # -- dispatch ------------------------------------------------------------------------------
    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        parts = url.path.strip("/").split("/")  # raw (still quoted) segments
        query = parse_qs(url.query)
        self.state.requests.append((method, url.path))
        head = method == "HEAD"
        try:
            handled = self._route(method, parts, query)
            if not handled:
                self.state.unhandled.append((method, url.path))
                self._read_body()
                raise HubError(404, f"Unknown route {method} {url.path}")
        except _Disconnect:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        except HubError as err:
            if method in ("POST", "PUT") and not getattr(self, "_body_read", False):
                self._read_body()  # keep the connection usable
            self._error(err, head_only=head)

    def _body(self) -> bytes:
        self._body_read = True
        return self._read_body()

    def _route(self, method: str, p: list[str], query: dict) -> bool:
        self._body_read = False
        if p[:2] == ["api", "whoami-v2"] and method == "GET":
            role = self._token_role()
            if role is None:
                raise HubError(401, "Invalid username or password.")
            self._json(200, {"type": "user", "name": self.state.user, "orgs": [],
                             "auth": {"type": "access_token", "accessToken": {"role": role, "displayName": "test"}}})
            return True
        if p[:2] == ["api", "validate-yaml"] and method == "POST":
            self._body()
            self._json(200, {"errors": [], "warnings": []})
            return True
        if p[:3] == ["api", "repos", "create"] and method == "POST":
            return self._create_repo()
        if p == ["api", "models"] and method == "GET":
            return self._list_models(query)
        if p[:2] == ["api", "models"] and len(p) >= 4:
            ns, name, rest = p[2], p[3], p[4:]
            if not rest and method == "GET":
                return self._repo_info(ns, name, "main")
            if len(rest) == 2 and rest[0] == "revision" and method == "GET":
                return self._repo_info(ns, name, rest[1])
            if len(rest) >= 2 and rest[0] == "tree" and method == "GET":
                return self._tree(ns, name, rest[1], "/".join(unquote(x) for x in rest[2:]), query)
            if rest == ["refs"] and method == "GET":
                return self._refs(ns, name)
            if len(rest) == 2 and rest[0] == "branch" and method == "POST":
                return self._create_branch(ns, name, rest[1])
            if len(rest) == 2 and rest[0] == "preupload" and method == "POST":
                return self._preupload(ns, name, rest[1])
            if len(rest) == 2 and rest[0] == "commit" and method == "POST":
                return self._commit_route(ns, name, rest[1], query)
            return False
        if len(p) == 6 and p[1].endswith(".git") and p[2:] == ["info", "lfs", "objects", "batch"] and method == "POST":
            return self._lfs_batch(p[0], p[1][: -len(".git")])
        if p[:2] == ["__lfs__", "upload"] and len(p) == 3 and method == "PUT":
            return self._lfs_put(p[2], query)
        if p[:2] == ["__lfs__", "verify"] and method == "POST":
            return self._lfs_verify()
        if len(p) >= 5 and p[2] == "resolve" and method in ("GET", "HEAD"):
            return self._resolve(p[0], p[1], p[3], "/".join(unquote(x) for x in p[4:]), method == "HEAD")
        return False

    # -- routes --------------------------------------------------------------------------------
    def _create_repo(self) -> bool:
        self._require_write()
        payload = json.loads(self._body() or b"{}")
        if payload.get("type") not in (None, "model"):
            raise HubError(400, "Only model repos are supported by this test server")
        name, org = payload.get("name"), payload.get("organization") or self.state.user
        repo_id = f"{org}/{name}"
        private = payload.get("private") or payload.get("visibility") == "private"
        with self.state.lock:
            if repo_id in self.state.repos:
                self._json(409, {"error": "You already created this model repo", "url": f"{self.base}/{repo_id}"},
                           {"X-Error-Message": "You already created this model repo"})
                return True
            self.state.create_repo(repo_id, bool(private))
        self._json(200, {"url": f"{self.base}/{repo_id}", "name": repo_id, "id": repo_id})
        return True

    def _card_tags(self, repo) -> list[str]:
        import yaml

        commit = self._commit(repo, "main")
        if "README.md" not in commit.files:
            return []
        text = self.state.blob(commit.files["README.md"].sha256).decode("utf-8", "replace")
        if not text.startswith("---"):
            return []
        header = yaml.safe_load(text.split("---", 2)[1]) or {}
        return [str(t) for t in header.get("tags") or []]

    def _list_models(self, query: dict) -> bool:
        author = query.get("author", [None])[0]
        tags = set(query.get("filter", []))
        role = self._token_role()
        out = []
        with self.state.lock:
            repos = list(self.state.repos.values())
        for repo in sorted(repos, key=lambda r: r.repo_id):
            if repo.private and role is None:
                continue
            if author and repo.repo_id.split("/")[0] != author:
                continue
            repo_tags = self._card_tags(repo)
            if tags - set(repo_tags):
                continue
            out.append({"_id": repo.repo_id, "id": repo.repo_id, "modelId": repo.repo_id, "author": repo.repo_id.split("/")[0],
                        "private": repo.private, "tags": repo_tags, "library_name": "peft"})
        self._json(200, out)
        return True

    def _repo_info(self, ns: str, name: str, revision: str) -> bool:
        repo = self._repo(ns, name)
        commit = self._commit(repo, revision)
        siblings = [{"rfilename": path} for path in sorted(commit.files)]
        self._json(200, {
            "_id": repo.repo_id, "id": repo.repo_id, "modelId": repo.repo_id, "author": repo.repo_id.split("/")[0],
            "sha": commit.oid, "lastModified": commit.date, "private": repo.private, "disabled": False,
            "gated": False, "tags": [], "siblings": siblings, "library_name": "peft",
        })
        return True

    def _entry_json(self, entry: FileEntry) -> dict:
        content = None if entry.lfs else self.state.blob(entry.sha256)
        data = {"type": "file", "oid": entry.blob_id(content), "size": entry.size, "path": entry.path}
        if entry.lfs:
            data["lfs"] = {"oid": entry.sha256, "size": entry.size, "pointerSize": len(entry.pointer)}
        return data

    def _tree(self, ns: str, name: str, revision: str, subpath: str, query: dict) -> bool:
        repo = self._repo(ns, name)
        commit = self._commit(repo, revision)
        recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
        prefix = f"{subpath.strip('/')}/" if subpath.strip("/") else ""
        out, dirs = [], set()
        for path in sorted(commit.files):
            if not path.startswith(prefix):
                continue
            rest = path[len(prefix):]
            if "/" in rest:
                parts = rest.split("/")
                for depth in range(1, len(parts) if recursive else 2):
                    dirs.add(prefix + "/".join(parts[:depth]))
                if not recursive:
                    continue
            out.append(self._entry_json(commit.files[path]))
        if prefix and not out and not dirs:
            raise HubError(404, f"Entry not found: {subpath}", "EntryNotFound")
        out += [{"type": "directory", "oid": hashlib.sha1(d.encode()).hexdigest(), "size": 0, "path": d}
                for d in sorted(dirs)]
        self._json(200, out)
        return True

    def _refs(self, ns: str, name: str) -> bool:
        repo = self._repo(ns, name)
        with self.state.lock:
            branches = [{"name": b, "ref": f"refs/heads/{b}", "targetCommit": oid} for b, oid in repo.branches.items()]
        self._json(200, {"branches": branches, "tags": [], "converts": []})
        return True

    def _create_branch(self, ns: str, name: str, branch: str) -> bool:
        repo = self._repo(ns, name, for_write=True)
        branch = unquote(branch)
        payload = json.loads(self._body() or b"{}")
        start = self._commit(repo, payload.get("startingPoint") or "main")
        with self.state.lock:
            if branch in repo.branches:
                raise HubError(409, f"Reference already exists: refs/heads/{branch}")
            repo.branches[branch] = start.oid
        self._json(200, {})
        return True

    def _preupload(self, ns: str, name: str, revision: str) -> bool:
        repo = self._repo(ns, name, for_write=True)
        payload = json.loads(self._body() or b"{}")
        with self.state.lock:
            commit = repo.resolve(unquote(revision))
        files = []
        for item in payload.get("files", []):
            path = item["path"]
            lfs = path.endswith(LFS_SUFFIXES)
            existing = commit.files.get(path) if commit else None
            oid = None
            if existing is not None and existing.lfs == lfs:
                oid = existing.sha256 if lfs else existing.blob_id(self.state.blob(existing.sha256))
            files.append({"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid})
        self._json(200, {"files": files, "commitOid": commit.oid if commit else None})
        return True

    def _lfs_batch(self, ns: str, name: str) -> bool:
        self._repo(ns, name, for_write=True)
        payload = json.loads(self._body() or b"{}")
        objects = []
        for obj in payload.get("objects", []):
            oid, size = obj["oid"], int(obj["size"])
            entry = {"oid": oid, "size": size, "authenticated": True}
            if not self.state.has_blob(oid):
                sig = secrets.token_hex(16)
                with self.state.lock:
                    self.state.upload_sigs[sig] = oid
                entry["actions"] = {
                    "upload": {"href": f"{self.base}/__lfs__/upload/{oid}?sig={sig}"},
                    "verify": {"href": f"{self.base}/__lfs__/verify"},
                }
            objects.append(entry)
        self._send(200, json.dumps({"transfer": "basic", "objects": objects}).encode(),
                   content_type="application/vnd.git-lfs+json")
        return True

    def _lfs_put(self, oid: str, query: dict) -> bool:
        sig = query.get("sig", [""])[0]
        with self.state.lock:
            allowed = self.state.upload_sigs.get(sig) == oid
        data = self._body()
        if not allowed:
            raise HubError(403, "Invalid or expired upload signature")
        if hashlib.sha256(data).hexdigest() != oid:
            raise HubError(400, "Uploaded content does not match its sha256")
        self.state.put_blob(data)
        self._send(200, b"", {"ETag": f'"{oid}"'})
        return True

    def _lfs_verify(self) -> bool:
        self._require_write()
        payload = json.loads(self._body() or b"{}")
        if not self.state.has_blob(payload.get("oid", "")):
            raise HubError(404, "LFS object not found")
        self._json(200, {"success": True})
        return True

    def _commit_route(self, ns: str, name: str, revision: str, query: dict) -> bool:
        repo = self._repo(ns, name, for_write=True)
        if query.get("create_pr"):
            raise HubError(400, "Pull requests are not supported by this test server")
        branch = unquote(revision)
        if self.state.cut_commit:
            self.state.cut_commit = False
            length = int(self.headers.get("Content-Length") or 0)
            self._read_body(limit=max(length // 2, 1))  # read half the payload, then hang up
            raise _Disconnect()
        body = self._body()
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        header = next((x["value"] for x in lines if x["key"] == "header"), {})
        with self.state.lock:
            if branch not in repo.branches:
                raise HubError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
            head = repo.commits[repo.branches[branch]]
            if header.get("parentCommit") and header["parentCommit"] != head.oid:
                raise HubError(412, "A commit has happened since the parent commit; rebase and retry")
            files = dict(head.files)
            for item in lines:
                key, value = item["key"], item.get("value", {})
                if key == "file":
                    data = base64.b64decode(value["content"]) if value.get("encoding") == "base64" else value["content"].encode()
                    files[value["path"]] = FileEntry(value["path"], len(data), self.state.put_blob(data), False)
                elif key == "lfsFile":
                    if not self.state.has_blob(value["oid"]):
                        raise HubError(422, f"LFS object {value['oid']} for {value['path']} was not uploaded")
                    size = value.get("size") or len(self.state.blob(value["oid"]))
                    files[value["path"]] = FileEntry(value["path"], int(size), value["oid"], True)
                elif key == "deletedFile":
                    if files.pop(value["path"], None) is None:
                        raise HubError(404, f"A file with this name doesn't exist: {value['path']}", "EntryNotFound")
                elif key == "deletedFolder":
                    prefix = value["path"].rstrip("/") + "/"
                    for path in [p for p in files if p.startswith(prefix)]:
                        del files[path]
                elif key != "header":
                    raise HubError(400, f"Unsupported commit operation {key!r}")
            commit = self.state.new_commit(repo, head.oid, header.get("summary") or "commit", files)
            repo.branches[branch] = commit.oid
        self._json(200, {"success": True, "commitOid": commit.oid, "commitUrl": f"{self.base}/{repo.repo_id}/commit/{commit.oid}",
                         "hookOutput": "", "pullRequestUrl": None})
        return True

    def _resolve(self, ns: str, name: str, revision: str, path: str, head: bool) -> bool:
        repo = self._repo(ns, name)
        commit = self._commit(repo, revision)
        entry = commit.files.get(path)
        if entry is None:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound", {"X-Repo-Commit": commit.oid})
        content = self.state.blob(entry.sha256)
        headers = {"X-Repo-Commit": commit.oid, "Accept-Ranges": "bytes"}
        if entry.lfs:
            headers.update({"ETag": f'"{entry.sha256}"', "X-Linked-Etag": f'"{entry.sha256}"', "X-Linked-Size": str(entry.size)})
        else:
            headers["ETag"] = f'"{entry.blob_id(content)}"'
        if not head and path.rsplit("/", 1)[-1] in self.state.truncate_downloads:
            content = content[: len(content) // 2]  # the connection "drops" half-way: short body
        elif not head and (rng := self.headers.get("Range", "")).startswith("bytes="):
            start = int(rng[6:].split("-")[0] or 0)
            headers["Content-Range"] = f"bytes {start}-{len(content) - 1}/{len(content)}"
            self._send(206, content[start:], headers, content_type="application/octet-stream")
            return True
        self._send(200, content, headers, content_type="application/octet-stream", head_only=head,
                   content_length=entry.size if head else None)
        return True


class HubServer:
    """A running server: `.url`, `.state`, `.close()`; also a context manager."""

    def __init__(self, root: Path, tokens: dict[str, str], host: str = "127.0.0.1", port: int = 0):
        self.state = HubState(root, tokens)
        handler = type("BoundHubHandler", (HubHandler,), {"state": self.state})
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self.url = f"http://{host}:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="mini-hub", daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)

    def __enter__(self) -> "HubServer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def free_port() -> int:
    """A port nothing listens on (for network-error tests)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":  # pragma: no cover - manual use
    import argparse
    import tempfile
    import time

    parser = argparse.ArgumentParser(description="Run the test Hub server.")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--token", default="hf_test_token", help="write token accepted by the server")
    parser.add_argument("--root", default=None, help="storage folder (default: a temp folder)")
    a = parser.parse_args()
    root = Path(a.root or tempfile.mkdtemp(prefix="minihub-"))
    server = HubServer(root, {a.token: "write"}, port=a.port)
    print(f"mini hub on {server.url} storing in {root}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.close()
