#!/usr/bin/env bash
# The whole flow on the embedded OpenSDID sample, on CPU in one process (a few minutes on two
# cores): train the tiny random-init MaskCLIP, test it on the five sample splits, sweep blur
# and JPEG on two splits. Settings: benco_configs/maskclip_demo.yaml. Output: ${OUT_DIR:-./demo_output}.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT_DIR:-./demo_output}
config=benco_configs/maskclip_demo.yaml
mkdir -p "${out}"
start=$(date +%s)

step() {  # step NAME COMMAND...: run one command with its output in ${out}/NAME.log
    local name=$1; shift
    local t0=$(date +%s)
    echo "== ${name}: log ${out}/${name}.log"
    if ! "$@" > "${out}/${name}.log" 2>&1; then
        tail -n 30 "${out}/${name}.log"
        echo "== ${name} failed; full log: ${out}/${name}.log" >&2
        exit 1
    fi
    echo "   done in $(( $(date +%s) - t0 ))s"
}

step sample python -m imdlbenco_maskclip sample
step train python -m imdlbenco_maskclip train --config "${config}" \
    --output_dir "${out}/train"
step test python -m imdlbenco_maskclip test --config "${config}" \
    --checkpoint_path "${out}/train" --output_dir "${out}/test"
step test_robust python -m imdlbenco_maskclip test-robust --config "${config}" \
    --checkpoint_path "${out}/train" --test_splits sd15,sd3 \
    --blur_kernels 3,7,11 --jpeg_qualities 60,80,100 --output_dir "${out}/test_robust"

echo
cat "${out}/test/metrics.md"
echo
echo "Demo finished in $(( $(date +%s) - start ))s (tiny random-init model: the numbers show the pipeline, not MaskCLIP)."
echo "Tables:      ${out}/test/metrics.md (and metrics.json)"
echo "Robustness:  ${out}/test_robust/robustness.csv (and .json)"
echo "Plots:       $(ls "${out}"/test_robust/plots/*.png | tr '\n' ' ')"
echo "Checkpoints: $(ls "${out}"/train/checkpoint-*.pth | tr '\n' ' ')"
echo "TensorBoard: tensorboard --logdir ${out}"
