#!/usr/bin/env bash
# What benchmarks/gpu_suite.sh needs on a lent GPU machine, prepared here on the CPU at no device
# time, into $PREP (default .gpu/, ignored by git; the device call carries it, 64 MiB at most):
#   wheels/            every package of this venv that the machine's image lacks
#                      (benchmarks/gpu_image_packages.txt), for its Python 3.12: Snakemake,
#                      pomegranate, devinterp, ... (test-only tools left out); the suite installs
#                      them with pip --no-index before its first step
#   hessian_modular/   8 modular-addition runs trained here, every 20th checkpoint, and ARPACK's
#                      references for them (benchmarks/hessian.py --prepare): the suite's Hessian
#                      step times the methods on the GPU against these, without ARPACK
#
#   bash benchmarks/gpu_prepare.sh      # ~3 minutes; then the device call:
#   run(command="OUT=$OUT PY=python3 bash benchmarks/gpu_suite.sh", carry=[".gpu"])
set -euo pipefail
cd "$(dirname "$0")/.."
PREP=${PREP:-.gpu}
PY=${PY:-.venv/bin/python}
mkdir -p "$PREP"
rm -rf "$PREP/wheels"

"$PY" - "$PREP/requirements.txt" <<'PYTHON'
import re, sys
from importlib.metadata import distributions

def norm(name):
    return re.sub(r"[-_.]+", "-", name).lower()

image = {norm(l.strip()) for l in open("benchmarks/gpu_image_packages.txt") if l.strip() and not l.startswith("#")}
test_only = {"black", "playwright", "greenlet", "ruff", "snakefmt", "shfmt-py", "pytokens", "latentstates", "pip"}
pins = sorted(
    f"{d.metadata['Name']}=={d.version.split('+')[0]}"
    for d in distributions()
    if norm(d.metadata["Name"]) not in image | test_only
)
open(sys.argv[1], "w").write("\n".join(pins) + "\n")
print(f"{len(pins)} packages to carry")
PYTHON

# Wheels for the machine's Python; a package published as source only (pure Python) is built here.
while read -r pin; do
    "$PY" -m pip download --quiet --no-deps --only-binary=:all: --dest "$PREP/wheels" \
        --python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform any "$pin" 2>/dev/null ||
        "$PY" -m pip wheel --quiet --no-deps --wheel-dir "$PREP/wheels" "$pin"
done < "$PREP/requirements.txt"

if [ ! -f "$PREP/hessian_modular/references.json" ]; then
    "$PY" benchmarks/hessian.py --task modular_addition --runs 0 1 2 3 4 5 6 7 --stride 20 \
        --prepare "$PREP/hessian_modular"
fi
du -sh "$PREP"/*
