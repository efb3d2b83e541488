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
