#!/usr/bin/env bash
# The tiny MaskCLIP trained on the embedded OpenSDID sample, then tested on the embedded BR-Gen
# sample with the BR-Gen paper's protocol, on CPU in one process (its training step is
# demo.sh's, about 6 minutes on two cores).
# Prints Split A (GAN vs diffusion), Split B (background vs stuff) and the area table.
# Settings: benco_configs/maskclip_demo.yaml. Output: ${OUT_DIR:-./demo_brgen_output}.
# With CHECKPOINT=<a train --output_dir> the training step is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT_DIR:-./demo_brgen_output}
config=benco_configs/maskclip_demo.yaml
mkdir -p "${out}"

step() {  # step NAME COMMAND...: run one command with its output in ${out}/NAME.log
    local name=$1; shift
    echo "== ${name}: log ${out}/${name}.log"
    if ! "$@" > "${out}/${name}.log" 2>&1; then
        tail -n 30 "${out}/${name}.log"
        echo "== ${name} failed; full log: ${out}/${name}.log" >&2
        exit 1
    fi
}

checkpoint=${CHECKPOINT:-${out}/train}
if [ -z "${CHECKPOINT:-}" ]; then
    step train python -m imdlbenco_maskclip train --config "${config}" --output_dir "${out}/train"
fi
# Every image of the sample (--balance 0), so each area bin holds generated images; the whole
# folder and the two families as sets of their own.
step test_brgen python -m imdlbenco_maskclip test --config "${config}" --checkpoint_path "${checkpoint}" \
    --dataset BRGen --test_data_path sample:brgen --test_splits all,gan,diffusion --balance 0 \
    --output_dir "${out}/test_brgen"

echo
sed -n '/^## The BR-Gen paper/,$p' "${out}/test_brgen/metrics.md"
echo "Trained on the OpenSDID sample, whose generator is a latent-diffusion stand-in: the sample's"
echo "diffusion inpainters share its trace, its GAN inpainters do not (Split A). A stand-in sample:"
echo "the figures show the protocol at work, not MaskCLIP's accuracy on BR-Gen."
echo "Tables: ${out}/test_brgen/metrics.md and metrics.json"
