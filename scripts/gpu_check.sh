#!/usr/bin/env bash
# GPU check (CUDA machine, under 5 minutes): SmolLM2 in 4-bit (QLoRA: NF4, bf16 compute) and 8-bit, one
# label-word adaptation each with seconds and peak GPU memory, then a short meta-training of the synthetic
# SmolLM2 recipe with 1 process and, where 2 GPUs exist, 2 processes; prints the figures.
#   bash scripts/gpu_check.sh            (after scripts/setup.sh with a CUDA build of torch)
# Untested on a GPU by its author (no GPU was lent); on a CPU machine it says so and stops.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] && . .venv/bin/activate
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if ! GPUS=$(python -c "import torch; print(torch.cuda.device_count())" 2>/dev/null); then
  echo "gpu_check: torch is not installed for $(command -v python); run scripts/setup.sh first"; exit 1
fi
if [ "$GPUS" = "0" ]; then
  echo "gpu_check: no CUDA device here (torch.cuda.device_count() == 0); nothing to check"; exit 1
fi
python -c "import bitsandbytes, torch; print(f'gpu_check: {torch.cuda.get_device_name(0)} x $GPUS, torch {torch.__version__}, bitsandbytes {bitsandbytes.__version__}')"
OUT=$(mktemp -d)

python - <<'PY'
import time, torch
from metalora import api
from metalora.backbones import load_backbone
from metalora.config import AdaptConfig, BackboneConfig, LoraSettings
from metalora.model import LoraClassifier

for bits in ("load_in_4bit", "load_in_8bit"):
    cfg = BackboneConfig(name="smollm2", max_length=64, scoring="label_words", prompt="Text: {text}\nLabel:", **{bits: True})
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    bb = load_backbone(cfg)
    load_s = time.perf_counter() - t0
    assert bb.quantized, f"{bits}: the backbone did not load quantised"
    model = LoraClassifier(bb, LoraSettings(r=8, top_layers=2, target_modules=("q_proj", "v_proj", "o_proj")))
    adapted = api.adapt("synthetic/sentiment/beauty", config=AdaptConfig(backbone=cfg, steps=10, lr=1e-3), model=model)
    m = adapted.metadata
    print(f"gpu_check: {bits}: load {load_s:.1f}s, adapt 10 steps {m['adapt']['seconds']:.2f}s, "
          f"accuracy {m['metrics'].get('accuracy', float('nan')):.3f}, peak GPU {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")
    del model, bb, adapted
    torch.cuda.empty_cache()
PY

run_meta() {  # $1 = processes
  local extra=()
  [ "$1" -gt 1 ] && extra=(--multi_gpu --num_processes "$1")
  accelerate launch --config_file accelerate_config.yaml "${extra[@]}" recipes/meta_train.py --no-resume \
    --config recipes/configs/smollm2_fomaml_synthetic.yaml steps=6 meta_batch=4 eval_every=0 checkpoint_every=0 \
    log_with=none backbone.load_in_4bit=true output_dir="$OUT/meta$1" 2>&1 | grep -E "^processes=|Error" || true
}
echo "gpu_check: meta-training, 1 process (6 outer steps x 4 episodes, 4-bit backbone)"
run_meta 1
if [ "$GPUS" -ge 2 ]; then
  echo "gpu_check: meta-training, 2 processes"
  run_meta 2
else
  echo "gpu_check: one GPU: the 2-process run needs 2"
fi
rm -rf "$OUT"
