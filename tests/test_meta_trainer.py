"""End-to-end tests of the meta-training loop (metalora.meta.trainer), its checkpoints and resumption.

Everything runs on the tiny random BERT (`tiny-bert`) and the built-in synthetic scenarios, from the
smoke config recipes/configs/smoke_fomaml_tiny.yaml plus overrides. Runs that need real processes
(two gloo processes; a run killed with SIGKILL) are subprocesses limited to one thread each.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch.testing import assert_close

from metalora.adapter_io import INIT_FILE, META_FILE, to_peft_key
from metalora.config import AdaptConfig, MetaTrainConfig, load_config
from metalora.errors import ConfigError, DataError, TrainingError
from metalora.meta.checkpoint import latest_checkpoint, load_checkpoint
from metalora.meta.trainer import MetaTrainer
from metalora.model import SCALE_KEY, LoraClassifier

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "recipes" / "configs" / "smoke_fomaml_tiny.yaml"
SMOKE_ADAPT = ROOT / "recipes" / "configs" / "smoke_adapt_tiny.yaml"
RECIPE = ROOT / "recipes" / "meta_train.py"
ACCELERATE_CONFIG = ROOT / "accelerate_config.yaml"
SUBPROCESS_TIMEOUT = 300


# -- helpers -----------------------------------------------------------------------------------------
def smoke_cfg(out: Path, *overrides: str) -> MetaTrainConfig:
    """The smoke config (tiny-bert, 2 episodes per step), written to `out`, without tensorboard."""
    return load_config(MetaTrainConfig, SMOKE, [f"output_dir={out}", "log_with=none", *overrides])


def trainer(cfg: MetaTrainConfig, tiny_backbone) -> MetaTrainer:
    """A trainer on the session's cached tiny backbone (the same seeded weights `load_backbone` builds)."""
    fields = {k: v for k, v in dataclasses.asdict(cfg.backbone).items() if k != "name"}
    model = LoraClassifier(tiny_backbone(cfg.backbone.name, **fields), cfg.lora)
    return MetaTrainer(cfg, model=model)


def sub_env() -> dict:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    return env


def accelerate_cli() -> str:
    """The `accelerate` script of the interpreter running the tests (its venv need not be activated)."""
    here = Path(sys.executable).parent / "accelerate"
    return str(here) if here.is_file() else "accelerate"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_checked(cmd: list, **kw) -> str:
    proc = subprocess.run([str(c) for c in cmd], cwd=ROOT, env=sub_env(), capture_output=True, text=True,
                          timeout=SUBPROCESS_TIMEOUT, **kw)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{cmd} failed ({proc.returncode}):\n{out[-4000:]}"
    return out


def init_tensors(folder: Path) -> dict[str, torch.Tensor]:
    """Everything an init folder stores as weights: peft's LoRA tensors and metalora's extra tensors."""
    tensors = {f"adapter:{k}": v for k, v in load_file(str(folder / "adapter_model.safetensors")).items()}
    tensors.update({f"init:{k}": v for k, v in load_file(str(folder / INIT_FILE)).items()})
    return tensors


def assert_same_init(a: Path, b: Path, atol: float) -> None:
    ta, tb = init_tensors(a), init_tensors(b)
    assert sorted(ta) == sorted(tb)
    for k in ta:
        assert_close(ta[k], tb[k], atol=atol, rtol=0, msg=lambda m, k=k: f"{k}: {m}")


def lora_b(folder: Path) -> dict[str, torch.Tensor]:
    return {k: v for k, v in load_file(str(folder / "adapter_model.safetensors")).items() if "lora_B" in k}


def no_partial_folders(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if ".tmp-" in p.name]


