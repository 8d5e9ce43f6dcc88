#!/usr/bin/env bash
# Every GPU measurement still open, in one prepared script that a single device call runs (the
# device machine is lent for ~15 minutes, of which starting it takes 1-2): each step has its own
# time limit, writes its output to $OUT/<step>.txt, and a failing or timed-out step does not stop
# the others. Total limit 9.5 minutes (a device command may run 10; the workflow last); $OUT/summary.txt lists each step's exit status and time.
#
#   bash benchmarks/gpu_prepare.sh                      # first, here: wheels and references in .gpu/
#   OUT=gpu_out PY=python3 bash benchmarks/gpu_suite.sh # on the GPU machine (DEVICE=cuda), .gpu carried
#   DEVICE=cpu QUICK=1 OUT=/tmp/g bash benchmarks/gpu_suite.sh   # the same steps, small, on a CPU
#
# Steps (each against its baseline in the same run):
#   env            the machine: GPU, driver, torch, CPU
#   install        the prepared wheels ($PREP/wheels: Snakemake, pomegranate, devinterp, ...)
#   lm_statistics  a pythia-160m checkpoint's 14 statistics on the GPU against float64 SVDs
#   llc            the LLC of a seed group (8 runs x 4 chains), batched against one chain at a time
#   train          training 40 seeds of modular addition in one job against one seed per process
#   agreement      CUDA tables against CPU tables (weight statistics, Hessian), batch_runs on/off
#   hessian        a seed group's Hessians together against PyHessian's power iteration, both
#                  judged against ARPACK references computed beforehand ($PREP/hessian_modular)
#   resnets        a step of 1, 4, 8, 16 stacked ResNet18s: grouped convolutions against one by one
#   image          MNIST and CIFAR-100 ResNet18 seed-epochs (a tenth of the real data sets, times
#                  scaled up), ResNets one by one against grouped, and the paper config's GPU hours
#   workflow       every stage of configs/gpu_short.yaml (paper sizes, 16 seeds) on the device,
#                  then a dry run that must say "Nothing to be done", and the time of each stage
set -u
OUT=${OUT:-gpu_out}
DEVICE=${DEVICE:-cuda}
QUICK=${QUICK:-0}
PY=${PY:-python}
PREP=${PREP:-.gpu}
mkdir -p "$OUT"
: > "$OUT/summary.txt"

step() {  # step NAME LIMIT_S COMMAND...
    local name=$1 limit=$2
    shift 2
    local start=$SECONDS
    timeout "$limit" "$@" > "$OUT/$name.txt" 2>&1
    local rc=$?
    echo "$name: exit $rc in $((SECONDS - start)) s (limit $limit s): $*" | tee -a "$OUT/summary.txt"
}

if [ "$QUICK" = 1 ]; then
    LM_SIZES="14m"; LLC_ARGS="--seeds 2 --chains 2 --draws 20 --burn-in 5 --epochs 1"
    TRAIN_ARGS="--seeds 4 --epochs 20 --baseline-sample 1"; AGREE_ARGS="--seeds 2 --epochs 20"
    HESSIAN_ARGS="--runs 0 1 --stride 50"
    RESNET_ARGS="--groups 1 2 --batch 4 --steps 1 --profile 2"
    IMAGE_ARGS="--scale 0.002 --groups 1 2 --mnist-groups 1 2 --hessian-checkpoints 0"
    IMAGE_LIMIT=120  # four ResNet18 seed-epochs on 2 CPU cores: ~70 s on an AVX2-only machine
    WORKFLOW_CONFIG=tests/data/tiny.yaml; CORES=2
else
    LM_SIZES="160m"; LLC_ARGS="--seeds 8"
    TRAIN_ARGS="--seeds 40 --epochs 300 --baseline-sample 2"; AGREE_ARGS="--seeds 4"
    HESSIAN_ARGS="--runs 0 1 2 3 4 5 6 7 --stride 20"
    [ -f "$PREP/hessian_modular/references.json" ] && HESSIAN_ARGS="$HESSIAN_ARGS --prepared $PREP/hessian_modular"
    RESNET_ARGS="--groups 1 4 8 16 --profile 8"
    IMAGE_ARGS="--scale 0.1 --groups 1 8 --mnist-groups 1 40 --hessian-checkpoints 2"
    IMAGE_LIMIT=60
    WORKFLOW_CONFIG=configs/gpu_short.yaml; CORES=16
fi
RESULTS=${RESULTS:-/tmp/gpu_suite_results}  # outside $OUT: only the summaries come back
SNAKE=("$PY" -m snakemake --configfile "$WORKFLOW_CONFIG" --replace-workflow-config --cores "$CORES"
       --config device="$DEVICE" results="$RESULTS")

step env 15 bash -c "nvidia-smi 2>/dev/null; $PY -c 'import torch, platform; print(torch.__version__, torch.version.cuda, torch.cuda.is_available() and torch.cuda.get_device_name(), platform.processor())'; lscpu | grep -m1 \"Model name\""
if [ "$DEVICE" != cpu ] && [ -d "$PREP/wheels" ]; then
    step install 30 bash -c "$PY -m pip install --no-index --no-deps --quiet $PREP/wheels/*.whl && $PY -c 'import snakemake, pomegranate, devinterp'"
fi
step lm_statistics 60 $PY benchmarks/lm_checkpoints.py --sizes $LM_SIZES --device "$DEVICE"
step llc 50 $PY benchmarks/llc.py --task digits_mlp --device "$DEVICE" $LLC_ARGS
step train 70 $PY benchmarks/train_seeds.py --task modular_addition --jobs 1 --device "$DEVICE" $TRAIN_ARGS
step agreement 40 $PY benchmarks/device_agreement.py --task modular_addition --device "$DEVICE" $AGREE_ARGS
step hessian 60 $PY benchmarks/hessian.py --task modular_addition --device "$DEVICE" $HESSIAN_ARGS
step resnets 30 $PY benchmarks/stacked_resnets.py --device "$DEVICE" $RESNET_ARGS
step image "$IMAGE_LIMIT" $PY benchmarks/image_tasks.py --device "$DEVICE" --tasks mnist_mlp cifar100_resnet18 --epochs 1 $IMAGE_ARGS
step workflow 125 "${SNAKE[@]}"
step rerun 30 bash -c "$(printf '%q ' "${SNAKE[@]}") --dry-run | tee /dev/stderr | grep -q 'Nothing to be done'"
step stage_times 10 $PY benchmarks/stage_times.py "$RESULTS"
cp "$RESULTS/summary.md" "$OUT/workflow_summary.md" 2>/dev/null
echo "outputs in $OUT" | tee -a "$OUT/summary.txt"
