# Two commands for a fresh machine: `make demo` (train + evaluate + report on the digits) and `make test`.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: demo test install clean-runs

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

demo: install
	$(BIN)/scm-bench run recipes/digits.yaml
	$(BIN)/scm-bench report recipes/digits.yaml

test: install
	$(BIN)/python -m pytest -q

clean-runs:
	rm -rf runs
