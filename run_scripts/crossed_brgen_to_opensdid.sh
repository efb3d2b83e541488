#!/usr/bin/env bash
# The crossed benchmark, BR-Gen -> OpenSDID: MaskCLIP, NFA-ViT and BenCo's TruFor, SparseViT,
# PSCC-Net, MVSS-Net and ManTra-Net, each with its recipe (benco_configs/), trained on BR-Gen's
# train folder (balanced: as many generated images as real ones) for 200 epochs, about the
# images of 20 OpenSDID SD1.5 epochs, tested on BR-Gen's test folder (the BR-Gen paper's
# protocol) and on OpenSDID's five splits, swept for robustness on OpenSDID, then `report` with
# both datasets side by side (docs/benchmarking.md#the-crossed-benchmark). Weights in ./weights.
#   BRGEN_TRAIN=/data/BR-Gen/train BRGEN_TEST=/data/BR-Gen/test NPROC=4 bash run_scripts/crossed_brgen_to_opensdid.sh [extra training flags]
#   MODELS="maskclip nfa_vit" ...   these models only; TRAIN=0: test the checkpoints already in BASE_DIR; ROBUST=0: no sweep
set -euo pipefail
cd "$(dirname "$0")/.."
source run_scripts/baseline_lib.sh
brgen_train=(--dataset BRGen --data_path "${BRGEN_TRAIN:-/data/BR-Gen/train}" --train_split all --balance 1
             --test_data_path "${BRGEN_TEST:-/data/BR-Gen/test}" --test_splits all --epochs 200 --test_period 20)
brgen_test=(--dataset BRGen --test_data_path "${BRGEN_TEST:-/data/BR-Gen/test}" --test_splits all --balance 1)
opensdid_test=(--dataset OpenSDID --test_data_path "${OPENSDID_TEST:-nebula/OpenSDI_test}"
               --test_splits sd15,sd2,sdxl,sd3,flux)
crossed "${BASE_DIR:-./crossed_brgen_to_opensdid}" brgen opensdid "$@"
