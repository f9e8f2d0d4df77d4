# nasrt -- convenience targets around the CMake build.
#   make          install missing Debian packages, configure, build (Release)
#   make run      build, then run recipes/agnas.lua (or examples/smoke.lua)
#   make test     build, then ctest (C tests and the busted suite), then,
#                 when clang is installed, each fuzz harness briefly (fuzz-ci),
#                 then, on an AVX-512 machine, test-portable
#   make test-portable  the suite built with -march=x86-64-v3 into build-v3:
#                 the code paths of machines without AVX-512
#   make test SANITIZE=1   (or make test-asan) the same suite built with
#                 ASan + UBSan into build-asan
#   make fuzz-ci  build-fuzz (clang, libFuzzer) and its ctest -L fuzz runs
#   make fuzz     every harness for FUZZ_SECONDS (600) under nice (scripts/fuzz.sh)
#   make leakcheck   valgrind on a tiny recipe run (scripts/leakcheck.sh)
#   make bench    like make, plus python3-torch for the reference, then bench/run_all.lua
#   make install  build, then install under PREFIX (default /usr/local):
#                 bin/nasrt, lib/libnasrt_runtime.so, share/lua/5.4/nasrt/*.lua,
#                 lib/lua/5.4/nasrt/core.so, share/nasrt/{recipes,examples,data}
#   make doc      the API reference (LDoc) in build/doc
#   make clean    remove the build folders
ifeq ($(SANITIZE),1)
BUILD ?= build-asan
CMAKE_FLAGS += -DNASRT_SANITIZE=ON
else
BUILD ?= build
endif
BUILD_TYPE ?= Release
JOBS ?= 2
FUZZ_SECONDS ?= 600
NASRT = ./$(BUILD)/nasrt
PREFIX ?= /usr/local

.PHONY: all build setup configure run test test-asan test-portable fuzz fuzz-ci leakcheck bench clean install doc

all: build

setup:
	sh scripts/setup.sh

configure: setup
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) $(CMAKE_FLAGS)

build: configure
	cmake --build $(BUILD) -j$(JOBS)

run: build
	@if [ -f recipes/agnas.lua ]; then \
		echo "$(NASRT) recipes/agnas.lua"; $(NASRT) recipes/agnas.lua; \
	else \
		echo "$(NASRT) examples/smoke.lua"; $(NASRT) examples/smoke.lua; \
	fi

test: build
	cd $(BUILD) && ctest --output-on-failure
	@if [ "$(SANITIZE)" != 1 ] && command -v clang >/dev/null 2>&1; then \
		$(MAKE) --no-print-directory fuzz-ci; \
	else \
		echo "make test: clang missing or SANITIZE=1, fuzz harnesses not run"; \
	fi
	@if [ "$(SANITIZE)" != 1 ] && grep -qw avx512f /proc/cpuinfo 2>/dev/null; then \
		$(MAKE) --no-print-directory test-portable; \
	else \
		echo "make test: no AVX-512 here (the build above took the portable paths) or SANITIZE=1, test-portable not run"; \
	fi

test-portable: setup
	cmake -S . -B build-v3 -DCMAKE_BUILD_TYPE=Release -DNASRT_MARCH=x86-64-v3 -DNASRT_WERROR=ON
	cmake --build build-v3 -j$(JOBS)
	cd build-v3 && ctest --output-on-failure

test-asan:
	$(MAKE) test SANITIZE=1

fuzz-ci: setup
	CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) -DNASRT_FUZZ=ON
	cmake --build build-fuzz -j$(JOBS)
	cd build-fuzz && ctest --output-on-failure -L fuzz

fuzz:
	sh scripts/fuzz.sh -t $(FUZZ_SECONDS)

leakcheck: build
	sh scripts/leakcheck.sh

bench:
	sh scripts/setup.sh --bench
	$(MAKE) build
	@if [ -f bench/run_all.lua ]; then \
		echo "$(NASRT) bench/run_all.lua"; $(NASRT) bench/run_all.lua; \
	else \
		echo "bench/run_all.lua does not exist yet"; \
	fi

install: build
	cmake --install $(BUILD) --prefix $(PREFIX)

doc:
	sh scripts/setup.sh --doc
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE)
	cmake --build $(BUILD) --target doc

clean:
	rm -rf $(BUILD) build-asan build-fuzz build-v3
