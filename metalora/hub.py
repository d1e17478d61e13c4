"""Push adapters and meta-inits to the Hugging Face Hub and pull them back.

Everything goes through `huggingface_hub` (`HfApi.create_repo`, `create_branch`, `upload_folder`,
`model_info`, `snapshot_download`) and honours its environment: `HF_ENDPOINT` (a mirror or a local
Hub), `HF_TOKEN` (or the token saved by `hf auth login`), `HF_HOME` / `HF_HUB_CACHE` (where pulls are
cached) and `HF_HUB_OFFLINE` (pull from the cache only). These are read when a function is called,
not only when `huggingface_hub` was imported, so a process may set them late.

What is pushed: exactly the adapter files (`adapter_config.json`, `adapter_model.safetensors`,
`metalora.json`, and `metalora_*.safetensors` such as the head and a meta-init's
`metalora_init.safetensors`) plus a generated model card `README.md`
(see `metalora.model_card`). They are staged in a temporary folder and sent as ONE commit, so the
user's folder is never modified and a cut-off upload leaves the repo at its previous revision.
Other files in the folder (logs, checkpoints) are not uploaded; pickled weights (`*.bin`, `*.pt`,
`*.pth`, `*.pkl`, `*.ckpt`) make the push fail, since nobody should have to unpickle them.

What is pulled: the same safe files only (never `*.bin`/`*.py`; nothing is loaded with
`trust_remote_code`). A repo whose weights exist only in pickled form is refused before any
download. Pulls go into the standard Hugging Face cache (so `HF_HUB_OFFLINE=1` works afterwards)
and are returned from there, or copied into `to=DIR` atomically (temp folder + rename). A
non-empty `DIR` is only replaced when it is an earlier pull of the same repo (it carries a
`.metalora-hub.json` marker); anything else is refused. A failed pull leaves no partial snapshot
and no half-written `DIR` behind.

Every failure a user can act on is one `HubError` line: repo or revision not found, no token, token
rejected (401) or without write access (403), network errors, offline mode with nothing cached,
pickled-only repos. Tokens are never printed, logged or written.
"""
from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from metalora import __version__
from metalora.errors import BackboneError, HubError
from metalora.jsonfile import read_object

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
HEAD_WEIGHTS = "metalora_head.safetensors"
METADATA = "metalora.json"
CARD = "README.md"
MARKER = ".metalora-hub.json"  # written into `pull(to=DIR)` folders: which repo/commit they hold

INIT_WEIGHTS = "metalora_init.safetensors"  # meta-inits: logit scale, Meta-SGD learning rates
METALORA_WEIGHTS = "metalora_*.safetensors"  # head, init and any later metalora-owned tensors
REQUIRED_FILES = (ADAPTER_CONFIG, ADAPTER_WEIGHTS, METADATA)
PULL_FILES = [ADAPTER_CONFIG, ADAPTER_WEIGHTS, METADATA, METALORA_WEIGHTS, CARD]
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


# -- environment ---------------------------------------------------------------------------------
def _truthy(value: str | None) -> bool:
    return (value or "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def endpoint() -> str:
    """The Hub URL in use: `HF_ENDPOINT`, else huggingface_hub's default."""
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def cache_dir() -> Path:
    """The Hugging Face hub cache: `HF_HUB_CACHE`, else `HF_HOME/hub`, else huggingface_hub's default."""
    from huggingface_hub import constants

    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.path.expandvars(os.environ["HF_HUB_CACHE"])).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.path.expandvars(os.environ["HF_HOME"])).expanduser() / "hub"
    return Path(constants.HF_HUB_CACHE)


def offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or _truthy(os.environ.get("HF_HUB_OFFLINE")) or _truthy(
        os.environ.get("TRANSFORMERS_OFFLINE"))


def _token(token: str | None) -> str | None:
    if token:
        return token
    from huggingface_hub import get_token

    return get_token()


def _api(token: str | None):
    from huggingface_hub import HfApi

    return HfApi(endpoint=endpoint(), token=token, library_name="metalora", library_version=__version__)


