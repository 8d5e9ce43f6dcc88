# One-command entry points (see README). PYTHON picks the interpreter for the venv.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= 2

.PHONY: setup run test test-fast lint report clean

$(BIN)/snakemake: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

setup: $(BIN)/snakemake  ## create .venv with the package, Snakemake and test tools

run: setup  ## run the default workflow (config.yaml) on $(CORES) cores
	$(BIN)/snakemake --cores $(CORES)

test: setup  ## every test, the slow Snakemake runs included
	$(BIN)/python -m pytest -v --durations=15

test-fast: setup  ## unit tests only
	$(BIN)/python -m pytest -m "not slow"

lint: setup
	$(BIN)/snakemake --lint
	$(BIN)/snakefmt --check Snakefile rules/
	$(BIN)/ruff check src tests workflow/scripts benchmarks
	$(BIN)/ruff format --check src tests workflow/scripts benchmarks

report: setup  ## Snakemake's HTML report of the last run
	$(BIN)/snakemake --report results/report.html

clean:
	find results -mindepth 1 -maxdepth 1 ! -name README.md -exec rm -rf {} +
	rm -rf .snakemake
