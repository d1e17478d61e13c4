"""Hub push / pull, end to end over HTTP against a local Hub-compatible server (tests/hub_server.py).

The real `huggingface_hub` client does all the talking (create repo, branch, preupload, LFS upload,
commit, revision resolution, downloads); nothing contacts huggingface.co. Adapters are tiny peft
LoRA adapters over the `tiny-bert` backbone, so "same predictions" is checked with plain peft.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("huggingface_hub")
import huggingface_hub  # noqa: E402
from huggingface_hub import ModelCard, constants  # noqa: E402
from huggingface_hub.utils import close_session  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from metalora import hub  # noqa: E402
from metalora.errors import BackboneError, HubError  # noqa: E402
from metalora.model_card import build_model_card  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hub_server import HubServer, free_port  # noqa: E402

TOKEN = "hf_MetaloraTestWriteTokenA1b2C3d4E5"
READ_TOKEN = "hf_MetaloraTestReadTokenZ9y8X7w6V5"
BAD_TOKEN = "hf_MetaloraWrongTokenQ1w2E3r4T5y6"
REPO_ROOT = Path(__file__).resolve().parents[1]
TEXTS = ["the pan heats evenly", "handle broke after a week", "great knife, very sharp", "meh"]


# -- environment -----------------------------------------------------------------------------------
def hf_env(monkeypatch, endpoint: str, home: Path, token: str | None, offline: bool = False) -> dict:
    """Point huggingface_hub at `endpoint` / `home`, both in os.environ (for subprocesses) and in its
    import-time constants (for this process)."""
    env = {"HF_ENDPOINT": endpoint, "HF_HOME": str(home), "HF_HUB_DISABLE_XET": "1",
           "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
           "HF_HUB_DISABLE_UPDATE_CHECK": "1", "HF_HUB_OFFLINE": "1" if offline else "0"}
    for key in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_TOKEN_PATH", "HUGGING_FACE_HUB_TOKEN", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    if token:
        monkeypatch.setenv("HF_TOKEN", token)
    else:
        monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HOME", str(home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(home / "stored_tokens"))
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)
    huggingface_hub.utils.disable_progress_bars()
    close_session()  # no pooled connection to an earlier server
    return env


@pytest.fixture(autouse=True)
def local_network_only(monkeypatch):
    """Fail any test that tries to resolve a host other than 127.0.0.1 / localhost (e.g. huggingface.co)."""
    import socket

    real, attempts = socket.getaddrinfo, []

    def guarded(host, *args, **kwargs):
        if host not in ("127.0.0.1", "localhost", None):
            attempts.append(host)
            raise socket.gaierror(socket.EAI_NONAME, f"tests may not reach {host}")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", guarded)
    yield
    assert not attempts, f"tried to reach {attempts}"


@pytest.fixture
def server(tmp_path, monkeypatch):
    srv = HubServer(tmp_path / "hub-storage", {TOKEN: "write", READ_TOKEN: "read"})
    hf_env(monkeypatch, srv.url, tmp_path / "hf_home", TOKEN)
    yield srv
    srv.close()
    close_session()
    assert not srv.state.unhandled, f"client called routes the test server lacks: {srv.state.unhandled}"


# -- adapters --------------------------------------------------------------------------------------
def _base():
    from metalora.backbones import load_backbone

    return load_backbone("tiny-bert")


def make_adapter(path: Path, seed: int, *, kind: str = "adapter", base_model: str = "tiny-bert",
                 lineage=None, metrics=None) -> Path:
    """A plain peft LoRA adapter over tiny-bert with non-trivial weights, a head and metalora.json."""
    from peft import LoraConfig, get_peft_model

    backbone = _base()
    backbone.model.name_or_path = base_model
    torch.manual_seed(seed)
    model = get_peft_model(backbone.model, LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"],
                                                      task_type="FEATURE_EXTRACTION"))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.5)
    model.save_pretrained(path, save_embedding_layers=False)  # "auto" would look the base model up on the Hub
    config = json.loads((path / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = base_model
    (path / "adapter_config.json").write_text(json.dumps(config, indent=2))
    save_file({"weight": torch.randn(2, 32), "bias": torch.randn(2)}, str(path / "metalora_head.safetensors"))
    meta = {
        "metalora_version": "0.1.0", "kind": kind,
        "backbone": {"name": "tiny-bert", "base_model": base_model, "revision": None, "pooling": "mean", "max_length": 64},
        "scenario": {"name": "synthetic/sentiment/kitchen", "family": "sentiment", "task_type": "binary",
                     "label_names": ["negative", "positive"], "card": "data_cards/synthetic_sentiment_kitchen.md"},
        "metrics": {"accuracy": 0.91, "macro_f1": 0.9} if metrics is None else metrics,
        "lineage": {"init": {"repo_id": "org/meta-init", "revision": "abc123"}} if lineage is None else lineage,
    }
    if kind == "meta-init":
        meta["meta"] = {"algorithm": "fomaml", "suite": ["synthetic/sentiment/kitchen", "synthetic/topic/garden"]}
        meta.pop("scenario")
    (path / "metalora.json").write_text(json.dumps(meta, indent=2))
    return path


def peft_outputs(folder: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """(hidden states, predicted probabilities) with PLAIN peft: PeftModel.from_pretrained + the head file."""
    from peft import PeftModel

    backbone = _base()
    model = PeftModel.from_pretrained(backbone.model, str(folder)).eval()
    tok = backbone.tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"]).last_hidden_state
    mask = tok["attention_mask"].unsqueeze(-1).float()
    pooled = (hidden * mask).sum(1) / mask.sum(1)
    head = load_file(str(folder / "metalora_head.safetensors"))
    probs = torch.softmax(pooled @ head["weight"].T + head["bias"], dim=-1)
    return hidden, probs


def metalora_predictions(spec):
    """metalora's own loader (metalora.api.load_adapter, which pulls Hub specs on demand), else None."""
    if importlib.util.find_spec("metalora.api") is None:
        return None
    from metalora import api

    if not hasattr(api, "load_adapter"):
        return None
    pred = api.load_adapter(spec).predict(TEXTS)
    return list(pred.labels), torch.as_tensor(pred.probabilities)


