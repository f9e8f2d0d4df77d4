# nasrt -- convenience targets around the CMake build.
#   make          install missing Debian packages, configure, build (Release)
#   make run      build, then run recipes/agnas.lua (or examples/smoke.lua)
#   make test     build, then ctest (C tests and the busted suite)
#   make bench    like make, plus python3-torch for the reference, then bench/run_all.lua
#   make install  build, then install under PREFIX (default /usr/local):
#                 bin/nasrt, lib/libnasrt_runtime.so, share/lua/5.4/nasrt/*.lua,
#                 lib/lua/5.4/nasrt/core.so, share/nasrt/{recipes,examples,data}
#   make doc      the API reference (LDoc) in build/doc
#   make clean    remove the build folder
BUILD ?= build
BUILD_TYPE ?= Release
JOBS ?= 2
NASRT = ./$(BUILD)/nasrt
PREFIX ?= /usr/local

.PHONY: all build setup configure run test bench clean install doc

all: build

setup:
	sh scripts/setup.sh

configure: setup
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE)

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
	rm -rf $(BUILD)
