#!/usr/bin/env bash
# MaskCLIP on BR-Gen (benco_configs/brgen_maskclip.yaml): trained on the train folder, tested on
# the test folder with the BR-Gen paper's protocol (R@50 of real and generated images, Split A/B,
# results by edited area), balanced as the authors do, on 4 GPUs.
#   TRAIN=/data/BR-Gen/train TEST=/data/BR-Gen/test bash run_scripts/train_brgen.sh
#   bash run_scripts/train_brgen.sh --train_split gan --test_splits diffusion   # the paper's Table 4
set -euo pipefail
cd "$(dirname "$0")/.."
base_dir=${BASE_DIR:-./output_dir_brgen}
nproc=${NPROC:-4}
mkdir -p "${base_dir}"
echo "MaskCLIP on BR-Gen, ${nproc} GPU(s); stdout: ${base_dir}/logs.log, stderr: ${base_dir}/error.log"
torchrun --standalone --nnodes=1 --nproc_per_node="${nproc}" -m imdlbenco_maskclip train \
    --config benco_configs/brgen_maskclip.yaml \
    --data_path "${TRAIN:-/data/BR-Gen/train}" \
    --test_data_path "${TEST:-/data/BR-Gen/test}" \
    --output_dir "${base_dir}" \
    --log_dir "${base_dir}" \
    "$@" \
    2> "${base_dir}/error.log" 1> "${base_dir}/logs.log" \
    || { echo "training failed; see ${base_dir}/error.log"; exit 1; }
echo "done: tables ${base_dir}/metrics.md (BR-Gen Tables 2/3 and 7 forms), checkpoints ${base_dir}/checkpoint-*.pth"
