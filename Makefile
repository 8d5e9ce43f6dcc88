# One-command entry points (see README). PYTHON picks the interpreter for the venv.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= 2
# torch requirement installed before the package: empty = pip's choice (on Linux a CUDA build, ~5 GB);
# a CPU-only machine short of disk can name a CPU build, e.g. TORCH=torch==2.13.0 or a wheel's path.
TORCH ?=
PIP := $(BIN)/pip install --quiet --no-cache-dir

.PHONY: setup run test test-fast lint report clean

$(BIN)/snakemake: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(if $(TORCH),$(PIP) '$(TORCH)')
	$(PIP) -e '.[test]'
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
