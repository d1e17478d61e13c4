"""End to end through the local Hub server: meta-train an init, push it, adapt from `hf://...@main` and
from a commit, and serve a pulled adapter beside a local one. Lineage must name the exact commit the
init came from, never the branch (which moves)."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from torch.testing import assert_close

from metalora import hub
from metalora.adapter_io import to_peft_key
from metalora.api import adapt, load_adapter, load_adapters
from metalora.cli import main
from metalora.config import AdaptConfig, MetaTrainConfig, load_config
from metalora.errors import DataError
from metalora.meta.trainer import MetaTrainer

from test_hub import local_network_only, server  # noqa: F401 - fixtures (the autouse guard included)
from test_meta_trainer import SMOKE


def meta_init(folder, seed: int):
    cfg = load_config(MetaTrainConfig, SMOKE, [f"output_dir={folder}", "steps=1", "log_with=none", "checkpoint_every=0",
                                               "val_scenarios=[]", f"seed={seed}"])
    return MetaTrainer(cfg).train(resume=False).init_dir


def test_adapt_from_a_hub_pulled_init_records_the_exact_commit(server, tmp_path, capsys, local_card):  # noqa: F811
    v1, v2 = meta_init(tmp_path / "v1", seed=1), meta_init(tmp_path / "v2", seed=2)
    oid1 = hub.push(v1, "org/meta-init")
    oid2 = hub.push(v2, "org/meta-init")  # main moves on
    assert oid1 != oid2 and server.state.repos["org/meta-init"].branches["main"] == oid2

    # the CLI, from the branch: 0 steps, so the adapter's LoRA is exactly the init it started from
    out = tmp_path / "adapter-main"
    code = main(["adapt", str(local_card), "--init", "hf://org/meta-init@main", "--out", str(out), "--steps", "0"])
    assert code == 0, capsys.readouterr().err
    meta = json.loads((out / "metalora.json").read_text())
    assert meta["lineage"]["init"] == {"repo_id": "org/meta-init", "revision": oid2}
    assert oid2 in (out / "README.md").read_text() and "@main" not in json.dumps(meta)
    got, want = load_file(str(out / "adapter_model.safetensors")), load_file(str(v2 / "adapter_model.safetensors"))
    assert got.keys() == want.keys()
    for k in want:
        assert_close(got[k], want[k], atol=0, rtol=0)

    # the API, pinned to the older commit, with a real adaptation
    cfg = AdaptConfig(**{**json.loads((v1 / "metalora.json").read_text())["adapt"], "steps": 2})
    older = adapt(str(local_card), init=f"org/meta-init@{oid1}", config=cfg, shots=3)
    assert older.metadata["lineage"]["init"] == {"repo_id": "org/meta-init", "revision": oid1}
    start = load_file(str(v1 / "adapter_model.safetensors"))
    assert any(not torch.equal(older.params[n], start[to_peft_key(n)]) for n in older.model.lora_names)  # it trained
    older_dir = older.save(tmp_path / "adapter-older")

    # serve a pulled adapter beside a local one on one backbone
    hub.push(out, "org/reviews")
    multi = load_adapters({"hub": "org/reviews", "local": older_dir})
    texts = ["great product, love it", "broke after one day", "meh"]
    pred = multi.predict(texts * 2, scenario=["hub"] * 3 + ["local"] * 3)
    for name, rows, spec in (("hub", range(3), "org/reviews"), ("local", range(3, 6), older_dir)):
        alone = load_adapter(spec).predict(texts)
        assert_close(torch.tensor([[pred.probabilities[i][n] for n in ("negative", "positive")] for i in rows]),
                     torch.from_numpy(alone.probabilities))
    assert multi.adapters["hub"].origin == {"repo_id": "org/reviews", "revision": hub.hub_origin(hub.pull("org/reviews"))["revision"]}


def test_an_unknown_commit_is_never_recorded_as_a_branch(server, tmp_path, monkeypatch, local_card):  # noqa: F811
    hub.push(meta_init(tmp_path / "v1", seed=1), "org/meta-init")
    monkeypatch.setattr(hub, "hub_origin", lambda folder: None)
    with pytest.raises(DataError, match=r"pulled org/meta-init@main into .* cannot tell which commit"):
        adapt(str(local_card), init="org/meta-init@main", config=AdaptConfig(steps=0))


def test_push_refuses_a_cut_off_weights_file(server, tmp_path):  # noqa: F811
    from test_hub import make_adapter

    folder = make_adapter(tmp_path / "a", seed=5)
    weights = folder / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-16])  # the header is intact, the last tensor is cut off
    with pytest.raises(hub.HubError, match=rf"{weights} is not a valid safetensors file \(cut off: "):
        hub.push(folder, "org/cut-off")
    assert "org/cut-off" not in server.state.repos
