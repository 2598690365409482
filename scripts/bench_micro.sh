#!/usr/bin/env bash
# The microbenchmark suite (Benchmarks/, ordo-one/benchmark): every kernel family at the selected
# level and the hot model and index paths, one thread each.
#
#   bash scripts/bench_micro.sh run    [--short] [--filter REGEX]   results as tables (full pass)
#   bash scripts/bench_micro.sh check  [--full]  [--filter REGEX]   p90 against Thresholds/<kind>
#   bash scripts/bench_micro.sh update [--full]  [--filter REGEX]   record Thresholds/<kind>
#
# update runs the suite three times and keeps the slowest p90 of each metric
# (scripts/merge_thresholds.py): one short run's p90 moves by up to 2x on a shared VM.
# BENCH_KIND=<kind> checks against another kind's baseline (e.g. to see a forced CK_ISA=scalar
# run fail the zen4 check).
# <kind> is the CPU kind (scripts/cpu_kind.sh: zen4, xeon-emr, ...). check and update use the
# short pass (ENGINE_BENCH_SHORT=1: at most 100 samples or 0.8 s per benchmark) unless --full, so
# a recorded baseline and the check CI makes measure the same way. check passes, saying so, on a
# kind that has no baseline. The suite runs in its own process group, stopped by its id when
# this script exits or is interrupted: no benchmark process outlives it.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../Benchmarks"
mode=${1:-run}
[ $# -gt 0 ] && shift
record_dir=""
if [ "$mode" = record ]; then record_dir=$1; shift; fi
short=""
[ "$mode" != run ] && short=1
filter=()
while [ $# -gt 0 ]; do
    case $1 in
    --short) short=1 ;;
    --full) short="" ;;
    --filter) filter=(--filter "$2"); shift ;;
    *) echo "bench_micro.sh: unknown option '$1' (--short, --full, --filter REGEX)" >&2; exit 64 ;;
    esac
    shift
done
kind=${BENCH_KIND:-$(bash "$here/cpu_kind.sh")}
dir="Thresholds/$kind"
export ENGINE_BENCH_SHORT=${ENGINE_BENCH_SHORT:-${short:-0}}
args=(--disable-sandbox)
case "$mode" in
run) args+=(benchmark --no-progress) ;;
check)
    if [ ! -d "$dir" ]; then
        echo "bench_micro.sh: no baseline for CPU kind '$kind' (Benchmarks/$dir); running the suite without a threshold check"
        args+=(benchmark --no-progress)
    else
        args+=(benchmark thresholds check --path "$dir" --no-progress)
    fi
    ;;
update)
    runs=$(mktemp -d /tmp/bench_micro_runs.XXXXXX)
    for i in 1 2 3; do
        ENGINE_BENCH_SHORT=${short:-0} bash "$here/bench_micro.sh" record "$runs/$i" "${filter[@]}"
    done
    python3 "$here/merge_thresholds.py" "$dir" "$runs"/1 "$runs"/2 "$runs"/3
    rm -rf "$runs"
    exit 0
    ;;
record) # one run's p90 files into $1 (used by update)
    args=(--disable-sandbox --allow-writing-to-package-directory benchmark thresholds update --path "$record_dir" --no-progress)
    ;;
*) echo "bench_micro.sh: unknown mode '$mode' (run, check, update)" >&2; exit 64 ;;
esac
echo "bench_micro.sh: $mode on $kind (short pass: ${short:-no}), $(uptime)"
start=$(date +%s)
log=$(mktemp /tmp/bench_micro.XXXXXX)
setsid swift package "${args[@]}" "${filter[@]}" >"$log" 2>&1 &
pgid=$!
tail -n +1 -f --pid="$pgid" "$log" &
tailpid=$!
# The package manager starts the benchmark plugin in a process group of its own, so stopping
# the group we started is not enough: stop every descendant by its process id.
descendants() {
    local c
    for c in $(ps -o pid= --ppid "$1" 2>/dev/null); do
        echo "$c"
        descendants "$c"
    done
}
stop() {
    local pids
    pids="$(descendants "$pgid") $pgid"
    # shellcheck disable=SC2086 # a list of process ids
    kill -TERM $pids 2>/dev/null || true
    kill -TERM "$tailpid" 2>/dev/null || true
    rm -f "$log"
}
trap 'stop; exit 130' INT
trap 'stop; exit 143' TERM HUP
trap stop EXIT
rc=0
wait "$pgid" || rc=$?
sleep 0.2 # let tail print the last lines
echo "bench_micro.sh: $mode finished in $(($(date +%s) - start)) s, exit status $rc"
# swift package exits 1 both for a regression and for an improvement beyond the tolerance: tell
# them apart by the report. Only regressions (or a failed build or run) fail the check.
if [ "$mode" = check ] && [ "$rc" != 0 ] && [ -d "$dir" ]; then
    if grep -aq "Deviations worse than threshold" "$log"; then
        echo "bench_micro.sh: REGRESSION against Benchmarks/$dir (the tables above)"
        rc=2
    elif grep -aq "Deviations better than threshold" "$log"; then
        echo "bench_micro.sh: only improvements beyond the tolerance; 'bash scripts/bench_micro.sh update' records them"
        rc=0
    fi
fi
exit "$rc"
