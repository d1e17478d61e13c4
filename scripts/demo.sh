#!/usr/bin/env bash
# One command on a fresh machine: install, then run the main job on the built-in synthetic suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
metalora demo "$@"
