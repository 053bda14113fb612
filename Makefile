# Two commands for a fresh machine (Python 3.11, nothing else installed):
#   make run    set everything up, then generate structures with the embedded model
#   make test   set everything up, then run the whole test suite
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.crystalforge-installed
PYTEST_ARGS ?=

.PHONY: setup run test docs clean

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/setup.sh $(wildcard plugins/*/pyproject.toml)
	VENV=$(VENV) bash scripts/setup.sh
	touch $(STAMP)

run: setup
	$(BIN)/crystalforge run CaTiO3 --spacegroup Pm-3m -n 10 --seed 0 --out out/CaTiO3

test: setup
	$(BIN)/python -m pytest -n 2 -q $(PYTEST_ARGS) tests $(wildcard plugins/*/tests)

docs: setup
	$(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) out site
