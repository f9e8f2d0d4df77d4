#!/bin/sh
# Runs the libFuzzer harnesses of tests/fuzz under nice -n 19.
# Usage: scripts/fuzz.sh [-t SECONDS] [-j N] [--merge] [TARGET...]
#   -t SECONDS  time per harness (default 600)
#   -j N        harnesses run at once (default 2)
#   --merge     then fold the new inputs that add coverage into the repo
#               corpus tests/fuzz/corpus/<target> (libFuzzer -merge=1)
#   TARGET      idx cifar npy ckpt arch json (default: all)
# Builds build-fuzz with clang first (-DNASRT_FUZZ=ON).  New inputs go to
# build-fuzz/fuzz/corpus/<target>, crashes and timeouts to
# build-fuzz/fuzz/crashes/<target>-*, logs to build-fuzz/fuzz/<target>.log.
# Prints per target: executions, edge coverage, features, corpus, findings.
set -e
cd "$(dirname "$0")/.."
secs=600 par=2 merge=0 targets=""
while [ $# -gt 0 ]; do
    case "$1" in
    -t) secs=$2; shift 2 ;;
    -j) par=$2; shift 2 ;;
    --merge) merge=1; shift ;;
    *) targets="$targets $1"; shift ;;
    esac
done
[ -z "$targets" ] && targets="idx cifar npy ckpt arch json"
B=build-fuzz
command -v clang >/dev/null || { echo "fuzz: clang is missing (scripts/setup.sh installs it)"; exit 1; }
[ -f $B/CMakeCache.txt ] || CC=clang cmake -S . -B $B -DNASRT_FUZZ=ON -DCMAKE_BUILD_TYPE=Release >/dev/null
nice -n 19 cmake --build $B -j2 >/dev/null
mkdir -p $B/fuzz/crashes

run_one() {
    t=$1
    mkdir -p $B/fuzz/corpus/$t
    nice -n 19 $B/fuzz/fuzz_$t -max_total_time="$secs" -timeout=20 -rss_limit_mb=2048 \
        -max_len=16384 -print_final_stats=1 -artifact_prefix=$B/fuzz/crashes/$t- \
        $B/fuzz/corpus/$t tests/fuzz/corpus/$t >$B/fuzz/$t.log 2>&1 || true
}

i=0
for t in $targets; do
    run_one "$t" &
    i=$((i + 1))
    [ $((i % par)) -eq 0 ] && wait
done
wait

status=0
for t in $targets; do
    log=$B/fuzz/$t.log
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' $log)
    last=$(grep -E '^#[0-9]+' $log | tail -1)
    cov=$(echo "$last" | sed -n 's/.*cov: \([0-9]*\).*/\1/p')
    ft=$(echo "$last" | sed -n 's/.*ft: \([0-9]*\).*/\1/p')
    corp=$(echo "$last" | sed -n 's/.*corp: \([^ ]*\).*/\1/p')
    found=$(ls $B/fuzz/crashes/ 2>/dev/null | grep -c "^$t-" || true)
    grep -qE 'ERROR: (libFuzzer|AddressSanitizer|LeakSanitizer)|runtime error|FUZZ_BUG' $log && status=1
    printf '%-6s runs %-9s cov %-5s ft %-6s corpus %-12s findings %s\n' "$t" "${runs:-?}" \
        "${cov:-?}" "${ft:-?}" "${corp:-?}" "$found"
    if [ $merge = 1 ]; then
        nice -n 19 $B/fuzz/fuzz_$t -merge=1 -max_len=16384 -timeout=20 tests/fuzz/corpus/$t \
            $B/fuzz/corpus/$t >>$log 2>&1
    fi
done
[ $status = 0 ] || echo "fuzz: findings; see $B/fuzz/*.log and $B/fuzz/crashes/"
exit $status