# -- 1. one process and two processes compute the same init -------------------------------------------
def test_one_and_two_processes_give_the_same_init(tmp_path, tiny_backbone):
    overrides = ["meta_batch=4", "steps=3", "log_with=none"]  # 4 episodes: 2 per process
    two = tmp_path / "two"
    out = run_checked([
        accelerate_cli(), "launch", "--config_file", ACCELERATE_CONFIG, "--multi_gpu", "--num_processes", "2",
        "--main_process_port", free_port(), RECIPE, "--cpu", "--config", SMOKE, "--no-resume",
        f"output_dir={two}", *overrides,
    ])
    assert "processes=2 distributed_type=DistributedType.MULTI_CPU" in out, out[-3000:]

    one = tmp_path / "one"
    result = trainer(smoke_cfg(one, *overrides), tiny_backbone).train(resume=False)
    assert result.episodes == 4 * 3  # one process computed every episode of the global meta-batch

    assert_same_init(one / "final-init", two / "final-init", atol=1e-5)
    h1 = json.loads((one / "history.json").read_text())
    h2 = json.loads((two / "history.json").read_text())
    assert [r["step"] for r in h1] == [r["step"] for r in h2] == [1, 2, 3]
    for r1, r2 in zip(h1, h2):  # the same global episodes, averaged over the same count
        assert r1.keys() == r2.keys()
        for k in r1:
            assert r1[k] == pytest.approx(r2[k], abs=1e-5), k
    # not vacuous: peft's LoRA B starts at zero, and 3 Adam steps moved it
    moved = lora_b(two / "final-init")
    assert moved and all(v.abs().max() > 1e-4 for v in moved.values())


