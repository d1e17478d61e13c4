"""Smoke tests of the recipes (recipes/*.py) and their configs (recipes/configs/*.yaml).

Every recipe and config opens with the exact `accelerate launch` line that runs it; the tests read
those lines, check them against the files and the recipes' own flags, and run the documented
two-process command (gloo on the CPU) with overrides that keep it small.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from metalora.config import AdaptConfig, MetaTrainConfig, load_config, read_yaml, to_dict

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"
CONFIGS = RECIPES / "configs"
SMOKE = CONFIGS / "smoke_fomaml_tiny.yaml"
SMOKE_ADAPT = CONFIGS / "smoke_adapt_tiny.yaml"
CONFIG_CLASS = {"meta_train.py": MetaTrainConfig, "adapt.py": AdaptConfig}
LAUNCH = "accelerate launch --config_file accelerate_config.yaml"


def load_recipe(name: str):
    spec = importlib.util.spec_from_file_location(f"recipe_{name}", RECIPES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def docstring_launch_lines(path: Path) -> list[str]:
    """The `accelerate launch` commands in a recipe's module docstring (backslash continuations joined)."""
    doc = load_recipe(path.stem).__doc__ or ""
    joined = re.sub(r"\\\n\s*", "", doc)
    return [line.strip() for line in joined.splitlines() if line.strip().startswith("accelerate launch")]


def yaml_header(path: Path) -> list[str]:
    """The comment lines a YAML config opens with."""
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    return lines


def yaml_launch_line(path: Path) -> str:
    found = [line for line in yaml_header(path) if line.startswith("accelerate launch")]
    assert found, f"{path.name} does not open with a comment holding its `accelerate launch` line"
    return found[0]


def recipe_flags(script: Path) -> set[str]:
    return set(re.findall(r"add_argument\(\s*\"(--[a-z-]+)\"", script.read_text(encoding="utf-8")))


def check_launch_line(line: str, config: Path | None = None) -> type:
    """`line` starts with the launcher config, names an existing recipe, uses only the recipe's own flags,
    and (for a config's line) passes that very config; returns the config class the recipe reads."""
    assert line.startswith(LAUNCH), line
    words = shlex.split(line)
    scripts = [w for w in words if w.startswith("recipes/") and w.endswith(".py")]
    assert len(scripts) == 1, line
    script = ROOT / scripts[0]
    assert script.is_file(), line
    assert (ROOT / words[words.index("--config_file") + 1]).is_file()
    after = words[words.index(scripts[0]) + 1:]
    unknown = {w for w in after if w.startswith("--")} - recipe_flags(script)
    assert not unknown, f"{line}: {sorted(unknown)} are not flags of {script.name}"
    cfg_path = after[after.index("--config") + 1]
    assert (ROOT / cfg_path).is_file(), line
    if config is not None:
        assert ROOT / cfg_path == config, f"{config.name}'s launch line runs {cfg_path}"
    return CONFIG_CLASS[script.name]


def assert_subset(data: dict, loaded: dict, where: str) -> None:
    for key, value in data.items():
        if isinstance(value, dict):
            assert_subset(value, loaded[key], f"{where}: {key}")
        else:
            assert loaded[key] == value, f"{where}: {key} is {loaded[key]!r}, the file says {value!r}"


def sub_env() -> dict:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- headers and configs -------------------------------------------------------------------------------
@pytest.mark.parametrize("recipe", sorted(p.name for p in RECIPES.glob("*.py")))
def test_recipe_opens_with_its_launch_line(recipe):
    path = RECIPES / recipe
    assert path.read_text(encoding="utf-8").startswith('"""'), f"{recipe} must open with its docstring"
    lines = docstring_launch_lines(path)
    assert lines, f"{recipe}'s docstring holds no `accelerate launch` line"
    for line in lines:
        assert f"recipes/{recipe}" in line.split(), line
        check_launch_line(line)


def test_every_config_opens_with_its_launch_line_and_loads():
    configs = sorted(CONFIGS.glob("*.yaml")) + sorted(CONFIGS.glob("*.yml"))
    assert len(configs) > 0
    kinds = {}
    for path in configs:
        cls = check_launch_line(yaml_launch_line(path), config=path)
        cfg = load_config(cls, path)
        assert isinstance(cfg, cls), path.name
        kinds.setdefault(cls, []).append(path.name)
        # every value the file sets is the value the dataclass holds
        assert_subset(read_yaml(path), to_dict(cfg), path.name)
    assert set(kinds) == {MetaTrainConfig, AdaptConfig}, kinds
    assert "smoke_fomaml_tiny.yaml" in kinds[MetaTrainConfig] and "smoke_adapt_tiny.yaml" in kinds[AdaptConfig]


