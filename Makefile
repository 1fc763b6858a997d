# The README's two commands: `make demo` (main job) and `make test` (the test suite).
# Both set everything up from a clean clone; only the package registries are needed.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: headline headline-news cold-folds short-history demo demo-full test bench test-arm64 test-x86-avx2 test-emulated cpu-class-check install clean system-deps

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch is pinned to 2.13.0: this project's machines have its CPU build in the local wheel cache (elsewhere,
	# install it first from https://download.pytorch.org/whl/cpu; see the README)
	$(BIN)/python -m pip install -q -e '.[export,server,baselines,bench,scale,dev]'
	touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/genre quickstart --config ml-100k-quick --work runs/quickstart

demo-full: install
	$(BIN)/genre quickstart --config ml-100k --work runs/full

# The headline table (README "Headline"): every baseline tuned on validation, 3 training seeds of the quick
# preset, the paired A/B against the strongest tuned baseline (EASE + recency + the items' categories as side
# information: the best on validation) -> runs/headline/ab.md, and against EASE + recency alone ->
# runs/headline/vs-ease-recency/ab.md (about 15 minutes here)
headline: install
	$(BIN)/genre eval baselines --data ml-100k --out runs/headline
	for s in 0 1 2; do $(BIN)/genre train --config ml-100k-quick --seed $$s --out runs/headline/s$$s || exit 1; done
	$(BIN)/genre ab --a baseline:ease-categories --b runs/headline/s0,runs/headline/s1,runs/headline/s2 \
		--config ml-100k-quick --out runs/headline
	$(BIN)/genre ab --a baseline:ease-recency --b runs/headline/s0,runs/headline/s1,runs/headline/s2 \
		--config ml-100k-quick --out runs/headline/vs-ease-recency

# The same on the synthetic news log (trending baseline vs the hybrid's trending popularity) -> runs/headline-news
# (about 18 minutes here)
headline-news: install
	$(BIN)/python benchmarks/synth_news.py --out runs/synth-news
	$(BIN)/genre eval baselines --data runs/synth-news --out runs/headline-news
	for s in 0 1 2; do $(BIN)/genre train --config synth-news-quick --seed $$s --out runs/headline-news/s$$s || exit 1; done
	$(BIN)/genre ab --a baseline:trending --b runs/headline-news/s0,runs/headline-news/s1,runs/headline-news/s2 \
		--config synth-news-quick --out runs/headline-news

# New items over 10 random item folds of ml-100k (README "Cold items"): per fold the quick preset trained without
# the fold's items, distilled and exported as the main job does, then compared with the untrained encoder on them
# -> benchmarks/results/cold-folds-ml-100k-quick.md (about an hour here; trained folds are reused)
cold-folds: install
	$(BIN)/python benchmarks/cold_folds.py --config ml-100k-quick --folds 0-9 --bundles --mix --work runs/cold-folds

# Users the device knows by a few items (README "Short histories"): the headline's teachers and the demo bundle on
# each user's last 1-20 positives, against baselines tuned on whole and on cut histories, and the hybrid with its CF
# part chosen for them -> benchmarks/results/short-history-ml-100k-quick.md (about 13 minutes here; needs `make
# headline` and `make demo` first)
short-history: install
	$(BIN)/python benchmarks/short_history.py --config ml-100k-quick \
		--teachers runs/headline/s0,runs/headline/s1,runs/headline/s2 --bundle runs/quickstart/bundle

# the demo bundle on every profile this machine can run, and the catalog scale curve -> runs/bench/
bench: install
	$(BIN)/genre bench --bundle runs/quickstart/bundle --profile all --all-variants --out runs/bench
	$(BIN)/python benchmarks/scale_curve.py --bundle runs/quickstart/bundle --out runs/bench
	$(BIN)/python benchmarks/compare.py --teacher runs/quickstart/teacher --student runs/quickstart/student \
		--bundle runs/quickstart/bundle --out runs/bench

# the runtime and the demo bundle under QEMU as Raspberry Pi 4 and 5 cores, compared with this machine
# (sets up an arm64 rootfs, the static qemu-aarch64 and aarch64 wheels in ~/.cache/genre-edge/arm64)
test-arm64: install
	$(BIN)/python benchmarks/arm64_parity.py --bundle runs/quickstart/bundle --out runs/bench

# System packages some tests use, from Debian (nothing is downloaded from elsewhere): chromium + chromedriver
# for the playground's browser test, wordnet-base for the WordNet synonyms test. Installed here where apt-get
# runs as root (or through password-less sudo); elsewhere those tests are skipped with their reason, except under CI=true, where packages
# that cannot be installed fail the run (CI must run those tests).
SYSTEM_DEPS := chromium chromium-driver wordnet-base
system-deps:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null && [ -f /usr/share/wordnet/index.noun ]; then :; \
	elif command -v apt-get >/dev/null && { [ "$$(id -u)" = 0 ] && SUDO= || { sudo -n true 2>/dev/null && SUDO=sudo; }; } && \
	     ($$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq \
	     --no-install-recommends $(SYSTEM_DEPS) >/dev/null); then echo "installed $(SYSTEM_DEPS) for the browser and WordNet tests"; \
	elif [ -n "$$CI" ]; then echo "CI: cannot install $(SYSTEM_DEPS) (apt-get as root) for the tests" >&2; exit 1; \
	else echo "note: $(SYSTEM_DEPS) not installed here: the browser and real-WordNet tests will be skipped"; fi

# what this machine's CPU class gets from the demo bundle (after make demo): the encoder variant the detected
# profile loads and what it keeps of its teacher here, the int8 catalog index at 100k items (p50, top-200 overlap),
# and the test suite's count -> benchmarks/results/cpu-class-<profile>.md (about 7 minutes; timing on real hardware)
cpu-class-check: install system-deps
	$(BIN)/python benchmarks/cpu_class_check.py --work runs/quickstart --tests

# the same check on an emulated x86 core with AVX2 but no AVX-512/VNNI (QEMU -cpu Haswell), for a bundle that
# carries the 7-bit int8-avx2 variant (genre export --profile x86-avx2 ...)
AVX2_BUNDLE ?= runs/quickstart/bundle
test-x86-avx2: install
	$(BIN)/python benchmarks/arm64_parity.py --bundle $(AVX2_BUNDLE) --cores Haswell --name x86-avx2-parity --out runs/bench

# the test suite itself on emulated CPUs (QEMU user emulation, the environment test-arm64 sets up): the runtime's
# test modules on Raspberry Pi 4 and 5 cores, no torch there; with EMU_CORES=Haswell every module on an x86 core
# with AVX2 but no AVX-512/VNNI (EMU_ARGS='-k "not test_real_teacher_on_ml100k_slice"' leaves out the end-to-end
# test, the slowest emulated) -> benchmarks/results/emulated-tests-*.md (README "The test suite on other CPUs")
EMU_CORES ?= cortex-a72,cortex-a76
EMU_ARGS ?=
test-emulated: install
	$(BIN)/python benchmarks/emulated_tests.py --cores $(EMU_CORES) $(EMU_ARGS)

test: install system-deps
	$(BIN)/python -m pytest -q -rs -p no:cacheprovider tests

clean:
	rm -rf $(VENV) runs *.egg-info
