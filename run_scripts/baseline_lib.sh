# Sourced by the baseline scripts: launch COMMAND DIR FLAGS... runs `benco-maskclip COMMAND`
# under torchrun on ${NPROC:-4} processes of one node, logs in DIR/logs.log and DIR/error.log.
# Several nodes: set TORCHRUN_ARGS="--nnodes=2 --node_rank=R --rdzv_backend=c10d --rdzv_endpoint=HOST:29500".
launch() {
    local command=$1 dir=$2
    shift 2
    mkdir -p "${dir}"
    echo "${command} on ${NPROC:-4} process(es) per node; stdout: ${dir}/logs.log, stderr: ${dir}/error.log"
    # shellcheck disable=SC2086  # TORCHRUN_ARGS is a list of flags
    torchrun ${TORCHRUN_ARGS:---standalone --nnodes=1} --nproc_per_node="${NPROC:-4}" -m imdlbenco_maskclip \
        "${command}" --output_dir "${dir}" --log_dir "${dir}" "$@" \
        2> "${dir}/error.log" 1> "${dir}/logs.log" \
        || { echo "${command} failed; see ${dir}/error.log" >&2; tail -n 3 "${dir}/error.log" >&2; exit 1; }
}

# train_trufor DIR FLAGS...: TruFor's phase 2 into DIR/phase2 (unless PHASES=3), then phase 3
# from its checkpoint-best.pth into DIR/phase3, FLAGS for both (benco_configs/trufor.yaml).
train_trufor() {
    local dir=$1
    shift
    if [ "${PHASES:-2,3}" != 3 ]; then
        launch train "${dir}/phase2" --config benco_configs/trufor.yaml --phase 2 \
            --np_pretrain_weights "${NP_WEIGHTS:-${WEIGHTS:-./weights}/noiseprint.pth}" \
            --mit_b2_pretrain_weights "${MIT_WEIGHTS:-${WEIGHTS:-./weights}/mit_b2.pth}" "$@"
    fi
    launch train "${dir}/phase3" --config benco_configs/trufor.yaml --phase 3 \
        --det_resume_ckpt "${dir}/phase2/checkpoint-best.pth" --best_metric avg_image_f1 "$@"
}

# The crossed benchmark (run_scripts/crossed_*.sh): each model trained on one dataset, tested on
# both. Weight files in ${WEIGHTS:-./weights}, or the variables named below.
CROSSED_MODELS="maskclip nfa_vit trufor sparse_vit pscc_net mvss_net mantra_net"

# train_model NAME DIR FLAGS...: NAME's recipe (its YAML and weight files) with FLAGS (the data
# and the budget), checkpoints in DIR (TruFor's two phases: DIR/phase3).
train_model() {
    local name=$1 dir=$2 weights=${WEIGHTS:-./weights}
    shift 2
    case ${name} in
        maskclip) launch train "${dir}" --config benco_configs/maskclip_paper.yaml "$@" ;;
        nfa_vit) launch train "${dir}" --config benco_configs/nfa_vit_authors.yaml \
            --np_pretrain_weights "${NP_WEIGHTS:-${weights}/noiseprint.pth}" \
            --seg_b0_pretrain_weights "${SEG_B0_WEIGHTS:-${weights}/segformer_b0_backbone_weights.pth}" \
            --seg_b2_pretrain_weights "${SEG_B2_WEIGHTS:-${weights}/segformer_b2_backbone_weights.pth}" "$@" ;;
        trufor) train_trufor "${dir}" "$@" ;;
        sparse_vit) launch train "${dir}" --config benco_configs/sparse_vit.yaml \
            --pretrained_path "${UNIFORMER_WEIGHTS:-${weights}/uniformer_base_in1k.pth}" "$@" ;;
        pscc_net) launch train "${dir}" --config benco_configs/pscc_net.yaml \
            --pretrain_path "${HRNET_W18_WEIGHTS:-${weights}/hrnet_w18_small_v2.pth}" "$@" ;;
        mvss_net) launch train "${dir}" --config benco_configs/mvss_net.yaml \
            --resnet50_pretrain_weights "${RESNET50_WEIGHTS:-${weights}/resnet50-19c8e357.pth}" "$@" ;;
        mantra_net) launch train "${dir}" --config benco_configs/mantra_net.yaml "$@" ;;
        *) echo "unknown model ${name}; the crossed benchmark's: ${CROSSED_MODELS}" >&2; exit 1 ;;
    esac
}

# crossed OUT SOURCE TARGET TRAIN_FLAGS...: for each of ${MODELS:-$CROSSED_MODELS}, train on the
# data of the array named SOURCE_train (unless TRAIN=0: its checkpoints are in OUT already), test
# on SOURCE_test and TARGET_test (arrays of test flags), sweep TARGET with test-robust (unless
# ROBUST=0), then report every run with both datasets side by side in OUT/report.
crossed() {
    local out=$1 source=$2 target=$3 name checkpoint
    shift 3
    local -n train_data="${source}_train" source_test="${source}_test" target_test="${target}_test"
    # SparseViT and ManTra-Net give no image-level prediction: images scored by their mask's maximum.
    local testing=(--test_batch_size 16 --num_workers 8 --image_score_from_mask max)
    local runs=()
    for name in ${MODELS:-${CROSSED_MODELS}}; do
        [ "${TRAIN:-1}" = 0 ] || train_model "${name}" "${out}/${name}/train" "${train_data[@]}" "$@"
        checkpoint="${out}/${name}/train"
        [ "${name}" != trufor ] || checkpoint="${checkpoint}/phase3"
        local model_testing=("${testing[@]}")
        [ "${name}" != mvss_net ] || model_testing+=(--no_model_eval)  # as BenCo tests it
        launch test "${out}/${name}/${source}" --checkpoint_path "${checkpoint}" "${source_test[@]}" "${model_testing[@]}"
        launch test "${out}/${name}/${target}" --checkpoint_path "${checkpoint}" "${target_test[@]}" "${model_testing[@]}"
        runs+=("${out}/${name}/${source}" "${out}/${name}/${target}")
        if [ "${ROBUST:-1}" != 0 ]; then
            launch test-robust "${out}/${name}/${target}_robust" --checkpoint_path "${checkpoint}" \
                "${target_test[@]}" "${model_testing[@]}"
            runs+=("${out}/${name}/${target}_robust")
        fi
    done
    python -m imdlbenco_maskclip report "${runs[@]}" --published --output_dir "${out}/report"
    echo "done: ${out}/report/report.md (OpenSDID and BR-Gen side by side), report.csv, robustness.csv"
}
