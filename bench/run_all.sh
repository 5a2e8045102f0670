#!/usr/bin/env bash
# Runs the side-by-side benchmarks one after the other (they each want the 2 cores to themselves) and keeps
# their output in bench/results/. Small sizes by default (about 6 minutes on 2 cores); --full runs the
# default sizes (about 13 minutes on 2 cores, see bench/README.md).
#
#   bench/run_all.sh            # small
#   bench/run_all.sh --full     # default sizes
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
small=(--small)
mop_vs_keras=(--rows 4000 --epochs 1 --no-keras-all-cores)
suffix=_small
if [[ "${1:-}" == "--full" ]]; then
    small=()
    mop_vs_keras=()
    suffix=
elif [[ $# -gt 0 ]]; then
    echo "usage: bench/run_all.sh [--full]" >&2
    exit 2
fi
mkdir -p bench/results
run() {
    local name=$1
    shift
    echo "== $name $* ($(date -u +%H:%M:%S) UTC)" >&2
    local started=$SECONDS
    "$PY" "bench/$name.py" "$@" | tee "bench/results/$name$suffix.txt"
    echo "== $name took $((SECONDS - started)) s" >&2
}
run approaches "${small[@]}"
run hop_overhead "${small[@]}"
run data_path "${small[@]}"
run claim_latency "${small[@]}"
run isolation
run workload "${small[@]}"
run mop_vs_keras "${mop_vs_keras[@]}"
run simulate_scale "${small[@]}"
run scaling "${small[@]}"