# -- meta_train.py -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def one_process_run(tmp_path_factory):
    """recipes/meta_train.py in this process, 1 process, with the smoke config as shipped (2 steps)."""
    import torch

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("meta") / "run"
    load_recipe("meta_train").main(["--config", str(SMOKE), "--no-resume", f"output_dir={out}"])
    return out


def test_meta_train_recipe_one_process(one_process_run, capfd):
    out = one_process_run
    history = json.loads((out / "history.json").read_text())
    assert [r["step"] for r in history] == [1, 2]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-0000001", "step-0000002"]
    cfg = load_config(MetaTrainConfig, out / "config.yaml")
    assert cfg == load_config(MetaTrainConfig, SMOKE, [f"output_dir={out}"])
    from metalora.api import load_init

    _, init = load_init(out / "meta-init")
    assert init.lora and init.meta["meta"]["algorithm"] == "fomaml"


def test_meta_train_recipe_prints_processes(tmp_path, capsys):
    load_recipe("meta_train").main(["--config", str(SMOKE), "--no-resume", f"output_dir={tmp_path / 'run'}", "steps=1",
                                    "val_scenarios=[]", "checkpoint_every=0"])
    out = capsys.readouterr().out
    assert "processes=1 distributed_type=DistributedType.NO steps=1" in out
    assert (tmp_path / "run" / "meta-init" / "adapter_model.safetensors").is_file()


def test_meta_train_recipe_two_processes(tmp_path):
    """The recipe's own documented two-process CPU command, as written, plus small overrides."""
    documented = [line for line in docstring_launch_lines(RECIPES / "meta_train.py") if "--multi_gpu" in line]
    assert len(documented) == 1
    words = shlex.split(documented[0])
    assert words[words.index("--num_processes") + 1] == "2" and "--cpu" in words
    at = words.index("launch") + 1
    words[at:at] = ["--main_process_port", str(free_port())]  # not the default port another run may hold
    here = Path(sys.executable).parent / "accelerate"  # the venv's launcher, activated or not
    words[0] = str(here) if here.is_file() else words[0]
    out = tmp_path / "run"
    proc = subprocess.run(words + ["--no-resume", f"output_dir={out}", "log_with=none"], cwd=ROOT, env=sub_env(),
                          capture_output=True, text=True, timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert "processes=2 distributed_type=DistributedType.MULTI_CPU steps=2" in log, log[-3000:]
    assert [r["step"] for r in json.loads((out / "history.json").read_text())] == [1, 2]
    for name in ("final-init", "best-init", "meta-init"):
        assert (out / name / "adapter_model.safetensors").is_file(), name
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name or ".old-" in p.name]


# -- adapt.py ------------------------------------------------------------------------------------------
def test_adapt_recipe(tmp_path, capsys):
    from metalora.api import load_adapter

    out = tmp_path / "adapter"
    argv = ["--config", str(SMOKE_ADAPT), "--scenario", "synthetic/sentiment/beauty", "--out", str(out)]
    load_recipe("adapt").main(argv)
    printed = capsys.readouterr().out
    assert printed.startswith("synthetic/sentiment/beauty:") and str(out) in printed
    model = load_adapter(out)
    assert model.metadata["adapt"]["steps"] == 2
    assert model.metadata["lineage"]["init"] is None
    assert model.predict(["lovely, works great"]).labels[0] in model.label_names
    from metalora.errors import DataError

    with pytest.raises(DataError, match="already exists"):  # refuses to overwrite without --overwrite
        load_recipe("adapt").main(argv)
    load_recipe("adapt").main(argv + ["--overwrite", "steps=1"])
    assert load_adapter(out).metadata["adapt"]["steps"] == 1


def test_adapt_recipe_from_a_meta_init(one_process_run, tmp_path, capsys):
    from metalora.api import load_adapter

    out = tmp_path / "adapter"
    load_recipe("adapt").main(["--config", str(SMOKE_ADAPT), "--scenario", "synthetic/sentiment/beauty",
                               "--init", str(one_process_run / "meta-init"), "--shots", "3", "--out", str(out)])
    model = load_adapter(out)
    assert model.metadata["lineage"]["init"] == {"path": str((one_process_run / "meta-init").resolve())}
    assert model.metadata["support"]["shots"] == 3 and model.metadata["support"]["examples"] == 6