# -- 2. a run killed with SIGKILL resumes to the uninterrupted result ----------------------------------
# The killed run is the recipe itself, slowed by a sleep in each episode so that the kill lands
# between its first checkpoint and its end (the sleep changes no number).
SLOW_RECIPE = """
import runpy, sys, time
from metalora.meta.trainer import MetaTrainer
original = MetaTrainer.episode_grads
def slow(self, ep):
    time.sleep(0.2)
    return original(self, ep)
MetaTrainer.episode_grads = slow
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_killed_run_resumes_to_the_uninterrupted_init(tmp_path, tiny_backbone):
    overrides = ["steps=12", "checkpoint_every=2", "log_with=none"]
    run = tmp_path / "run"
    args = [RECIPE, "--config", SMOKE, f"output_dir={run}", *overrides]
    ckpts = run / "checkpoints"
    log = open(tmp_path / "killed.log", "w")
    proc = subprocess.Popen([sys.executable, "-c", SLOW_RECIPE, *map(str, args), "--no-resume"], cwd=ROOT,
                            env=sub_env(), stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + SUBPROCESS_TIMEOUT
        while not list(ckpts.glob("step-*")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
        log.close()
    killed_log = (tmp_path / "killed.log").read_text()
    assert proc.returncode == -signal.SIGKILL, f"the run ended before it was killed:\n{killed_log[-3000:]}"
    assert not (run / "final-init").exists()
    written = sorted(p.name for p in ckpts.glob("step-*"))
    assert written and "step-0000012" not in written
    # What a kill in the middle of a save leaves behind: half-written temporary folders.
    (ckpts / ".step-0000099.tmp-killed").mkdir()
    (ckpts / ".step-0000099.tmp-killed" / "meta.safetensors").write_bytes(b"partial")
    (run / ".final-init.tmp-killed").mkdir()

    out = run_checked([sys.executable, *args])  # the same command, without --no-resume
    last = written[-1]
    assert re.search(rf"resuming from \S*{last} \(step {int(last.split('-')[1])}\)", out), out[-3000:]

    ref = tmp_path / "ref"
    trainer(smoke_cfg(ref, *overrides), tiny_backbone).train(resume=False)
    assert_same_init(ref / "final-init", run / "final-init", atol=1e-6)
    assert_same_init(ref / "meta-init", run / "meta-init", atol=1e-6)
    h_ref = json.loads((ref / "history.json").read_text())
    h_run = json.loads((run / "history.json").read_text())
    assert [r["step"] for r in h_run] == list(range(1, 13))
    for a, b in zip(h_ref, h_run):
        assert a == pytest.approx(b, abs=1e-6)
    # the best init was tracked across the interruption
    best = json.loads((run / "best-init" / META_FILE).read_text())
    assert best["meta"]["val_acc"] == max(r["val_acc"] for r in h_run)
    assert no_partial_folders(run) == []


# -- 3. every algorithm writes a meta-init that load_init loads and adapt adapts from ------------------
ALGORITHMS = [
    pytest.param("fomaml", [], id="fomaml"),
    pytest.param("maml", [], id="maml"),
    pytest.param("reptile", [], id="reptile"),
    pytest.param("metasgd", ["metasgd_second_order=false"], id="metasgd-first-order"),
    pytest.param("metasgd", ["metasgd_second_order=true"], id="metasgd-second-order"),
    pytest.param("multitask", [], id="multitask"),
]


@pytest.mark.parametrize("algorithm,extra", ALGORITHMS)
def test_each_algorithm_writes_a_loadable_adaptable_init(tmp_path, tiny_backbone, algorithm, extra):
    from metalora.api import adapt, load_init

    out = tmp_path / "run"
    # validation (its Meta-SGD rates included) runs once, after the last step: meta-init is the final init
    t = trainer(smoke_cfg(out, f"algorithm={algorithm}", "steps=2", "eval_every=2", *extra), tiny_backbone)
    result = t.train(resume=False)
    assert result.init_dir == out / "meta-init" and result.steps == 2
    meta = json.loads((out / "meta-init" / META_FILE).read_text())
    assert meta["kind"] == "meta-init" and meta["meta"]["algorithm"] == algorithm

    model, init = load_init(out / "meta-init")
    assert sorted(init.lora) == sorted(t.lora())
    for k, v in t.lora().items():
        assert_close(init.lora[k], v.detach(), atol=0, rtol=0)
    assert_close(init.logit_scale, t.meta[SCALE_KEY].detach(), atol=0, rtol=0)
    assert torch.isfinite(init.logit_scale)
    if algorithm == "metasgd":
        assert init.inner_lrs is not None
        assert set(init.inner_lrs) == set(t.lrs)
        for k, v in t.lrs.items():
            assert_close(init.inner_lrs[k], v.detach(), atol=0, rtol=0)
        assert any(not torch.equal(v, torch.full_like(v, t.cfg.inner_lr)) for v in init.inner_lrs.values())
    else:
        assert init.inner_lrs is None

    # adapt from it: with 0 steps the adapter is the init itself; with 2 it trains and evaluates
    cfg = load_config(AdaptConfig, SMOKE_ADAPT)
    same = adapt("synthetic/sentiment/beauty", init=out / "meta-init", config=dataclasses.replace(cfg, steps=0), shots=2)
    for k, v in init.lora.items():
        assert_close(same.params[k], v, atol=0, rtol=0)
    adapted = adapt("synthetic/sentiment/beauty", init=out / "meta-init", config=cfg, shots=2)
    assert adapted.metadata["lineage"]["init"] == {"path": str((out / "meta-init").resolve())}
    assert 0.0 <= adapted.metadata["metrics"]["accuracy"] <= 1.0
    assert any(not torch.equal(adapted.params[k], v) for k, v in init.lora.items())


# -- 4. validation keeps the best init -----------------------------------------------------------------
def test_validation_keeps_the_best_init(tmp_path, tiny_backbone, monkeypatch):
    scripted = [0.50, 0.75, 0.60, 0.70]  # best at step 2, not the last step
    calls = []

    def validate(self):
        calls.append(None)
        return {self.cfg.inner_steps: scripted[len(calls) - 1]}

    monkeypatch.setattr(MetaTrainer, "validate", validate)
    out = tmp_path / "run"
    t = trainer(smoke_cfg(out, "steps=4", "eval_every=1", "checkpoint_every=1"), tiny_backbone)
    result = t.train(resume=False)

    history = json.loads((out / "history.json").read_text())
    assert [r["val_acc"] for r in history] == scripted
    assert result.best_val == max(scripted)
    best = json.loads((out / "best-init" / META_FILE).read_text())
    assert best["meta"]["val_acc"] == best["metrics"]["val_acc"] == max(r["val_acc"] for r in history)
    assert best["meta"]["steps"] == 2
    # best-init holds the weights after step 2 (the checkpoint of step 2), not the final ones
    ckpt = load_file(str(out / "checkpoints" / "step-0000002" / "meta.safetensors"))
    adapter = load_file(str(out / "best-init" / "adapter_model.safetensors"))
    lora_names = [n for n in t.names if n in t.model.lora_set]
    assert lora_names and sorted(adapter) == sorted(to_peft_key(n) for n in lora_names)
    for n in lora_names:
        assert_close(adapter[to_peft_key(n)], ckpt[n], atol=0, rtol=0)
    assert_close(load_file(str(out / "best-init" / INIT_FILE))[SCALE_KEY], ckpt[SCALE_KEY], atol=0, rtol=0)
    final = init_tensors(out / "final-init")
    assert any(not torch.equal(v, final[k]) for k, v in init_tensors(out / "best-init").items())
    # meta-init is a copy of best-init
    for name in ("adapter_model.safetensors", INIT_FILE, META_FILE, "adapter_config.json"):
        assert (out / "meta-init" / name).read_bytes() == (out / "best-init" / name).read_bytes(), name


def test_validation_chooses_the_adaptation_steps(tmp_path, tiny_backbone, monkeypatch):
    """The init records the step count its best validation scored best at (ties: fewer steps)."""
    scripted = [{0: 0.50, 1: 0.60, 2: 0.60}, {0: 0.80, 1: 0.70, 2: 0.75}, {0: 0.60, 1: 0.60, 2: 0.70}]
    calls = []

    def validate(self):
        calls.append(None)
        return scripted[len(calls) - 1]

    monkeypatch.setattr(MetaTrainer, "validate", validate)
    out = tmp_path / "run"
    t = trainer(smoke_cfg(out, "steps=3", "eval_every=1", "checkpoint_every=0", "adapt_steps_choices=[0,1,2]"), tiny_backbone)
    t.train(resume=False)
    history = json.loads((out / "history.json").read_text())
    assert [r["val_acc"] for r in history] == [0.60, 0.80, 0.70]
    assert [r["adapt_steps"] for r in history] == [1, 0, 2]
    assert history[1]["val_acc_by_steps"] == {"0": 0.80, "1": 0.70, "2": 0.75}
    best = json.loads((out / "meta-init" / META_FILE).read_text())
    assert best["meta"]["steps"] == 2 and best["adapt"]["steps"] == 0 and best["adapt"]["optimizer"] == "sgd"
    assert json.loads((out / "final-init" / META_FILE).read_text())["adapt"]["steps"] == 2


def test_validation_scores_each_step_count_as_its_own_inner_loop(tmp_path, tiny_backbone, monkeypatch):
    """One segmented inner loop scores 0, 1 and 2 steps exactly as separate runs with that many steps."""
    # score by query loss (continuous) instead of accuracy, so a wrong step count cannot tie
    monkeypatch.setattr(MetaTrainer, "_accuracy", lambda self, params, batch: float(self._loss(params, batch).detach()))
    cfg = smoke_cfg(tmp_path / "a", "inner_steps=1", "inner_lr=0.5", "val_episodes=3", "adapt_steps_choices=[0,2]")
    t = trainer(cfg, tiny_backbone)
    by_steps = t.validate()
    assert sorted(by_steps) == [0, 1, 2]
    for n in (0, 1, 2):
        alone = trainer(smoke_cfg(tmp_path / f"b{n}", f"inner_steps={n}", "inner_lr=0.5", "val_episodes=3"), tiny_backbone)
        alone.meta = t.meta  # the same init
        assert alone.validate() == {n: pytest.approx(by_steps[n], abs=1e-6)}
    assert len({round(v, 6) for v in by_steps.values()}) == 3  # the steps really change the score


def test_head_prior_is_meta_learned_saved_and_used_by_adapt(tmp_path, tiny_backbone):
    from metalora.adapt import adapt
    from metalora.api import load_init
    from metalora.model import PRIOR_KEY, prototype_head

    out = tmp_path / "run"
    t = trainer(smoke_cfg(out, "head_prior=true", "steps=3", "checkpoint_every=0", "outer_lr=0.05"), tiny_backbone)
    assert torch.equal(t.meta[PRIOR_KEY], torch.zeros(t.model.backbone.hidden_size))
    t.train(resume=False)
    learned = t.meta[PRIOR_KEY].detach()
    assert learned.abs().sum() > 0  # the query loss trained it
    model, init = load_init(out / "final-init")
    assert_close(init.head_prior, learned, atol=0, rtol=0)

    # adaptation builds its head with u: with 0 steps the bias is -|c|^2 + u . c exactly
    ep = t.sampler.episode(0, 0)
    params = adapt(model, ep.support, ep.support_labels, ep.num_labels, init, AdaptConfig(steps=0, optimizer="sgd"))
    with torch.no_grad():
        feats = model.features(init.lora, ep.support)
    _, with_u = prototype_head(feats, ep.support_labels, ep.num_labels, init.head_prior)
    _, without = prototype_head(feats, ep.support_labels, ep.num_labels)
    assert_close(params["head.bias"], with_u, atol=1e-6, rtol=0)
    assert not torch.allclose(with_u, without)


def test_head_prior_gradient_matches_finite_differences(tiny_backbone):
    """With 0 inner steps FOMAML is exact, so the prior's meta-gradient is d(query loss)/du."""
    from metalora.model import PRIOR_KEY

    cfg = smoke_cfg(Path("unused"), "head_prior=true", "inner_steps=0")
    t = trainer(cfg, tiny_backbone)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        t.meta[PRIOR_KEY].copy_(torch.randn(t.meta[PRIOR_KEY].shape, generator=g))
    ep = t.sampler.episode(0, 0)
    grad = t.episode_grads(ep).grads[PRIOR_KEY]
    direction = torch.randn(grad.shape, generator=g)
    meta = {k: v.detach() for k, v in t.meta.items()}

    def query_loss(u):
        with torch.no_grad():
            return float(t._loss(t._build(ep)({**meta, PRIOR_KEY: u}), (ep.query, ep.query_labels)))

    eps = 1e-2
    numeric = (query_loss(meta[PRIOR_KEY] + eps * direction) - query_loss(meta[PRIOR_KEY] - eps * direction)) / (2 * eps)
    assert float(grad @ direction) == pytest.approx(numeric, rel=2e-2, abs=1e-4)
    assert abs(numeric) > 1e-3


