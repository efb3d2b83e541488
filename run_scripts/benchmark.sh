#!/usr/bin/env bash
# Tables 3 and 4 and Figure 5 for the four models: each trained checkpoint through `test` and
# `test-robust` (the paper's blur and JPEG sweeps), then `report` side by side with the
# paper's published numbers. Run after the four training scripts (docs/benchmarking.md).
#   NPROC=4 bash run_scripts/benchmark.sh [extra flags for test and test-robust, e.g. --image_score_from_mask max]
set -euo pipefail
cd "$(dirname "$0")/.."
source run_scripts/baseline_lib.sh
out=${BASE_DIR:-./benchmark}
declare -A checkpoints=(
    [maskclip]=${MASKCLIP_CKPT:-./output_dir_maskclip}
    [iml_vit]=${IML_VIT_CKPT:-./output_dir_iml_vit}
    [cat_net]=${CAT_NET_CKPT:-./output_dir_cat_net}
    [trufor]=${TRUFOR_CKPT:-./output_dir_trufor/phase3}
)
runs=()
for name in maskclip iml_vit cat_net trufor; do
    # The model, its flags and the input size come from the checkpoint's training flags.
    launch test "${out}/${name}/test" --checkpoint_path "${checkpoints[${name}]}" --test_batch_size 16 --num_workers 8 "$@"
    launch test-robust "${out}/${name}/robust" --checkpoint_path "${checkpoints[${name}]}" --test_batch_size 16 \
        --num_workers 8 "$@"
    runs+=("${out}/${name}/test" "${out}/${name}/robust")
done
python -m imdlbenco_maskclip report "${runs[@]}" --published --output_dir "${out}/report"
echo "done: ${out}/report/report.md, report.csv, robustness.csv, plots/compare_*.png"
