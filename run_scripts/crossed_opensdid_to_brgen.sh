#!/usr/bin/env bash
# The crossed benchmark, OpenSDID -> BR-Gen: MaskCLIP, NFA-ViT and BenCo's TruFor, SparseViT,
# PSCC-Net, MVSS-Net and ManTra-Net, each with its recipe (benco_configs/), trained on OpenSDID
# SD1.5 for 20 epochs, tested on OpenSDID's five splits and on BR-Gen's test folder (the BR-Gen
# paper's protocol), swept for robustness on BR-Gen, then `report` with both datasets side by
# side (docs/benchmarking.md#the-crossed-benchmark). Weight files in ./weights (WEIGHTS=DIR).
#   BRGEN_TEST=/data/BR-Gen/test NPROC=4 bash run_scripts/crossed_opensdid_to_brgen.sh [extra training flags]
#   MODELS="maskclip nfa_vit" ...   these models only; TRAIN=0: test the checkpoints already in BASE_DIR; ROBUST=0: no sweep
set -euo pipefail
cd "$(dirname "$0")/.."
source run_scripts/baseline_lib.sh
opensdid_train=(--dataset OpenSDID --data_path "${OPENSDID_TRAIN:-nebula/OpenSDI_train}" --train_split sd15
                --test_data_path "${OPENSDID_TEST:-nebula/OpenSDI_test}" --test_splits sd15,sd2,sdxl,sd3,flux
                --epochs 20 --test_period 4)
opensdid_test=(--dataset OpenSDID --test_data_path "${OPENSDID_TEST:-nebula/OpenSDI_test}"
               --test_splits sd15,sd2,sdxl,sd3,flux)
brgen_test=(--dataset BRGen --test_data_path "${BRGEN_TEST:-/data/BR-Gen/test}" --test_splits all --balance 1)
crossed "${BASE_DIR:-./crossed_opensdid_to_brgen}" opensdid brgen "$@"
