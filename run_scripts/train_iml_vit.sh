#!/usr/bin/env bash
# Baseline: BenCo's IML-ViT on OpenSDID through the same pipeline and protocol as MaskCLIP
# (SD1.5 train, five test splits, image 512 resized, edge width 7). IML-ViT starts from the
# MAE ViT-B/16 weights (mae_pretrain_vit_base.pth from the MAE authors' release); it gives no
# image-level prediction, so its image metrics are n/a.
#   MAE_WEIGHTS=path/to/mae_pretrain_vit_base.pth NPROC=4 bash run_scripts/train_iml_vit.sh [extra flags]
set -euo pipefail
cd "$(dirname "$0")/.."
weights=${MAE_WEIGHTS:-./mae_pretrain_vit_base.pth}
if [ ! -f "${weights}" ]; then
    echo "MAE weights not found at ${weights}: download mae_pretrain_vit_base.pth from the MAE release" \
         "(github.com/facebookresearch/mae) and set MAE_WEIGHTS" >&2
    exit 1
fi
base_dir=${BASE_DIR:-./output_dir_iml_vit}
nproc=${NPROC:-4}
mkdir -p "${base_dir}"
echo "IML-ViT training on ${nproc} GPU(s); stdout: ${base_dir}/logs.log, stderr: ${base_dir}/error.log"
torchrun --standalone --nnodes=1 --nproc_per_node="${nproc}" -m imdlbenco_maskclip train \
    --model IML_ViT \
    --vit_pretrain_path "${weights}" \
    --input_size 512 \
    --image_size 512 \
    --if_resizing \
    --edge_mask_width 7 \
    --data_path nebula/OpenSDI_train \
    --train_split sd15 \
    --test_data_path nebula/OpenSDI_test \
    --test_splits sd15,sd2,sdxl,sd3,flux \
    --batch_size 8 \
    --test_batch_size 16 \
    --epochs 20 \
    --optimizer adamw \
    --lr 1e-4 \
    --min_lr 5e-7 \
    --weight_decay 0.05 \
    --warmup_epochs 2 \
    --test_period 4 \
    --num_workers 8 \
    --output_dir "${base_dir}" \
    --log_dir "${base_dir}" \
    "$@" \
    2> "${base_dir}/error.log" 1> "${base_dir}/logs.log" \
    || { echo "training failed; see ${base_dir}/error.log"; exit 1; }
echo "done: tables ${base_dir}/metrics.md, checkpoints ${base_dir}/checkpoint-*.pth"
