#!/usr/bin/env bash
# NFA-ViT with its authors' recipe (benco_configs/nfa_vit_authors.yaml): BR-Gen's BenCo JSON
# lists, image 512, AdamW lr 2e-4, 200 epochs, batch 16 per GPU on 4 GPUs. The three weight
# files go in ./weights (see imdlbenco_maskclip/model_zoo/nfa_vit/README.md).
#   CONFIG=benco_configs/nfa_vit_paper.yaml bash run_scripts/train_nfa_vit.sh   # the paper's recipe
#   NPROC=8 bash run_scripts/train_nfa_vit.sh --batch_size 8                   # other GPU counts; extra flags win
#   bash run_scripts/train_nfa_vit.sh --resume auto                            # continue a stopped run
set -euo pipefail
cd "$(dirname "$0")/.."
base_dir=${BASE_DIR:-./output_dir_nfa_vit}
nproc=${NPROC:-4}
mkdir -p "${base_dir}"
echo "NFA-ViT training on ${nproc} GPU(s); stdout: ${base_dir}/logs.log, stderr: ${base_dir}/error.log"
torchrun --standalone --nnodes=1 --nproc_per_node="${nproc}" -m imdlbenco_maskclip train \
    --config "${CONFIG:-benco_configs/nfa_vit_authors.yaml}" \
    --output_dir "${base_dir}" \
    --log_dir "${base_dir}" \
    "$@" \
    2> "${base_dir}/error.log" 1> "${base_dir}/logs.log" \
    || { echo "training failed; see ${base_dir}/error.log"; exit 1; }
echo "done: tables ${base_dir}/metrics.md, checkpoints ${base_dir}/checkpoint-*.pth, TensorBoard ${base_dir}"
