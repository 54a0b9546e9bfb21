# The two commands of the README: `make demo` (the embedded default) and `make test`.
# Both install the environment first; tools/install.sh is idempotent.
VENV ?= $(or $(SDAE_VENV),.venv)
PY := $(VENV)/bin/python
export SDAE_VENV := $(abspath $(VENV))

.PHONY: install demo test lint
install: $(VENV)/.installed

$(VENV)/.installed: tools/install.sh requirements/constraints.txt pyproject.toml
	bash tools/install.sh
	touch $@

demo: install
	$(PY) tools/demo.py

test: install
	$(PY) -m ruff check .
	$(PY) -m pytest

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