@pytest.mark.parametrize("algorithm", ["reptile", "multitask"])
def test_head_prior_refused_where_the_head_is_not_differentiated(tmp_path, algorithm):
    with pytest.raises(ConfigError, match=r"meta.head_prior: .*use fomaml, maml or metasgd"):
        smoke_cfg(tmp_path, "head_prior=true", f"algorithm={algorithm}")


def test_without_validation_meta_init_is_the_final_init(tmp_path, tiny_backbone):
    out = tmp_path / "run"
    result = trainer(smoke_cfg(out, "steps=2", "val_scenarios=[]", "checkpoint_every=0"), tiny_backbone).train(resume=False)
    assert result.best_val is None and not (out / "best-init").exists() and not (out / "checkpoints").exists()
    assert_same_init(out / "final-init", out / "meta-init", atol=0)


# -- 5. bad input: clear errors naming the thing -------------------------------------------------------
def test_suite_smaller_than_meta_batch(tmp_path):
    cfg = smoke_cfg(tmp_path, "scenarios=[synthetic/sentiment/kitchen]", "meta_batch=2")
    with pytest.raises(ConfigError, match=r"meta_batch=2.*only 1 scenario.*synthetic/sentiment/kitchen"):
        MetaTrainer(cfg)


def test_scenario_too_small_for_an_episode(tmp_path, tiny_backbone):
    cfg = smoke_cfg(tmp_path, "scenarios=[synthetic/sentiment/kitchen]", "meta_batch=1", "episodes.k_shot=500")
    with pytest.raises(DataError, match=r"scenario synthetic/sentiment/kitchen .*k_shot"):
        trainer(cfg, tiny_backbone)


