#!/usr/bin/env bash
# Test a MaskCLIP checkpoint on all five OpenSDID test splits with the paper's protocol
# (pixel IoU/F1 on partial fakes, image F1/accuracy/AUC on all images; Tables 3 and 4).
#   CKPT=path/to/checkpoint-19.pth NPROC=2 bash run_scripts/test_maskclip.sh [extra flags]
set -euo pipefail
cd "$(dirname "$0")/.."
ckpt=${CKPT:-./output_dir_maskclip/checkpoint-best.pth}
base_dir=${BASE_DIR:-./eval_dir_maskclip}
nproc=${NPROC:-4}
mkdir -p "${base_dir}"
echo "Testing ${ckpt} on ${nproc} GPU(s); stdout: ${base_dir}/logs.log, stderr: ${base_dir}/error.log"
torchrun --standalone --nnodes=1 --nproc_per_node="${nproc}" -m imdlbenco_maskclip test \
    --config benco_configs/maskclip_paper.yaml \
    --checkpoint_path "${ckpt}" \
    --output_dir "${base_dir}" \
    --log_dir "${base_dir}" \
    "$@" \
    2> "${base_dir}/error.log" 1> "${base_dir}/logs.log" \
    || { echo "testing failed; see ${base_dir}/error.log"; exit 1; }
echo "done: tables ${base_dir}/metrics.md and ${base_dir}/metrics.json; per-split logs in ${base_dir}/<split>/"
