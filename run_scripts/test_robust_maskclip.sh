#!/usr/bin/env bash
# The paper's robustness sweep (Fig. 5 and 9): Gaussian blur kernels 3..23 and JPEG quality
# 60..100 on every OpenSDID test split (SD1.5 in-domain, the others cross-domain), plus the
# clean reference. Add --noise_vars 5,10,20 for Gaussian noise, --test_splits sd15,sd3 for fewer.
#   CKPT=path/to/checkpoint-best.pth NPROC=4 bash run_scripts/test_robust_maskclip.sh [extra flags]
set -euo pipefail
cd "$(dirname "$0")/.."
ckpt=${CKPT:-./output_dir_maskclip/checkpoint-best.pth}
base_dir=${BASE_DIR:-./eval_robust_dir_maskclip}
nproc=${NPROC:-4}
mkdir -p "${base_dir}"
echo "Robustness sweep of ${ckpt} on ${nproc} GPU(s); stdout: ${base_dir}/logs.log, stderr: ${base_dir}/error.log"
torchrun --standalone --nnodes=1 --nproc_per_node="${nproc}" -m imdlbenco_maskclip test-robust \
    --config benco_configs/maskclip_paper.yaml \
    --checkpoint_path "${ckpt}" \
    --blur_kernels 3,5,7,9,11,13,15,17,19,21,23 \
    --jpeg_qualities 60,70,80,90,100 \
    --output_dir "${base_dir}" \
    --log_dir "${base_dir}" \
    "$@" \
    2> "${base_dir}/error.log" 1> "${base_dir}/logs.log" \
    || { echo "robustness sweep failed; see ${base_dir}/error.log"; exit 1; }
echo "done: ${base_dir}/robustness.csv, ${base_dir}/robustness.json, curves in ${base_dir}/plots/"