def test_pattern_matching_no_scenario(tmp_path):
    cfg = smoke_cfg(tmp_path, "val_scenarios=[synthetic/nosuch/*]")
    with pytest.raises(ConfigError, match=r"val_scenarios.*synthetic/nosuch/\*"):
        MetaTrainer(cfg)


@pytest.mark.parametrize("extra,key,hint", [
    ("inner_stpes: 2\n", "inner_stpes", "inner_steps"),
    ("episodes:\n  kshot: 2\n", "episodes.kshot", "episodes.k_shot"),
])
def test_unknown_yaml_key(tmp_path, extra, key, hint):
    path = tmp_path / "typo.yaml"
    text = SMOKE.read_text().replace("episodes:\n  k_shot: 2\n  query_size: 4\n", "")
    path.write_text(text + extra)
    with pytest.raises(ConfigError) as err:
        load_config(MetaTrainConfig, path)
    msg = str(err.value)
    assert str(path) in msg and f"`{key}`" in msg and f"`{hint}`" in msg


@pytest.mark.parametrize("changes,differing,backbone", [
    (["inner_lr=0.05"], ["inner_lr"], "tiny-bert"),
    (["inner_lr=0.05", "seed=3"], ["inner_lr", "seed"], "tiny-bert"),
    (["backbone.name=tiny-gpt2"], ["backbone"], "tiny-gpt2"),
])
def test_resume_refuses_another_config(tmp_path, tiny_backbone, changes, differing, backbone):
    out = tmp_path / "run"
    trainer(smoke_cfg(out, "steps=1", "val_scenarios=[]"), tiny_backbone).train(resume=False)
    ckpt = out / "checkpoints" / "step-0000001"
    before = {p.name: p.read_bytes() for p in ckpt.iterdir()}
    other = trainer(smoke_cfg(out, "steps=2", "val_scenarios=[]", *changes), tiny_backbone)
    assert other.model.backbone.name == backbone
    with pytest.raises(ConfigError) as err:
        other.train(resume=True)
    msg = str(err.value)
    assert str(ckpt) in msg
    named = re.search(r"differs in: ([^)]*)\)", msg)
    assert named and named.group(1).split(", ") == differing
    assert {p.name: p.read_bytes() for p in ckpt.iterdir()} == before
    assert latest_checkpoint(out / "checkpoints") == ckpt


