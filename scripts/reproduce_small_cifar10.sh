#!/usr/bin/env bash
# Regenerates every figure of RESULTS.md (small CPU configurations on CIFAR-10 (JPEG)).
# Usage: scripts/reproduce_small_cifar10.sh [RUNS_DIR]   (about 1 hour on 2 CPU cores)
set -euo pipefail
RUNS=${1:-runs}
V=${VIROLBI:-.venv/bin/virolbi}
LIMIT=${LIMIT:-100}        # validation images per evaluation (seeded subset)
PGD_STEPS=${PGD_STEPS:-10}
for proc in vanilla fixed iterative blur; do
  [ -f "$RUNS/small_cifar10_${proc}/model.pt" ] ||  # finished runs are kept (delete to redo)
    $V train --config configs/small/cifar10_${proc}.yaml --output-dir "$RUNS/small_cifar10_${proc}"
  $V evaluate --checkpoint "$RUNS/small_cifar10_${proc}/last.pt" --data cifar10-jpeg --split val \
     --suite paper --preprocess-sparsity 0.6 --limit "$LIMIT" --pgd-steps "$PGD_STEPS" \
     --output-dir "$RUNS/small_cifar10_${proc}/eval"
done
# The Blur baseline is also evaluated with its own test-time blur (the paper's "with preprocessing").
$V evaluate --checkpoint "$RUNS/small_cifar10_blur/last.pt" --data cifar10-jpeg --split val \
   --suite paper --preprocess-blur --limit "$LIMIT" --pgd-steps "$PGD_STEPS" \
   --output-dir "$RUNS/small_cifar10_blur/eval_blur"
# Table 5: clean accuracy against the training sparsity level (0.6 is the Fixed run above).
for level in 0.4 0.8; do
  [ -f "$RUNS/small_cifar10_fixed_${level}/model.pt" ] ||
    $V train --config configs/sweep/small_cifar10_fixed_${level}.yaml --output-dir "$RUNS/small_cifar10_fixed_${level}"
done
.venv/bin/python scripts/make_results.py "$RUNS" --output RESULTS.md
