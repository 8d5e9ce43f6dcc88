# One-command entry points (see README). PYTHON picks the interpreter for the venv.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= 2
# Test processes side by side (pytest-xdist, each test file in one): the workflow tests spend much
# of their time waiting on Snakemake's and SLURM's scheduling, so two on 2 cores finish sooner.
TEST_WORKERS ?= 2
# The pinned environment (exact versions of everything in the venv; the results come from it).
LOCK := requirements/constraints.txt
# torch, installed before the package: by default the locked version, which pip takes as a CPU build
# where its find-links hold one (+cpu) and as PyPI's build elsewhere (CUDA on Linux, ~5 GB more).
# Another build of that version can be named, e.g. a wheel's path or torch==2.13.0+cu128 with
# PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cu128; another version conflicts with the
# lock: move it with `make lock TORCH=torch==X.Y.Z`.
TORCH ?= torch==$(shell sed -n 's/^torch==//p' $(LOCK))
PIP := $(BIN)/pip install --quiet --no-cache-dir -c $(LOCK)
LOCK_VENV := .venv-lock

.PHONY: setup run test test-fast lint report clean lock

$(BIN)/snakemake: pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) '$(TORCH)'
	$(PIP) -e '.[test]'
	touch $@

setup: $(BIN)/snakemake  ## create .venv with the package, Snakemake and test tools

run: setup  ## run the default workflow (config.yaml) on $(CORES) cores
	$(BIN)/snakemake --cores $(CORES)

test: setup  ## every test, the slow Snakemake runs included
	$(BIN)/python -m pytest -v --durations=15 -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

test-fast: setup  ## unit tests only
	$(BIN)/python -m pytest -m "not slow"

lint: setup
	$(BIN)/snakemake --lint
	$(BIN)/snakefmt --check Snakefile rules/
	$(BIN)/ruff check src tests workflow/scripts benchmarks
	$(BIN)/ruff format --check src tests workflow/scripts benchmarks

report: setup  ## Snakemake's HTML report of the last run
	$(BIN)/snakemake --report results/report.html

# Re-resolve the lock: a fresh venv from pyproject.toml's ranges (and $(TORCH)), then its versions,
# local labels such as +cpu dropped; the header and the trailing not-installed block are kept.
lock:  ## rewrite requirements/constraints.txt from a fresh venv's `pip list`
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/pip install --quiet --no-cache-dir --upgrade pip
	$(LOCK_VENV)/bin/pip install --quiet --no-cache-dir '$(TORCH)'
	$(LOCK_VENV)/bin/pip install --quiet --no-cache-dir -e '.[test]'
	{ sed '/^# Python:/Q' $(LOCK); \
	  $(LOCK_VENV)/bin/python -c 'import sys; print("# Python: %d.%d" % sys.version_info[:2])'; \
	  $(LOCK_VENV)/bin/pip list --format=freeze --exclude-editable | sed -E 's/\+[^+]*$$//'; \
	  sed -n '/^# Not installed by/,$$p' $(LOCK); } > $(LOCK).new
	mv $(LOCK).new $(LOCK)
	rm -rf $(LOCK_VENV)

clean:
	find results -mindepth 1 -maxdepth 1 ! -name README.md -exec rm -rf {} +
	rm -rf .snakemake