def test_resume_may_change_steps(tmp_path, tiny_backbone, capsys):
    """`steps` is not part of the fingerprint: a finished run can be extended."""
    a, b = tmp_path / "a", tmp_path / "b"
    trainer(smoke_cfg(a, "steps=2"), tiny_backbone).train(resume=False)
    capsys.readouterr()
    trainer(smoke_cfg(a, "steps=3"), tiny_backbone).train(resume=True)
    assert "resuming from" in capsys.readouterr().out
    trainer(smoke_cfg(b, "steps=3"), tiny_backbone).train(resume=False)
    assert_same_init(a / "final-init", b / "final-init", atol=1e-6)
    assert [r["step"] for r in json.loads((a / "history.json").read_text())] == [1, 2, 3]


@pytest.mark.parametrize("poison", ["loss", "gradient"])
def test_nan_stops_with_the_step_and_scenario_and_keeps_the_last_checkpoint(tmp_path, tiny_backbone, monkeypatch, poison):
    seen = []
    original = MetaTrainer.episode_grads

    def poisoned(self, ep):
        res = original(self, ep)
        seen.append(ep.scenario)
        if len(seen) == 5:  # meta_batch=2 on one process: the 5th episode is the first of step 3
            if poison == "loss":
                res = dataclasses.replace(res, query_loss=float("nan"))
            else:
                name = next(iter(res.grads))
                res = dataclasses.replace(res, grads={**res.grads, name: torch.full_like(res.grads[name], float("nan"))})
        return res

    monkeypatch.setattr(MetaTrainer, "episode_grads", poisoned)
    out = tmp_path / "run"
    cfg = smoke_cfg(out, "steps=5", "checkpoint_every=1", "meta_batch=2")
    t = trainer(cfg, tiny_backbone)
    with pytest.raises(TrainingError) as err:
        t.train(resume=False)
    msg = str(err.value)
    assert re.search(r"\bstep 3\b", msg), msg
    assert f"scenario {seen[4]}" in msg
    assert str(out / "checkpoints") in msg

    last = latest_checkpoint(out / "checkpoints")
    assert last == out / "checkpoints" / "step-0000002"
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-0000001", "step-0000002"]
    # intact and loadable: it restores exactly the meta-parameters of the last good step
    fresh = [v.detach().clone().requires_grad_(True) for v in t.tensors]
    tensors, state = load_checkpoint(last, cfg, torch.optim.Adam(fresh, lr=cfg.outer_lr), t.names)
    assert state["step"] == 2 and [r["step"] for r in state["history"]] == [1, 2]
    for name, v in zip(t.names, t.tensors):
        assert torch.isfinite(tensors[name]).all()
        assert_close(tensors[name], v.detach(), atol=0, rtol=0)
    assert not (out / "final-init").exists() and not (out / "meta-init").exists()
    # the advice works: a checkpoint does not resume under a changed learning rate, hence --no-resume
    assert "--no-resume" in msg
    with pytest.raises(ConfigError, match="differs in: outer_lr"):
        trainer(dataclasses.replace(cfg, outer_lr=cfg.outer_lr / 10), tiny_backbone).train(resume=True)


