#!/usr/bin/env bash
# Baseline: BenCo's CAT-Net on OpenSDID through the same pipeline and protocol as MaskCLIP
# (benco_configs/cat_net.yaml). Needs jpegio (pip install -e ".[baselines]") and CAT-Net's two
# weight files, written into a copy of BenCo's CAT_full.yaml in the output folder.
#   RGB_WEIGHTS=.../hrnetv2_w48_imagenet_pretrained.pth DCT_WEIGHTS=.../DCT_djpeg.pth.tar \
#     NPROC=4 bash run_scripts/train_cat_net.sh [extra flags]
set -euo pipefail
cd "$(dirname "$0")/.."
source run_scripts/baseline_lib.sh
base_dir=${BASE_DIR:-./output_dir_cat_net}
launch train "${base_dir}" --config benco_configs/cat_net.yaml \
    --pretrained_rgb "${RGB_WEIGHTS:-./weights/hrnetv2_w48_imagenet_pretrained.pth}" \
    --pretrained_dct "${DCT_WEIGHTS:-./weights/DCT_djpeg.pth.tar}" "$@"
echo "done: tables ${base_dir}/metrics.md, checkpoints ${base_dir}/checkpoint-*.pth"
