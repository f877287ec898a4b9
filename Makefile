# SPDX-License-Identifier: Apache-2.0
# The user's commands. Each one installs what it needs, builds, then runs.
BUILD   ?= build
JOBS    ?= 2
MESON_TEST = meson test -C $(BUILD) --print-errorlogs --num-processes 1

.PHONY: all setup build demo test test-unit test-integration bench clean

all: build

setup:
	@./scripts/setup.sh

$(BUILD)/build.ninja:
	meson setup $(BUILD)

build: setup $(BUILD)/build.ninja
	ninja -C $(BUILD) -j $(JOBS)

demo: build
	/usr/bin/python3 tests/lab/demo.py --build $(BUILD)

test: build
	$(MESON_TEST)

test-unit: build
	$(MESON_TEST) --suite unit

test-integration: build
	$(MESON_TEST) --suite integration

bench: build
	/usr/bin/python3 tests/bench/run.py --build $(BUILD)

clean:
	rm -rf $(BUILD)
