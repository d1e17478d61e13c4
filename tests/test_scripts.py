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
