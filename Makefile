# Two entry points, both safe on a fresh clone: `make book` and `make test`.
# Everything installs into a local virtual environment (.venv) pinned by requirements/constraints.txt.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: book test lint benchmark clean

$(STAMP): pyproject.toml requirements/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet -c requirements/constraints.txt -e ".[all]"
	touch $(STAMP)

book: $(STAMP)  ## Execute every chapter and build the HTML book into _build/html.
	$(BIN)/jupyter-book build -W -n --keep-going .

test: $(STAMP)  ## Lint, then run the whole test suite (the book build and a browser check included).
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	tools/setup_browser.sh
	tools/setup_sandbox.sh
	$(BIN)/python -m pytest

benchmark: $(STAMP)  ## Run every benchmark script and print one table of ratios (not part of the test suite).
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf _build $(VENV)