# -- 7. tensorboard ------------------------------------------------------------------------------------
def test_tensorboard_logs(tmp_path, tiny_backbone):
    out = tmp_path / "run"
    cfg = load_config(MetaTrainConfig, SMOKE, [f"output_dir={out}", "log_with=tensorboard", "steps=2", "adapt_steps_choices=[0,2]"])
    trainer(cfg, tiny_backbone).train(resume=False)
    events = list((out / "logs").rglob("events.out.tfevents.*"))
    assert events, sorted(p.relative_to(out) for p in out.rglob("*"))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    assert {"query_loss", "query_acc", "val_acc", "adapt_steps", "val_acc_0_steps", "val_acc_2_steps"} <= set(acc.Tags()["scalars"])
    assert [e.step for e in acc.Scalars("query_loss")] == [1, 2]


def test_family_weighting_draws_each_family_equally_often():
    import numpy as np

    from metalora.meta.episodes import scenario_weights

    w = scenario_weights("family", [10, 10, 10, 500], ["a", "a", "a", "b"])
    np.testing.assert_allclose(w, [1 / 6, 1 / 6, 1 / 6, 1 / 2])
    np.testing.assert_allclose(scenario_weights("size", [1, 3], ["a", "b"]), [0.25, 0.75])
    np.testing.assert_allclose(scenario_weights("uniform", [1, 3], ["a", "b"]), [0.5, 0.5])
