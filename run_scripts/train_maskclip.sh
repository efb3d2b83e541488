#!/usr/bin/env bash
# MaskCLIP with the paper's settings (benco_configs/maskclip_paper.yaml): trained on the SD1.5
# split of nebula/OpenSDI_train, tested on all five splits of nebula/OpenSDI_test, image 512,
# Adam lr 1e-4, 20 epochs, batch 16 per GPU on 4 GPUs (the paper's 64).
#   NPROC=8 bash run_scripts/train_maskclip.sh --batch_size 8     # other GPU counts; extra flags win
#   CONFIG=benco_configs/maskclip_authors.yaml NPROC=1 bash run_scripts/train_maskclip.sh   # the authors' recipe
#   bash run_scripts/train_maskclip.sh --resume auto              # continue a stopped run
set -euo pipefail
cd "$(dirname "$0")/.."
base_dir=${BASE_DIR:-./output_dir_maskclip}
nproc=${NPROC:-4}
mkdir -p "${base_dir}"
echo "MaskCLIP training on ${nproc} GPU(s); stdout: ${base_dir}/logs.log, stderr: ${base_dir}/error.log"
torchrun --standalone --nnodes=1 --nproc_per_node="${nproc}" -m imdlbenco_maskclip train \
    --config "${CONFIG:-benco_configs/maskclip_paper.yaml}" \
    --output_dir "${base_dir}" \
    --log_dir "${base_dir}" \
    "$@" \
    2> "${base_dir}/error.log" 1> "${base_dir}/logs.log" \
    || { echo "training failed; see ${base_dir}/error.log"; exit 1; }
echo "done: tables ${base_dir}/metrics.md, checkpoints ${base_dir}/checkpoint-*.pth, TensorBoard ${base_dir}"
