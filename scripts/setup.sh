#!/bin/sh
# Installs the Debian packages nasrt needs, only those that are missing.
# Usage: scripts/setup.sh [--bench|--doc]   (--bench adds python3-torch for bench/,
#        --doc adds lua-ldoc and lua5.1 for make doc: Debian's ldoc runs on
#        Lua 5.1-5.3 only, "no suitable Lua interpreter found" beside 5.4 alone)
set -e
# clang (libFuzzer harnesses, make fuzz-ci) and valgrind (scripts/leakcheck.sh)
# are for the test targets.
pkgs="lua5.4 liblua5.4-dev lua-busted lua-filesystem lua-dkjson libopenblas-dev zlib1g-dev \
dataset-fashion-mnist cmake make gcc libreadline-dev graphviz librsvg2-bin clang valgrind"
[ "$1" = "--bench" ] && pkgs="$pkgs python3-torch python3-numpy"
[ "$1" = "--doc" ] && pkgs="$pkgs lua-ldoc lua5.1"
# OpenMPI: nasrt.dist and mpirun (the build also works without it)
pkgs="$pkgs libopenmpi-dev openmpi-bin"
missing=""
for p in $pkgs; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
if [ -n "$missing" ]; then
    echo "setup: installing$missing"
    $SUDO apt-get update -qq || true
    $SUDO apt-get install -y -qq --no-install-recommends $missing
fi
# libFuzzer and the sanitizer runtimes of clang N come in libclang-rt-N-dev,
# only a recommendation of clang (so --no-install-recommends skips it)
if command -v clang >/dev/null 2>&1; then
    rt="libclang-rt-$(clang -dumpversion | cut -d. -f1)-dev"
    if ! dpkg-query -W -f='${Status}' "$rt" 2>/dev/null | grep -q "install ok installed"; then
        echo "setup: installing $rt"
        $SUDO apt-get install -y -qq --no-install-recommends "$rt" || true
    fi
fi
