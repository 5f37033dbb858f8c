# Two commands for users and CI: `make demo` and `make test`. Each sets up what it
# needs (Debian packages, .venv, pinned Python packages) and is safe to rerun.

PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.mfnc-installed

# Cross compilers and emulators used by the firmware, TVM and HIL stages.
DEBIAN_PACKAGES := gcc-arm-none-eabi libnewlib-arm-none-eabi gcc-aarch64-linux-gnu g++-aarch64-linux-gnu \
	qemu-system-arm qemu-user socat

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test check-full bench bench-quick bench-focused lint setup system-packages clean

# The shipped model -> int8 -> firmware for the emulated Cortex-M55 board -> HIL check on it.
DEMO_TARGET ?= mps3-an547
demo: setup
	$(PY) -m compiler build --target $(DEMO_TARGET) --model default
	$(PY) -m compiler hil --target $(DEMO_TARGET) --emulate --synthetic 10 --json build/$(DEMO_TARGET)/hil.json

test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/pytest

# Heavier checks with the numbers quoted in docs/ (minutes, not part of `make test`).
check-full: setup
	$(PY) -m bench.check_int8 --json build/check-int8.json
	$(PY) -m bench.check_hil --limit 20 --json build/check-hil.json
	$(PY) -m bench.check_rknn --json build/check-rknn.json

# Ours against the peers (~45 min; run on an otherwise idle machine): writes
# bench/results/<date>-<host>.json and regenerates docs/benchmarks.md with its plots.
bench: setup
	$(PY) -m bench.run

# The same sections in under 5 minutes (default model, short timings, no TVM/rknn):
# bench/results/<date>-<host>-quick.json and build/bench-quick/benchmarks.md.
bench-quick: setup
	$(PY) -m bench.run --quick

# The older focused comparisons quoted in docs/tvm.md and docs/kernels.md.
bench-focused: setup
	$(PY) -m bench.tvm_speed --json build/bench-tvm-speed.json
	$(PY) -m bench.kernel_speed --json build/bench-kernel-speed.json

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

setup: system-packages $(STAMP)

system-packages:
	@missing=$$(for p in $(DEBIAN_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		if ! command -v apt-get >/dev/null; then echo "error: missing packages ($$missing) and no apt-get: install them by hand" >&2; exit 2; fi; \
		echo "installing Debian packages:" $$missing; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

# pnnx (ONNX -> ncnn, for the benchmark) declares torch, but its converter is a standalone
# binary that needs no torch: installed without dependencies.
$(STAMP): requirements.lock pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps pnnx==20261020
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $@

clean:
	rm -rf build .pytest_cache .ruff_cache
