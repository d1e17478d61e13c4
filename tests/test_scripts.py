"""scripts/test.sh installs only what is missing: a complete .venv is used as is (offline reruns work)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

SETUP_CFG = """\
[options]
install_requires =
    pytest>=1
    metalora-no-such-package-xyz>=1.0
    pytest>=999
    torch>=1; python_version < "3"

[options.extras_require]
test =
    pyyaml>=1
other =
    never-checked-package>=1
"""


def test_check_venv_names_what_is_missing(tmp_path):
    (tmp_path / "setup.cfg").write_text(SETUP_CFG, encoding="utf-8")
    res = subprocess.run([sys.executable, "-I", str(ROOT / "scripts" / "check_venv.py"), str(tmp_path)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 1
    msg = res.stderr
    assert "metalora-no-such-package-xyz>=1.0" in msg and "pytest>=999 (have " in msg
    assert "metalora from this checkout" in msg  # the metalora installed here comes from elsewhere
    for fine in ("pytest>=1;", "pyyaml", "torch", "never-checked-package"):
        assert fine not in msg, fine


def _fake_checkout(tmp_path: Path, complete: bool) -> Path:
    """A copy of scripts/test.sh beside stubs: .venv/bin/python answers the completeness check,
    setup.sh and pytest record that they ran."""
    root = tmp_path / "checkout"
    (root / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "test.sh", root / "scripts" / "test.sh")
    (root / "scripts" / "check_venv.py").write_text("")
    log = root / "log.txt"
    (root / "scripts" / "setup.sh").write_text(f'echo setup >> "{log}"\n')
    bin_ = root / ".venv" / "bin"
    bin_.mkdir(parents=True)
    python = bin_ / "python"
    python.write_text(f'#!/usr/bin/env bash\nif [ "$1" = "-I" ]; then echo "check $3" >> "{log}"; exit {0 if complete else 1}; fi\n'
                      f'echo "python $*" >> "{log}"\n')
    python.chmod(0o755)
    (bin_ / "activate").write_text(f'export PATH="{bin_}:$PATH"\n')
    return root


def test_test_sh_runs_setup_only_when_something_is_missing(tmp_path):
    for complete in (True, False):
        root = _fake_checkout(tmp_path / str(complete), complete)
        env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
        res = subprocess.run(["bash", str(root / "scripts" / "test.sh"), "-k", "x"], capture_output=True, text=True,
                             timeout=60, env=env)
        assert res.returncode == 0, res.stderr
        lines = (root / "log.txt").read_text().splitlines()
        expected = [f"check {root}"] + ([] if complete else ["setup"]) + ["python -m pytest -q -k x"]
        assert lines == expected, lines


def _requirements(setup_cfg: Path) -> list[str]:
    import configparser

    cfg = configparser.ConfigParser()
    cfg.read(setup_cfg, encoding="utf-8")
    lines = cfg["options"]["install_requires"].splitlines()
    for extra in cfg["options.extras_require"].values():
        lines += extra.splitlines()
    return [line.strip() for line in lines if line.strip()]


def test_constraints_pin_within_setup_cfg_ranges_and_leave_torch_alone():
    """A pin outside setup.cfg's range would make CI test a set users can never install; a torch pin would
    make setup.sh replace the build a GPU machine installed first."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pins = {}
    for line in (ROOT / "scripts" / "constraints.txt").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not NAME==VERSION"
            pins[canonicalize_name(name)] = version.strip()
    assert "torch" not in pins
    checked = 0
    for text in _requirements(ROOT / "setup.cfg"):
        req = Requirement(text)
        name = canonicalize_name(req.name)
        if name in pins and (req.marker is None or req.marker.evaluate()):
            assert req.specifier.contains(pins[name], prereleases=True), f"constraints.txt pins {name}=={pins[name]}, setup.cfg asks {req}"
            checked += 1
    assert checked >= 10  # peft, transformers, accelerate, datasets, ... are all pinned
    assert "-c scripts/constraints.txt" in (ROOT / "scripts" / "setup.sh").read_text(encoding="utf-8")