# -- specs ---------------------------------------------------------------------------------------
def parse_spec(spec: str) -> tuple[str, str | None]:
    """`org/name`, `org/name@rev`, `hf://org/name@rev` (also `hf://models/org/name`) -> (repo_id, revision)."""
    text = str(spec).strip()
    if text.startswith("hf://"):
        text = text[len("hf://"):]
        text = text.removeprefix("models/")
    repo_id, sep, revision = text.partition("@")
    repo_id = repo_id.strip("/")
    if not _REPO_ID.match(repo_id) or "--" in repo_id or ".." in repo_id:
        raise HubError(f"{spec!r} is not a Hub repo id: expected ORG/NAME, ORG/NAME@REVISION or hf://ORG/NAME@REVISION")
    if sep and not revision.strip():
        raise HubError(f"{spec!r} has an empty revision after '@'")
    return repo_id, (revision.strip() if sep else None)


def looks_like_spec(text: str) -> bool:
    try:
        parse_spec(text)
    except HubError:
        return False
    return True


# -- errors --------------------------------------------------------------------------------------
def _scrub(message: str, token: str | None) -> str:
    message = " ".join(str(message).split())
    if token:
        message = message.replace(token, "***")
    return re.sub(r"\bhf_[A-Za-z0-9]{8,}\b", "hf_***", message)


def _root_causes(exc: BaseException) -> Iterator[BaseException]:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


@contextlib.contextmanager
def _hub_errors(action: str, repo_id: str, revision: str | None, token: str | None) -> Iterator[None]:
    """Turn huggingface_hub / network exceptions into one clear HubError line."""
    import httpx2
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"{repo_id}" + (f"@{revision}" if revision else "")
    url = endpoint()
    try:
        yield
    except HubError:
        raise
    except Exception as exc:  # noqa: BLE001 - translated below, or re-raised untouched
        for err in _root_causes(exc):
            if isinstance(err, RevisionNotFoundError):
                raise HubError(f"cannot {action} {repo_id}: revision {revision or 'main'!r} does not exist on "
                               f"{url} (check the branch name or commit; `metalora push --revision BRANCH` creates "
                               "a branch)") from None
            if isinstance(err, GatedRepoError):
                raise HubError(f"cannot {action} {repo_id}: the repo is gated on {url}; accept its conditions on the "
                               "website with the account of your HF_TOKEN") from None
            if isinstance(err, RepositoryNotFoundError):
                raise HubError(f"cannot {action} {where}: repository {repo_id!r} not found on {url} (check the name; "
                               "if it is private, set HF_TOKEN to a token that can read it)") from None
            if isinstance(err, HfHubHTTPError):
                status = err.response.status_code if err.response is not None else None
                server = _scrub(err.server_message or "", token)
                detail = f" (server said: {server})" if server else ""
                if status == 401:
                    sent = "the token was rejected" if token else "no token was sent"
                    raise HubError(f"cannot {action} {where}: {url} answered 401 Unauthorized, {sent}{detail}; set "
                                   "HF_TOKEN to a valid token (or run `hf auth login`)") from None
                if status == 403:
                    raise HubError(f"cannot {action} {where}: {url} answered 403 Forbidden{detail}; the token has no "
                                   "write access there: use a token with write permission for this namespace") from None
                raise HubError(f"cannot {action} {where}: {url} answered HTTP {status}{detail}") from None
            if isinstance(err, OfflineModeIsEnabled):
                raise HubError(f"cannot {action} {where}: offline mode is on (HF_HUB_OFFLINE=1); unset it to reach "
                               f"{url}") from None
            if isinstance(err, httpx2.TransportError):
                kind = type(err).__name__
                tail = (" The upload did not complete and nothing was committed: the repo keeps its previous revision;"
                        " run the push again." if action == "push to" else " Nothing was kept; run it again.")
                raise HubError(f"cannot {action} {where}: network error talking to {url} ({kind}: "
                               f"{_scrub(err, token) or 'connection lost'}).{tail}") from None
            if isinstance(err, LocalEntryNotFoundError):
                raise HubError(f"cannot {action} {where}: {url} could not be reached and it is not in the local cache "
                               f"({_scrub(err, token)})") from None
            if isinstance(err, OSError) and "Consistency check failed" in str(err):
                raise HubError(f"cannot {action} {where}: a download from {url} was cut off "
                               "(file size mismatch); nothing was kept; run it again") from None
        raise


# -- folders -------------------------------------------------------------------------------------
def _json(path: Path) -> dict:
    return read_object(path, error=HubError)


