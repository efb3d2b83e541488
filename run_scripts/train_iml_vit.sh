#!/usr/bin/env bash
# Baseline: BenCo's IML-ViT on OpenSDID through the same pipeline and protocol as MaskCLIP
# (benco_configs/iml_vit.yaml: SD1.5 train, five test splits, 512 resized, edge width 7). It
# starts from MAE's mae_pretrain_vit_base.pth and gives no image-level prediction (image
# metrics n/a unless tested with --image_score_from_mask max).
#   MAE_WEIGHTS=path/to/mae_pretrain_vit_base.pth NPROC=4 bash run_scripts/train_iml_vit.sh [extra flags]
set -euo pipefail
cd "$(dirname "$0")/.."
source run_scripts/baseline_lib.sh
base_dir=${BASE_DIR:-./output_dir_iml_vit}
launch train "${base_dir}" --config benco_configs/iml_vit.yaml \
    --vit_pretrain_path "${MAE_WEIGHTS:-./weights/mae_pretrain_vit_base.pth}" "$@"
echo "done: tables ${base_dir}/metrics.md, checkpoints ${base_dir}/checkpoint-*.pth"
