#!/usr/bin/env bash
# One command on a fresh machine: install what is missing, then run the default test suite (slow tests excluded).
# A .venv that already has everything (scripts/check_venv.py) is used as is: no pip, no registry, so the tests
# rerun offline; otherwise scripts/setup.sh installs what it lacks.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -x .venv/bin/python ] && .venv/bin/python -I scripts/check_venv.py "$PWD"; then
  :
else
  bash scripts/setup.sh
fi
. .venv/bin/activate
python -m pytest -q "$@"