def _check_safetensors(path: Path) -> None:
    """Cheap format check: 8-byte little-endian header length + a JSON header (no unpickling possible)."""
    try:
        with path.open("rb") as f:
            size = int.from_bytes(f.read(8), "little")
            if not 2 <= size <= 100_000_000:
                raise ValueError("bad header length")
            header = json.loads(f.read(size))
            if not isinstance(header, dict):
                raise ValueError("header is not a JSON object")
            # a file cut off after its header (a full disk, a partial copy) is shorter than its tensors say
            end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
            if path.stat().st_size < 8 + size + end:
                raise ValueError(f"cut off: {path.stat().st_size} bytes, its header describes {8 + size + end}")
    except (OSError, ValueError, UnicodeDecodeError, KeyError, TypeError, IndexError) as exc:
        raise HubError(f"{path} is not a valid safetensors file ({exc}); re-save the adapter with "
                       "safetensors") from None


def validate_folder(folder: str | Path) -> list[str]:
    """Check a folder is a pushable adapter / meta-init; returns the file names to upload."""
    folder = Path(folder)
    if not folder.is_dir():
        raise HubError(f"{folder} is not a folder: push expects an adapter or meta-init folder")
    pickled = sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                     if p.is_file() and p.suffix.lower() in PICKLE_SUFFIXES)
    if pickled:
        raise HubError(f"{folder} contains pickled files ({', '.join(pickled)}); metalora only shares safetensors. "
                       "Remove them (re-save with safe_serialization=True) and push again")
    missing = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
    if missing:
        raise HubError(f"{folder} is not a metalora adapter folder: missing {', '.join(missing)} "
                       "(save it with metalora adapt / meta-train first)")
    meta = _json(folder / METADATA)
    if meta.get("kind", "adapter") not in ("adapter", "meta-init"):
        raise HubError(f"{folder / METADATA}: kind must be 'adapter' or 'meta-init', got {meta.get('kind')!r}")
    _json(folder / ADAPTER_CONFIG)
    files = [ADAPTER_CONFIG, ADAPTER_WEIGHTS, METADATA] + sorted(p.name for p in folder.glob(METALORA_WEIGHTS)
                                                                 if p.is_file())
    for name in files:
        if name.endswith(".safetensors"):
            _check_safetensors(folder / name)
    return files


def check_base_model(folder: str | Path, backbone_base_model: str) -> None:
    """Raise BackboneError unless the adapter in `folder` was trained on `backbone_base_model`."""
    folder = Path(folder)

    def canon(name: str | None) -> str | None:
        if not name:
            return None
        name = str(name).strip().rstrip("/")
        try:  # short names (minilm) and their canonical Hub ids are the same model
            from metalora.backbones import ALIASES, KNOWN

            name = KNOWN[ALIASES.get(name, name)].base_model if ALIASES.get(name, name) in KNOWN else name
        except ImportError:  # pragma: no cover
            pass
        return name

    claims = {}
    if (folder / ADAPTER_CONFIG).is_file():
        claims[ADAPTER_CONFIG] = _json(folder / ADAPTER_CONFIG).get("base_model_name_or_path")
    if (folder / METADATA).is_file():
        claims[METADATA] = (_json(folder / METADATA).get("backbone") or {}).get("base_model")
    claims = {k: v for k, v in claims.items() if v}
    if not claims:
        raise BackboneError(f"{folder}: neither {ADAPTER_CONFIG} nor {METADATA} says which base model the adapter "
                            "was trained on; cannot check it against the backbone")
    want = canon(backbone_base_model)
    for source, name in claims.items():
        if canon(name) != want:
            raise BackboneError(
                f"adapter {folder} was trained on base model {name!r} ({source}) but the backbone in use is "
                f"{backbone_base_model!r}; LoRA weights only fit the model they were trained on: use "
                f"--backbone {name} (or a meta-init / adapter made for {backbone_base_model!r})")


