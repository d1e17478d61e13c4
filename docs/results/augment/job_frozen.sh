#!/bin/bash
# support-set augmentation ablation on the frozen MiniLM init (peft default LoRA), ARSC-dev, 0 adaptation steps
set -e
cd /work/runs/augment/src-0746e64
export PYTHONPATH=/work/runs/augment/src-0746e64
/usr/bin/time -v /work/main/.venv/bin/python -m metalora.augment.calibration /work/runs/augment/frozen-init --per-class 50 2> /work/runs/augment/frozen-stats.time
/work/main/.venv/bin/metalora bench arsc --data-dir /work/shared/data/arsc --targets music,camera_photo,health_personal_care,toys_games   --meta-init /work/runs/augment/frozen-init --methods meta --augment none,feature,support,support+feature --steps 0 --curve-steps none --out /work/runs/augment/ablation-frozen --no-progress --augment-set copies=1
