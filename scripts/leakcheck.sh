#!/bin/sh
# Leak check of a whole tiny recipe run: an AGNAS search (micro space), then
# recipes/train.lua on the arch.json it wrote, each a fresh nasrt process
# that closes its Lua state at exit, so whatever is still allocated then and
# unreachable is a leak.
#
# Usage: scripts/leakcheck.sh [--build DIR] [--valgrind]
#   default     LeakSanitizer in the ASan build (build-asan, configured with
#               -DNASRT_SANITIZE=ON and built when missing):
#               ASAN_OPTIONS=detect_leaks=1, so a definite leak fails the run
#   --valgrind  memcheck instead, on build-valgrind (RelWithDebInfo: no
#               -march=native, since valgrind 3.19 cannot run AVX-512 code;
#               OPENBLAS_CORETYPE=Haswell for the same reason):
#               --leak-check=full --errors-for-leak-kinds=definite, and any
#               memory error (invalid read, uninitialised jump) fails too
#   --build DIR use the nasrt of DIR instead (what the ctest entry does)
# Prints the leak summary of each run; exit status 0 = no definite leak.
set -e
cd "$(dirname "$0")/.."
mode=lsan build=""
while [ $# -gt 0 ]; do
    case "$1" in
    --valgrind) mode=valgrind; shift ;;
    --build) build=$2; shift 2 ;;
    *) echo "usage: scripts/leakcheck.sh [--build DIR] [--valgrind]"; exit 2 ;;
    esac
done
if [ -z "$build" ]; then
    if [ $mode = lsan ]; then
        build=build-asan
        [ -f $build/CMakeCache.txt ] || cmake -S . -B $build -DCMAKE_BUILD_TYPE=Release -DNASRT_SANITIZE=ON >/dev/null
    else
        build=build-valgrind
        [ -f $build/CMakeCache.txt ] || cmake -S . -B $build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
    fi
    nice -n 10 cmake --build $build -j2 --target nasrt >/dev/null
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
search="--space=micro --C=4 --layers=2 --input_size=8 --train_limit=64 --val_limit=32 --batch_size=16 --epochs=1 --quiet=true --dot=false"
train="--C=4 --layers=2 --input_size=8 --train_limit=48 --test_limit=64 --batch_size=16 --epochs=1 --quiet=true"

run() {
    log=$1; shift
    if [ $mode = lsan ]; then
        ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 LSAN_OPTIONS=report_objects=0 \
            nice -n 10 "$build/nasrt" --threads 1 "$@" >"$log" 2>&1
        st=$?
        grep -q "ERROR: LeakSanitizer" "$log" && echo "  LeakSanitizer: leaks:" &&
            grep -E "^(Direct|Indirect) leak|^SUMMARY" "$log" | head -20
        [ $st = 0 ] && echo "  LeakSanitizer: no leaks"
    else
        OPENBLAS_CORETYPE=Haswell nice -n 10 valgrind --leak-check=full \
            --errors-for-leak-kinds=definite --show-leak-kinds=definite --error-exitcode=3 \
            --num-callers=30 "$build/nasrt" --threads 1 "$@" >"$log" 2>&1
        st=$?
        grep -E "definitely lost|indirectly lost|possibly lost|still reachable|ERROR SUMMARY" "$log" |
            sed 's/^==[0-9]*== /  /'
    fi
    return $st
}

status=0
echo "leakcheck ($mode, $build): recipes/agnas.lua $search"
run "$out/agnas.log" recipes/agnas.lua $search --out="$out/agnas" || status=1
[ $status = 0 ] || { cat "$out/agnas.log" | tail -40; exit 1; }
echo "leakcheck ($mode, $build): recipes/train.lua --arch=<its arch.json> $train"
run "$out/train.log" recipes/train.lua $train --arch="$out/agnas/arch.json" --out="$out/train" || status=1
[ $status = 0 ] || { tail -40 "$out/train.log"; exit 1; }
echo "leakcheck: no definite leaks"