# -- push ----------------------------------------------------------------------------------------
def push(folder: str | Path, repo_id: str, *, private: bool = False, revision: str | None = None,
         commit_message: str | None = None, token: str | None = None) -> str:
    """Push an adapter / meta-init folder (+ generated model card) as one commit; returns the commit oid."""
    from metalora.model_card import build_model_card

    folder = Path(folder)
    spec_repo, spec_rev = parse_spec(repo_id)
    if spec_rev and revision and spec_rev != revision:
        raise HubError(f"two revisions given: {repo_id!r} and --revision {revision!r}")
    repo_id, revision = spec_repo, revision or spec_rev
    if revision and _COMMIT.match(revision):
        raise HubError(f"cannot push to commit {revision}: --revision must be a branch name")
    files = validate_folder(folder)
    if offline():
        raise HubError(f"cannot push to {repo_id}: offline mode is on (HF_HUB_OFFLINE=1); unset it to push")
    token = _token(token)
    if not token:
        raise HubError(f"cannot push to {repo_id}: no Hugging Face token found; set HF_TOKEN to a token with "
                       "write access (or run `hf auth login`)")
    card = build_model_card(folder, repo_id=repo_id, endpoint=endpoint())
    api = _api(token)
    message = commit_message or f"metalora {_json(folder / METADATA).get('kind', 'adapter')} upload"
    with _hub_errors("push to", repo_id, revision, token):
        api.create_repo(repo_id, private=True if private else None, exist_ok=True, repo_type="model")
        if revision and revision != "main":
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="metalora-push-") as stage:
            for name in files:
                shutil.copy2(folder / name, Path(stage) / name)
            (Path(stage) / CARD).write_text(str(card), encoding="utf-8")
            info = api.upload_folder(repo_id=repo_id, folder_path=stage, revision=revision,
                                     commit_message=message, repo_type="model")
    return info.oid


# -- pull ----------------------------------------------------------------------------------------
def _storage(repo_id: str) -> Path:
    return cache_dir() / ("models--" + repo_id.replace("/", "--"))


def _check_remote_files(names: set[str], repo_id: str, revision: str | None) -> None:
    where = repo_id + (f"@{revision}" if revision else "")
    if ADAPTER_WEIGHTS in names and ADAPTER_CONFIG in names:
        return
    pickled = sorted(n for n in names if n.lower().endswith(PICKLE_SUFFIXES))
    if ADAPTER_WEIGHTS not in names and pickled:
        raise HubError(f"refusing to pull {where}: its weights are only pickled ({', '.join(pickled)}), which could "
                       f"run code when loaded; metalora loads {ADAPTER_WEIGHTS} only. Ask the author to push "
                       "safetensors (PeftModel.save_pretrained(..., safe_serialization=True))")
    missing = [n for n in (ADAPTER_CONFIG, ADAPTER_WEIGHTS) if n not in names]
    raise HubError(f"{where} is not a LoRA adapter repo: missing {', '.join(missing)}")


def _verify_local(folder: Path, where: str) -> None:
    missing = [n for n in (ADAPTER_CONFIG, ADAPTER_WEIGHTS) if not (folder / n).is_file()]
    if missing:
        raise HubError(f"pulled {where} but {', '.join(missing)} is missing from {folder}")
    for path in [folder / ADAPTER_WEIGHTS, *folder.glob(METALORA_WEIGHTS)]:
        if path.is_file():
            _check_safetensors(path)


def _snapshot(repo_id: str, revision: str | None, token: str | None, local_only: bool) -> Path:
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(
        repo_id, repo_type="model", revision=revision, cache_dir=str(cache_dir()), endpoint=endpoint(),
        token=token, allow_patterns=PULL_FILES, local_files_only=local_only,
        library_name="metalora", library_version=__version__,
    ))


def _pull_offline(repo_id: str, revision: str | None) -> Path:
    from huggingface_hub.errors import LocalEntryNotFoundError

    where = repo_id + (f"@{revision}" if revision else "")
    try:
        path = _snapshot(repo_id, revision, None, local_only=True)
    except (LocalEntryNotFoundError, FileNotFoundError):
        raise HubError(f"offline mode is on (HF_HUB_OFFLINE=1) and {where} is not in the local cache "
                       f"({cache_dir()}): pull it once with network access, or unset HF_HUB_OFFLINE") from None
    _verify_local(path, where)
    return path


