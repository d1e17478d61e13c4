#!/bin/bash
# support-set augmentation ablation on the ARSC-dev meta-init (robust's run of recipes/configs/minilm_fomaml_arsc_dev.yaml, main's code)
set -e
cd /work/runs/augment/src-0746e64
export PYTHONPATH=/work/runs/augment/src-0746e64
rm -rf /work/runs/augment/meta-init && cp -r /work/runs/robust/base-meta/meta-init /work/runs/augment/meta-init
/usr/bin/time -v /work/main/.venv/bin/python -m metalora.augment.calibration /work/runs/augment/meta-init --per-class 50 2> /work/runs/augment/meta-stats.time
/work/main/.venv/bin/metalora bench arsc --data-dir /work/shared/data/arsc --targets music,camera_photo,health_personal_care,toys_games   --meta-init /work/runs/augment/meta-init --methods meta --augment none,feature,support,support+feature --steps 0 --curve-steps none --out /work/runs/augment/ablation-meta --no-progress --augment-set copies=1
