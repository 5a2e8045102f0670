#!/usr/bin/env bash
# Runs the side-by-side benchmarks one after the other (they each want the 2 cores to themselves) and keeps
# their output in bench/results/: each script's printed table as NAME[_small].txt, and for the run
# run_all[_small].csv (each script's start, seconds and exit status) and machine[_small].txt (what it ran on).
# Small sizes by default; --full runs the default sizes (the tables in bench/README.md, which
# `bench/report.py` regenerates from bench/results/).
#
# A script exits non-zero when it misses its target (or fails); the others still run, and this script
# then names the failed ones and exits 1.
#
#   bench/run_all.sh            # small
#   bench/run_all.sh --full     # default sizes
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
small=(--small)
mop_vs_keras=(--rows 4000 --epochs 1 --no-keras-all-cores)
hitl_latency=(--trials 20 --adds 5)
predict_on_segments=(--rows 4000)
feature_transfer=(--quick)
autonomy=(--quick)
suffix=_small
if [[ "${1:-}" == "--full" ]]; then
    small=()
    mop_vs_keras=()
    hitl_latency=()
    predict_on_segments=()
    feature_transfer=()
    autonomy=()
    suffix=
elif [[ $# -gt 0 ]]; then
    echo "usage: bench/run_all.sh [--full]" >&2
    exit 2
fi
mkdir -p bench/results
timings=bench/results/run_all$suffix.csv
echo "script,started_utc,seconds,status" >"$timings"
"$PY" bench/benchlib/machine.py >"bench/results/machine$suffix.txt"
failed=()
run() {
    local name=$1
    shift
    local started_utc
    started_utc=$(date -u +%Y-%m-%dT%H:%M:%SZ)
    echo "== $name $* ($started_utc)" >&2
    local started=$SECONDS
    local status=0
    "$PY" "bench/$name.py" "$@" | tee "bench/results/$name$suffix.txt" || status=${PIPESTATUS[0]}
    local seconds=$((SECONDS - started))
    echo "== $name took $seconds s, exit status $status" >&2
    echo "$name,$started_utc,$seconds,$status" >>"$timings"
    if [[ $status -ne 0 ]]; then
        failed+=("$name")
    fi
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
run hitl_latency "${hitl_latency[@]}"
run faults
run predict_on_segments "${predict_on_segments[@]}"
run feature_transfer "${feature_transfer[@]}"
run autonomy "${autonomy[@]}"
if [[ ${#failed[@]} -gt 0 ]]; then
    echo "FAILED (missed a target or crashed): ${failed[*]}" >&2
    exit 1
fi
echo "all benchmarks met their targets" >&2