def _pull_online(repo_id: str, revision: str | None, token: str | None) -> Path:
    where = repo_id + (f"@{revision}" if revision else "")
    with _hub_errors("pull", repo_id, revision, token):
        info = _api(token).model_info(repo_id, revision=revision)
    _check_remote_files({s.rfilename for s in info.siblings or []}, repo_id, revision)
    snapshots = _storage(repo_id) / "snapshots"
    before = set(os.listdir(snapshots)) if snapshots.is_dir() else set()
    try:
        with _hub_errors("pull", repo_id, revision, token):
            path = _snapshot(repo_id, revision, token, local_only=False)
        _verify_local(path, where)
    except BaseException:
        # a failed pull leaves no partial snapshot behind (blobs are complete files or absent)
        if snapshots.is_dir():
            for name in set(os.listdir(snapshots)) - before:
                shutil.rmtree(snapshots / name, ignore_errors=True)
        raise
    return path


def _copy_to(source: Path, to: Path, repo_id: str, revision: str | None) -> Path:
    to = Path(to).expanduser()
    if to.exists() and not to.is_dir():
        raise HubError(f"--to {to} exists and is not a folder")
    if to.is_dir() and any(to.iterdir()):
        marker = to / MARKER
        previous = _json(marker).get("repo_id") if marker.is_file() else None
        if previous != repo_id:
            raise HubError(f"refusing to overwrite {to}: it is not empty and not an earlier pull of {repo_id}; "
                           "choose another --to folder or remove it")
    to.parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    tmp = to.parent / f".{to.name}.pulling-{tag}"
    old = to.parent / f".{to.name}.old-{tag}"
    try:
        tmp.mkdir()
        for path in sorted(source.iterdir()):
            if path.is_file() and any(fnmatch.fnmatchcase(path.name, pattern) for pattern in PULL_FILES):
                shutil.copyfile(path, tmp / path.name)  # follows cache symlinks
        commit = source.name if _COMMIT.match(source.name) else None
        (tmp / MARKER).write_text(json.dumps({"repo_id": repo_id, "revision": revision or "main", "commit": commit},
                                             indent=2) + "\n", encoding="utf-8")
        if to.exists():
            to.rename(old)
        tmp.rename(to)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not to.exists():
            old.rename(to)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return to


def pull(spec: str, *, revision: str | None = None, to: str | Path | None = None, token: str | None = None) -> Path:
    """Download an adapter / meta-init (safe files only); returns its folder (cache snapshot or `to`)."""
    repo_id, spec_rev = parse_spec(spec)
    if spec_rev and revision and spec_rev != revision:
        raise HubError(f"two revisions given: {spec!r} and --revision {revision!r}")
    revision = revision or spec_rev
    if offline():
        path = _pull_offline(repo_id, revision)
    else:
        path = _pull_online(repo_id, revision, _token(token))
    return _copy_to(path, Path(to), repo_id, revision) if to is not None else path


def resolve(spec_or_path: str | Path) -> Path:
    """An existing local folder as is; otherwise a Hub spec (`org/name[@rev]`, `hf://...`) pulled on demand."""
    text = str(spec_or_path)
    local = Path(text).expanduser()
    if local.is_dir():
        return local
    if text.startswith("hf://") or looks_like_spec(text):
        try:
            return pull(text)
        except HubError as exc:
            if text.startswith("hf://"):
                raise
            raise HubError(f"{text!r} is not a local folder, and pulling it from the Hub failed: {exc}") from None
    raise HubError(f"{text!r} is neither a local adapter folder nor a Hub repo id (ORG/NAME[@REVISION] or "
                   "hf://ORG/NAME@REVISION)")


def hub_origin(folder: str | Path) -> dict | None:
    """Where a pulled folder came from: {"repo_id", "revision" (the commit)}; None for a local folder.

    Meant for lineage: `metalora adapt --init hf://org/meta@main` records the exact commit it used.
    """
    folder = Path(folder)
    marker = folder / MARKER
    if marker.is_file():
        data = _json(marker)
        return {"repo_id": data.get("repo_id"), "revision": data.get("commit") or data.get("revision")}
    parts = folder.resolve().parts if folder.exists() else folder.parts
    if len(parts) >= 3 and parts[-2] == "snapshots" and parts[-3].startswith("models--") and _COMMIT.match(parts[-1]):
        return {"repo_id": parts[-3][len("models--"):].replace("--", "/", 1), "revision": parts[-1]}
    return None