def run_cli(args: list[str], env: dict, check: bool = True) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    full_env.update(env)
    full_env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + full_env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-m", "metalora", *args], env=full_env, capture_output=True, text=True,
                          timeout=120, cwd=REPO_ROOT)
    if check and proc.returncode != 0:
        raise AssertionError(f"metalora {args} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def files_containing(root: Path, needle: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and not p.is_symlink() and needle in p.read_bytes()]


# -- tests -----------------------------------------------------------------------------------------
def test_push_pull_roundtrip_api_same_predictions_plain_peft(server, tmp_path):
    folder = make_adapter(tmp_path / "adapter", seed=1)
    before = sorted(p.name for p in folder.iterdir())
    hidden0, probs0 = peft_outputs(folder)
    base_hidden = _base().model(**_base().tokenizer(TEXTS, padding=True, return_tensors="pt")).last_hidden_state
    assert not torch.allclose(hidden0, base_hidden, atol=1e-4), "adapter must change the outputs to be a real test"

    oid = hub.push(folder, "org/kitchen", commit_message="first")
    assert sorted(p.name for p in folder.iterdir()) == before, "push must not modify the user's folder"
    remote = server.state.commit_files("org/kitchen", "main")
    assert set(remote) == {".gitattributes", "README.md", "adapter_config.json", "adapter_model.safetensors",
                           "metalora.json", "metalora_head.safetensors"}
    assert remote["adapter_model.safetensors"].lfs, "safetensors go through the LFS upload"
    assert server.state.repos["org/kitchen"].branches["main"] == oid

    pulled = hub.pull("org/kitchen")
    assert pulled.is_relative_to(tmp_path / "hf_home" / "hub"), "pull without --to lands in the HF cache"
    assert pulled.name == oid and hub.hub_origin(pulled) == {"repo_id": "org/kitchen", "revision": oid}
    assert not (pulled / ".gitattributes").exists()
    for name in ("adapter_config.json", "adapter_model.safetensors", "metalora_head.safetensors", "metalora.json"):
        assert (pulled / name).read_bytes() == (folder / name).read_bytes(), name
    hidden1, probs1 = peft_outputs(pulled)
    assert torch.equal(hidden0, hidden1) and torch.equal(probs0, probs1)
    local, remote = metalora_predictions(folder), metalora_predictions("org/kitchen")
    if local is not None:  # metalora's own predict path, pulling the spec on demand
        assert local[0] == remote[0] and torch.equal(local[1], remote[1])
    # resolve: a local folder as is, a spec pulled on demand (adapt --init / predict --adapter)
    assert hub.resolve(folder) == folder
    assert hub.resolve(f"hf://org/kitchen@{oid}") == pulled


def test_model_card_fields(server, tmp_path):
    folder = make_adapter(tmp_path / "adapter", seed=2)
    hub.push(folder, "org/card")
    card = ModelCard.load(hub.pull("org/card") / "README.md")
    data = card.data.to_dict()
    assert data["library_name"] == "peft" and data["base_model"] == "tiny-bert"
    assert {"metalora", "lora", "sentiment"} <= set(data["tags"])
    results = data["model-index"][0]["results"]
    metrics = {m["type"]: m["value"] for r in results for m in r["metrics"]}
    assert metrics == {"accuracy": 0.91, "f1": 0.9}
    assert results[0]["dataset"]["name"] == "synthetic/sentiment/kitchen"
    assert data["metalora"]["lineage"]["init"] == {"repo_id": "org/meta-init", "revision": "abc123"}
    assert data["metalora"]["data_card"] == "data_cards/synthetic_sentiment_kitchen.md"
    assert "## Lineage" in card.text and "org/meta-init" in card.text and "abc123" in card.text

    meta = make_adapter(tmp_path / "meta", seed=3, kind="meta-init", lineage={"init": None}, metrics={})
    save_file({"logit_scale": torch.tensor(7.0)}, str(meta / "metalora_init.safetensors"))
    hub.push(meta, "org/meta-init")
    pulled_meta = hub.pull("org/meta-init")
    assert (pulled_meta / "metalora_init.safetensors").read_bytes() == (meta / "metalora_init.safetensors").read_bytes()
    mcard = build_model_card(meta, repo_id="org/meta-init")
    mdata = mcard.data.to_dict()
    assert mdata["metalora"]["kind"] == "meta-init"
    assert mdata["metalora"]["lineage"]["algorithm"] == "fomaml"
    assert mdata["metalora"]["lineage"]["suite"] == ["synthetic/sentiment/kitchen", "synthetic/topic/garden"]
    assert {"meta-learning", "fomaml", "sentiment", "topic"} <= set(mdata["tags"])
    assert "model-index" not in mdata  # no metrics -> no eval results
    local = make_adapter(tmp_path / "local", seed=4, lineage={"init": {"path": str(tmp_path / "secret" / "init")}})
    assert str(tmp_path) not in str(build_model_card(local)), "full local paths never go into a card"


def test_branch_revisions_and_pull_to(server, tmp_path):
    v1 = make_adapter(tmp_path / "v1", seed=10)
    v2 = make_adapter(tmp_path / "v2", seed=11)
    oid1 = hub.push(v1, "org/multi")
    oid2 = hub.push(v2, "org/multi", revision="exp")
    assert oid1 != oid2 and server.state.repos["org/multi"].branches == {"main": oid1, "exp": oid2}

    main, exp = hub.pull("org/multi"), hub.pull("org/multi@exp")
    by_commit = hub.pull("org/multi", revision=oid1)
    assert main == by_commit and main != exp
    w_main = load_file(str(main / "adapter_model.safetensors"))
    w_exp = load_file(str(exp / "adapter_model.safetensors"))
    assert any(not torch.equal(w_main[k], w_exp[k]) for k in w_main), "the two revisions hold different weights"
    assert torch.equal(peft_outputs(exp)[0], peft_outputs(v2)[0])

    target = tmp_path / "pulled" / "multi"
    assert hub.pull("org/multi", to=target) == target
    assert (target / "adapter_model.safetensors").read_bytes() == (v1 / "adapter_model.safetensors").read_bytes()
    assert not any(p.is_symlink() for p in target.iterdir())
    hub.pull("org/multi@exp", to=target)  # an earlier pull of the same repo is replaced
    assert (target / "adapter_model.safetensors").read_bytes() == (v2 / "adapter_model.safetensors").read_bytes()
    assert hub.hub_origin(target) == {"repo_id": "org/multi", "revision": oid2}
    assert sorted(p.name for p in target.parent.iterdir()) == ["multi"], "no temp folders left behind"
    with pytest.raises(HubError, match="refusing to overwrite"):
        hub.pull("org/multi", to=v1)  # a non-empty folder that is not a pull of this repo


def test_offline_after_pull_and_nothing_cached(server, tmp_path, monkeypatch):
    hub.push(make_adapter(tmp_path / "a", seed=20), "org/off")
    online = hub.pull("org/off")
    server.close()  # the Hub is gone; offline mode must not even try
    hf_env(monkeypatch, server.url, tmp_path / "hf_home", TOKEN, offline=True)
    assert hub.pull("org/off") == online
    assert torch.equal(peft_outputs(hub.resolve("org/off"))[1], peft_outputs(online)[1])
    with pytest.raises(HubError, match=r"offline mode is on \(HF_HUB_OFFLINE=1\) and org/never is not in the local cache"):
        hub.pull("org/never")
    with pytest.raises(HubError, match="offline"):
        hub.pull("org/off@other-branch")
    with pytest.raises(HubError, match="offline mode is on"):
        hub.push(tmp_path / "a", "org/off")


def test_not_found_repo_and_revision(server, tmp_path):
    hub.push(make_adapter(tmp_path / "a", seed=30), "org/exists")
    with pytest.raises(HubError, match=r"repository 'org/nope' not found on http://127\.0\.0\.1"):
        hub.pull("org/nope")
    with pytest.raises(HubError, match=r"revision 'no-such-branch' does not exist"):
        hub.pull("org/exists@no-such-branch")
    with pytest.raises(HubError, match="not a Hub repo id"):
        hub.pull("not a repo")
    assert not (tmp_path / "hf_home" / "hub" / "models--org--nope").exists()


def test_auth_errors_never_show_the_token(server, tmp_path, monkeypatch):
    folder = make_adapter(tmp_path / "a", seed=40)
    hub.push(folder, "org/private", private=True)
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(HubError, match="no Hugging Face token found; set HF_TOKEN"):
        hub.push(folder, "org/private")
    with pytest.raises(HubError, match="'org/private' not found .*private.*HF_TOKEN"):
        hub.pull("org/private")  # private repos are invisible without a token
    monkeypatch.setenv("HF_TOKEN", BAD_TOKEN)
    for call in (lambda: hub.push(folder, "org/private"), lambda: hub.pull("org/private")):
        with pytest.raises(HubError, match="401 Unauthorized, the token was rejected") as info:
            call()
        assert BAD_TOKEN not in str(info.value)
    monkeypatch.setenv("HF_TOKEN", READ_TOKEN)
    with pytest.raises(HubError, match="403 Forbidden.*write permission") as info:
        hub.push(folder, "org/another")
    assert READ_TOKEN not in str(info.value)
    assert hub.pull("org/private").is_dir()  # a read token can pull a private repo


def test_network_error_is_one_clear_message(tmp_path, monkeypatch):
    hf_env(monkeypatch, f"http://127.0.0.1:{free_port()}", tmp_path / "hf_home", TOKEN)
    folder = make_adapter(tmp_path / "a", seed=50)
    with pytest.raises(HubError, match=r"cannot pull org/x: network error talking to http://127\.0\.0\.1:\d+ \(ConnectError"):
        hub.pull("org/x")
    with pytest.raises(HubError, match="cannot push to org/x: network error .*nothing was committed"):
        hub.push(folder, "org/x")
    assert not (tmp_path / "hf_home" / "hub" / "models--org--x" / "snapshots").exists()


def test_upload_cut_off_keeps_previous_revision(server, tmp_path):
    v1 = make_adapter(tmp_path / "v1", seed=60)
    v2 = make_adapter(tmp_path / "v2", seed=61)
    oid1 = hub.push(v1, "org/cut")
    server.state.cut_commit = True
    with pytest.raises(HubError, match="network error .*did not complete and nothing was committed"):
        hub.push(v2, "org/cut")
    assert server.state.repos["org/cut"].branches["main"] == oid1
    pulled = hub.pull("org/cut")
    assert pulled.name == oid1
    assert (pulled / "adapter_model.safetensors").read_bytes() == (v1 / "adapter_model.safetensors").read_bytes()
    oid2 = hub.push(v2, "org/cut")  # running it again works
    assert oid2 != oid1 and server.state.repos["org/cut"].branches["main"] == oid2


def test_download_cut_off_leaves_no_half_written_folder(server, tmp_path):
    hub.push(make_adapter(tmp_path / "a", seed=70), "org/trunc")
    server.state.truncate_downloads = {"adapter_model.safetensors"}
    target = tmp_path / "out" / "trunc"
    with pytest.raises(HubError, match="cut off"):
        hub.pull("org/trunc", to=target)
    assert not target.exists()
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == [], "no temp folder left"
    snapshots = tmp_path / "hf_home" / "hub" / "models--org--trunc" / "snapshots"
    assert not snapshots.exists() or not any(snapshots.iterdir()), "no partial snapshot in the cache"
    server.state.truncate_downloads = set()
    assert (hub.pull("org/trunc", to=target) / "adapter_model.safetensors").is_file()


def test_pickled_only_repo_refused(server, tmp_path):
    from huggingface_hub import HfApi

    folder = make_adapter(tmp_path / "a", seed=80)
    (folder / "adapter_model.bin").write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(HubError, match=r"contains pickled files \(adapter_model.bin\)"):
        hub.push(folder, "org/pickled")
    (folder / "adapter_model.safetensors").unlink()
    api = HfApi(endpoint=server.url, token=TOKEN)
    api.create_repo("org/pickled")
    api.upload_folder(repo_id="org/pickled", folder_path=folder)  # someone else's, pickled-only repo
    with pytest.raises(HubError, match=r"refusing to pull org/pickled: its weights are only pickled \(adapter_model.bin\)"):
        hub.pull("org/pickled")
    assert not (tmp_path / "hf_home" / "hub" / "models--org--pickled" / "snapshots").exists()
    assert not any(path.endswith(".bin") for _, path in server.state.requests if "/resolve/" in path)


def test_base_model_mismatch(tmp_path):
    folder = make_adapter(tmp_path / "a", seed=90)
    hub.check_base_model(folder, "tiny-bert")
    with pytest.raises(BackboneError, match=r"trained on base model 'tiny-bert'.*backbone in use is "
                                            r"'sentence-transformers/all-MiniLM-L6-v2'.*--backbone tiny-bert"):
        hub.check_base_model(folder, "sentence-transformers/all-MiniLM-L6-v2")
    minilm = make_adapter(tmp_path / "m", seed=91, base_model="sentence-transformers/all-MiniLM-L6-v2")
    hub.check_base_model(minilm, "minilm")  # the short name and its canonical Hub id are the same model


def test_parse_spec():
    assert hub.parse_spec("org/name") == ("org/name", None)
    assert hub.parse_spec("org/name@v2") == ("org/name", "v2")
    assert hub.parse_spec("hf://org/name@refs/pr/1") == ("org/name", "refs/pr/1")
    assert hub.parse_spec("hf://models/org/name") == ("org/name", None)
    for bad in ("name-only", "org/name@", "a/b/c", "hf://", "../x"):
        with pytest.raises(HubError):
            hub.parse_spec(bad)


def test_cli_push_pull_roundtrip_and_token_never_written(server, tmp_path, monkeypatch):
    env = hf_env(monkeypatch, server.url, tmp_path / "hf_home", TOKEN)
    folder = make_adapter(tmp_path / "adapter", seed=100)
    pushed = run_cli(["push", str(folder), "org/cli", "--revision", "release", "--commit-message", "from the CLI"],
                     {**env, "HF_TOKEN": TOKEN})
    oid = server.state.repos["org/cli"].branches["release"]
    assert oid in pushed.stdout and server.state.repos["org/cli"].commits[oid].message == "from the CLI"
    target = tmp_path / "pulled"
    pulled = run_cli(["pull", "org/cli@release", "--to", str(target)], {**env, "HF_TOKEN": TOKEN})
    assert pulled.stdout.strip() == str(target)
    assert torch.equal(peft_outputs(target)[1], peft_outputs(folder)[1])
    procs = [pushed, pulled]
    if importlib.util.find_spec("metalora.cli.predict") is not None:  # predict --adapter pulls on demand
        out = run_cli(["predict", "--adapter", "org/cli@release", *TEXTS], {**env, "HF_TOKEN": TOKEN})
        procs.append(out)
        got = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
        expected = metalora_predictions(folder)
        assert [g["label"] for g in got] == expected[0]
        probs = torch.tensor([[g["probabilities"][n] for n in ("negative", "positive")] for g in got])
        assert torch.allclose(probs, expected[1].float(), atol=1e-5)
    failed = run_cli(["pull", "org/cli@release"], {**env, "HF_TOKEN": BAD_TOKEN}, check=False)
    assert failed.returncode == 2 and "401 Unauthorized" in failed.stderr
    assert len(failed.stderr.strip().splitlines()) == 1, failed.stderr
    for proc in procs + [failed]:
        assert TOKEN not in proc.stdout + proc.stderr and BAD_TOKEN not in proc.stdout + proc.stderr
    for needle in (TOKEN, BAD_TOKEN):
        assert files_containing(tmp_path, needle.encode()) == []
