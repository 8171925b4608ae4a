# Two entry points, both safe on a fresh clone: `make book` and `make test`.
# Everything installs into a local virtual environment (.venv) pinned by requirements/constraints.txt.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: book pdf test lint benchmark release clean

$(STAMP): pyproject.toml requirements/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet -c requirements/constraints.txt -e ".[all]"
	touch $(STAMP)

book: $(STAMP)  ## Execute every chapter and build the HTML book into _build/html.
	$(BIN)/jupyter-book build -W -n --keep-going .

pdf: book  ## Print the built book into one PDF, _build/html/transformers-verified.pdf (the landing page links it).
	tools/setup_browser.sh
	$(BIN)/python tools/build_pdf.py

test: $(STAMP)  ## Lint, then run the whole test suite (the book build and a browser check included).
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	tools/setup_browser.sh
	tools/setup_sandbox.sh
	tools/setup_postgres.sh
	$(BIN)/python -m pytest

benchmark: $(STAMP)  ## Run every benchmark script and print one table of ratios (not part of the test suite).
	$(BIN)/python benchmarks/run_all.py

release: $(STAMP)  ## Build the sdist and wheel into dist/ from a clean checkout, check them and upload them (twine).
	@test -z "$$(git status --porcelain)" || { echo "release: the working tree has changes; commit or stash them"; exit 1; }
	rm -rf dist
	$(BIN)/python -m build --outdir dist .
	$(BIN)/python -m pip install --quiet -c requirements/constraints.txt twine
	$(BIN)/python -m twine check --strict dist/*
	$(BIN)/python -m twine upload dist/*

clean:
	rm -rf _build $(VENV)
