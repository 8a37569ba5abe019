# Two commands for a fresh machine: `make demo` (train + evaluate + report on the digits) and `make test`.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: demo test install clean-runs gpu-check

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --no-cache-dir --upgrade pip
	$(BIN)/python -m pip install --quiet --no-cache-dir -e '.[test]'
	touch $@

demo: install
	$(BIN)/scm-bench run recipes/digits.yaml
	$(BIN)/scm-bench report recipes/digits.yaml

test: install
	$(BIN)/python -m pytest -q

# One prepared check of everything that needs a GPU (benchmarks/gpu_check.py): under 8 minutes on one H100 / H200,
# writes results/gpu/<card>-<date>.md and .csv; on a CPU-only machine it says so and writes nothing.
gpu-check: install
	$(BIN)/python benchmarks/gpu_check.py

clean-runs:
	rm -rf runs
