#!/usr/bin/env bash
# MaskCLIP as the authors trained it for the paper's numbers (benco_configs/maskclip_authors.yaml:
# their train.sh + train.py): SD1.5 split of nebula/OpenSDI_train, tested on SD1.5 of
# nebula/OpenSDI_test every epoch, 512 px, AdamW lr 1e-4, 50 epochs, batch 16 on one GPU.
#   NPROC=4 bash run_scripts/train_maskclip.sh --batch_size 4     # 4 GPUs, still 16 images per step; extra flags win
#   CONFIG=benco_configs/maskclip_paper.yaml NPROC=4 bash run_scripts/train_maskclip.sh   # the paper's-text recipe
#   bash run_scripts/train_maskclip.sh --resume auto              # continue a stopped run
set -euo pipefail
cd "$(dirname "$0")/.."
base_dir=${BASE_DIR:-./output_dir_maskclip}
nproc=${NPROC:-1}
mkdir -p "${base_dir}"
echo "MaskCLIP training on ${nproc} GPU(s); stdout: ${base_dir}/logs.log, stderr: ${base_dir}/error.log"
torchrun --standalone --nnodes=1 --nproc_per_node="${nproc}" -m imdlbenco_maskclip train \
    --config "${CONFIG:-benco_configs/maskclip_authors.yaml}" \
    --output_dir "${base_dir}" \
    --log_dir "${base_dir}" \
    "$@" \
    2> "${base_dir}/error.log" 1> "${base_dir}/logs.log" \
    || { echo "training failed; see ${base_dir}/error.log"; exit 1; }
echo "done: tables ${base_dir}/metrics.md, checkpoints ${base_dir}/checkpoint-*.pth, TensorBoard ${base_dir}"
