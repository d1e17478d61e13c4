#!/bin/bash
# The ARSC-dev support-augmentation ablation, from the repository root, through the bench slot:
#   /work/bin/benchslot bash docs/results/augment/run_ablation.sh INIT OUT
# INIT: a meta-init (e.g. a run of recipes/configs/minilm_fomaml_arsc_dev.yaml), or the frozen backbone written by
# `python docs/results/augment/frozen_init.py DIR`. Statistics for calibrate are computed in the run when INIT lacks them.
set -e
INIT=$1; OUT=$2
metalora bench arsc --data-dir ../shared/data/arsc --targets music,camera_photo,health_personal_care,toys_games \
  --methods meta --meta-init "$INIT" --augment none,feature,support,support+feature --steps 0 --curve-steps none \
  --augment-set copies=1 --out "$OUT" --no-progress
# mixup acts through adaptation steps:
metalora bench arsc --data-dir ../shared/data/arsc --targets music,camera_photo,health_personal_care,toys_games \
  --methods meta --meta-init "$INIT" --augment none,mixup,support+mixup --steps 5 --curve-steps none \
  --augment-set copies=1 --out "$OUT-steps5" --no-progress
