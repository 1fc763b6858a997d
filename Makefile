# The README's two commands: `make demo` (main job) and `make test` (the test suite).
# Both set everything up from a clean clone; only the package registries are needed.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo demo-full test bench install clean

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch is pinned to 2.13.0 (its CPU build lies on this machine's disk; other versions pull CUDA builds)
	$(BIN)/python -m pip install -q -e '.[export,server,baselines,bench,dev]'
	touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/genre quickstart --config ml-100k-quick --work runs/quickstart

demo-full: install
	$(BIN)/genre quickstart --config ml-100k --work runs/full

# runtime latency / memory / cold start of the demo's bundle -> benchmarks/results/
bench: install
	$(BIN)/python benchmarks/runtime_bench.py --bundle runs/quickstart/bundle --profile x86-avx512-vnni

test: install
	$(BIN)/python -m pytest -q -p no:cacheprovider tests

clean:
	rm -rf $(VENV) runs *.egg-info
