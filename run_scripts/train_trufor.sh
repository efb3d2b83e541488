#!/usr/bin/env bash
# Baseline: BenCo's TruFor on OpenSDID through the same pipeline and protocol as MaskCLIP, its
# two training phases in sequence (benco_configs/trufor.yaml):
#   phase 2 (localization; Noiseprint++ and the detection head frozen) -> BASE_DIR/phase2,
#   phase 3 (confidence and detection; the rest frozen), from phase 2's checkpoint-best.pth
#   as it is -> BASE_DIR/phase3, its best checkpoint chosen by image F1.
#   NP_WEIGHTS=.../noiseprint.pth MIT_WEIGHTS=.../mit_b2.pth NPROC=4 bash run_scripts/train_trufor.sh [extra flags]
# Extra flags go to both phases. PHASES=3 runs phase 3 alone (phase 2 already done).
set -euo pipefail
cd "$(dirname "$0")/.."
source run_scripts/baseline_lib.sh
base_dir=${BASE_DIR:-./output_dir_trufor}
train_trufor "${base_dir}" "$@"
echo "done: tables ${base_dir}/phase3/metrics.md, checkpoints ${base_dir}/phase3/checkpoint-*.pth"
