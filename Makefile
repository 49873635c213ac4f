# qpatch: set up, demo, build llama.cpp, test, bench. `make help` lists targets.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
JOBS   ?= $(shell nproc)
# build-cpu / build-cuda: the llama.cpp checkout, the tools to build, CUDA architectures ("" = the GPU present)
DIR        ?= llama.cpp
TARGETS    ?= llama-quantize
CUDA_ARCHS ?=

.PHONY: help setup test test-fast lint bench golden docs clean build-cpu build-cuda demo fuzz catalogues

help:
	@echo "make setup       create .venv with qpatch and test dependencies"
	@echo "make test        run the whole test suite (builds llama-quantize once, cached in ~/.cache/qpatch)"
	@echo "make test-fast   tests that need no compiled binary"
	@echo "make lint        ruff (pycodestyle + pyflakes, 120 columns) over the code, tests and scripts; mypy on tool/qpatch"
	@echo "make bench       benchmarks (bench/), printed as one table"
	@echo "make build-cpu   build TARGETS (default llama-quantize) of the checkout DIR into DIR/build-cpu/bin"
	@echo "make build-cuda  the same with CUDA into DIR/build-cuda/bin (CUDA_ARCHS='80;90', default: the GPU present)"
	@echo "make golden      regenerate the golden C++ renders under tests/golden/"
	@echo "make docs        regenerate docs/policies/*.md and the output of the docs' marked console examples"
	@echo "make catalogues  re-extract a family's catalogue.json from a fetched pin (FAMILY=, TREE=)"

setup: $(BIN)/qpatch

$(BIN)/qpatch: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

test: setup
	$(BIN)/pytest -n $(JOBS) -q

test-fast: setup
	$(BIN)/pytest -n $(JOBS) -q -m "not binary and not install"

lint: setup
	$(BIN)/ruff check tool tests scripts bench train setup.py
	$(BIN)/mypy

build-cpu: setup
	$(BIN)/qpatch build --cpu --dir "$(DIR)" --jobs $(JOBS) $(addprefix --target ,$(TARGETS))

build-cuda: setup
	$(BIN)/qpatch build --cuda --dir "$(DIR)" --jobs $(JOBS) $(addprefix --target ,$(TARGETS))$(if $(CUDA_ARCHS), --cuda-archs "$(CUDA_ARCHS)")

bench: setup
	$(BIN)/python bench/bench_plan.py
	$(BIN)/python bench/bench_build.py
	$(BIN)/python bench/bench_assemble.py
	$(BIN)/python bench/bench_cold_start.py

clean:
	rm -rf $(VENV) build .pytest_cache

# Regenerate the golden C++ renders that tests/test_render.py compares against.
POLICIES := stock n-expert-fix ffn-down-bump deepseek-v3
GOLDEN_PINS := 4227c9be 0c1e57098 ik-55d3c05b
IK_POLICIES := deepseek-v3-ik
golden: setup
	@for pin in $(GOLDEN_PINS); do for p in $(POLICIES); do \
	  $(BIN)/qpatch render $$p --pin $$pin -o tests/golden/$$p.$$pin.h; done; done
	@for p in $(IK_POLICIES); do $(BIN)/qpatch render $$p --pin ik-55d3c05b -o tests/golden/$$p.ik-55d3c05b.h; done

# Re-extract a family's catalogue from a fetched pin: make catalogues FAMILY=current TREE=path/to/llama.cpp
catalogues: setup
	$(BIN)/python -m qpatch.families.extract "$(TREE)" tool/qpatch/families/$(FAMILY)/catalogue.json
	$(BIN)/python -m qpatch.gguf.catalogue --write

# Regenerate docs/policies/*.md (rules and before/after plans on a DeepSeek-V3-shaped model) and the output
# of every marked console example in README.md and docs/ (scripts/doc_examples.py; --check in the tests).
docs: setup
	$(BIN)/python scripts/policy_docs.py docs/policies
	$(BIN)/python scripts/doc_examples.py

# The main job on a fresh machine, offline: fetch the pin (sdist), apply deepseek-v3, build
# llama-quantize for CPU, write a DeepSeek-V3-shaped model + imatrix, plan, quantize, verify.
DEMO := out/demo
demo: setup
	$(BIN)/qpatch fetch
	$(BIN)/qpatch apply deepseek-v3
	$(BIN)/qpatch build --cpu
	$(BIN)/qpatch synth deepseek-v3 $(DEMO)/deepseek-v3-thin.gguf --imatrix $(DEMO)/deepseek-v3-thin.imatrix.gguf --mkdir --force
	$(BIN)/qpatch plan $(DEMO)/deepseek-v3-thin.gguf --ftype IQ1_M --imatrix $(DEMO)/deepseek-v3-thin.imatrix.gguf --policy deepseek-v3
	$(BIN)/qpatch quantize $(DEMO)/deepseek-v3-thin.gguf $(DEMO)/deepseek-v3-thin-IQ1_M.gguf --ftype IQ1_M --imatrix $(DEMO)/deepseek-v3-thin.imatrix.gguf --policy deepseek-v3
	$(BIN)/qpatch diff --stat

# More property-test examples than CI runs (random rule sets compiled into llama-quantize).
FUZZ_EXAMPLES ?= 50
fuzz: setup
	QPATCH_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) QPATCH_FUZZ_RANDOM=1 $(BIN)/pytest -q -n 0 tests/test_fuzz_policies.py
