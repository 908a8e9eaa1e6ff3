#!/usr/bin/env bash
# The one script of a session that is lent a GPU (the device tool): issue #4's recipe ablation and
# recipe search as one prioritised queue of processes sharing the GPU, stopped by DEADLINE seconds,
# then (GPU_CHECK=1) gpu_check.py's smoke run and timings. What to bring back lands in $OUT:
# queue.log, recipe_ablation.json (merge it into benchmarks/ here, then `recipe_ablation.py report`),
# smoothing_neighbours.json (merge it likewise, then `smoothing_neighbours.py report`),
# gpu_check.log, gpu_check.json, RESULTS.md (its gpu_check section) and unit-logs.tgz.
#
# Wall time: ~30 s set-up + DEADLINE + up to 120 s (evaluations finishing, then stops) + up to 20 s of
# smoothing_neighbours (on the CPU; each row is saved as it comes) + up to 150 s of gpu_check: the
# defaults fit a 10-minute call. Sizing (2026-11-28, H200 machine, see RESULTS.md
# "GPU step profile"): a MobileNet-V3 unit of 1,170 steps is ~4.5 min of training (host-bound, ~230
# ms/step) plus ~1.5 min of evaluation, whether 1 or 14 share the GPU; EfficientNet-B0 is slower.
# So one call finishes at most one wave of JOBS units: give it DEADLINE=450 GPU_CHECK=0.
#
#   OUT=/tmp/out benchmarks/gpu_session.sh                                  # on the GPU machine
#   DEVICE=cpu JOBS=2 DEADLINE=240 PER_CLASS=100 EPOCHS=2 SEARCH_EPOCHS=1 SEEDS=0 \
#     LWZOO_CIFAR=~/.cache/lwzoo/cifar10 benchmarks/gpu_session.sh         # a dry run anywhere
#
# CIFAR-10 comes from $LWZOO_CIFAR, else from .gpu/cifar10-jpg.tar.gz (the shared tar, gzipped to 20 MB
# so it travels with the working tree; .gpu/ is ignored by git).
set -uo pipefail
cd "$(dirname "$0")"
: "${OUT:=/tmp/lwzoo-gpu-out}" "${DEVICE:=cuda}" "${JOBS:=14}" "${DEADLINE:=280}" "${GPU_CHECK:=1}"
: "${PER_CLASS:=1000}" "${EPOCHS:=30}" "${SEARCH_EPOCHS:=15}" "${SEEDS:=0 1 2}" "${SEARCH_SEEDS:=0 1}"
mkdir -p "$OUT"
PY=$(command -v python3 || command -v python)
export PYTHONPATH="$(cd .. && pwd)${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export LWZOO_CACHE="${LWZOO_CACHE:-/tmp/lwzoo-cache}"
if [ -z "${LWZOO_CIFAR:-}" ]; then
    mkdir -p /tmp/cifar10 && tar -xzf ../.gpu/cifar10-jpg.tar.gz -C /tmp/cifar10 || exit 2
    export LWZOO_CIFAR=/tmp/cifar10
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
"$PY" -c "import sys, torch, timm, lwzoo; print('python', sys.version.split()[0], 'torch', torch.__version__,
'timm', timm.__version__, 'lwzoo', lwzoo.__version__, 'cuda', torch.cuda.is_available())" || exit 3
TAG=$("$PY" -c "import re, torch
name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else ''
m = re.search(r'\b([A-Z]\d{2,3})\b', name)
print(m.group(1).lower() if m else 'cpu')")
[ "$DEVICE" = cpu ] && TAG=cpu-dry

# MPS lets the small kernels of several processes run side by side instead of time-slicing the GPU.
MPS=off
if [ "$DEVICE" = cuda ] && command -v nvidia-cuda-mps-control >/dev/null; then
    export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps-pipe CUDA_MPS_LOG_DIRECTORY=/tmp/mps-log
    mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
    if nvidia-cuda-mps-control -d && timeout 45 "$PY" -c "import torch; torch.ones(1, device='cuda').sum().item()"; then
        MPS=on
    else
        echo quit | nvidia-cuda-mps-control
        unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
    fi
fi
echo "tag $TAG, MPS $MPS, $JOBS jobs, deadline $DEADLINE s"

# shellcheck disable=SC2086  # SEEDS and SEARCH_SEEDS are lists
# OMP_NUM_THREADS=1: many processes share the CPU, and their heavy work is on the GPU
OMP_NUM_THREADS=1 timeout $((DEADLINE + 240)) "$PY" recipe_ablation.py queue --device "$DEVICE" --jobs "$JOBS" --deadline "$DEADLINE" \
    --tag "$TAG" --per-class "$PER_CLASS" --epochs "$EPOCHS" --seeds $SEEDS \
    --search-epochs "$SEARCH_EPOCHS" --search-seeds $SEARCH_SEEDS \
    --sweep "loss.alpha=0.0" --sweep "loss.alpha=0.2" --sweep "loss.alpha=0.3" \
    --sweep "loss.topk=20" --sweep "loss.topk=1" \
    --sweep "moco.temperature=0.2" --sweep "moco.temperature=0.05" \
    --sweep "optim.lr=0.12" --sweep "optim.lr=0.03" \
    --sweep "optim.weight_decay=1.0e-4" --sweep "optim.weight_decay=0.0" \
    --sweep "optim.warmup_epochs=1" --sweep "optim.warmup_epochs=10" --sweep "moco.mlp_hidden=512" \
    --sweep "moco.symmetric=false" --sweep "optim.decay_norm_and_bias=true" --sweep "loss.alpha_schedule=cosine" \
    >"$OUT/queue.log" 2>&1
echo "queue exit $?"
tail -n 40 "$OUT/queue.log"
cp "${LWZOO_ABLATION_STATE:-recipe_ablation.json}" "$OUT/recipe_ablation.json"
# what the finished units' smoothing sets hold (their checkpoints stay on this machine; ~9 s a unit on
# one CPU thread, each row saved as it comes)
LWZOO_NEIGHBOURS_STATE="$OUT/smoothing_neighbours.json" timeout 20 "$PY" smoothing_neighbours.py run \
    >"$OUT/neighbours.log" 2>&1
echo "smoothing_neighbours exit $?"
tar -czf "$OUT/unit-logs.tgz" -C "$LWZOO_CACHE/bench" logs
[ "$MPS" = on ] && echo quit | nvidia-cuda-mps-control

# gpu_check.sh gets every core and 150 s here (its full run wants 6 minutes of a call of its own): a smaller
# folder and no compiled rows; it writes its section into RESULTS.md (copied below), gpu_check.log and .json.
if [ "$GPU_CHECK" = 1 ] && [ "$DEVICE" = cuda ]; then
    OUT="$OUT" LWZOO_RESULTS="${LWZOO_RESULTS:-$PWD/RESULTS.md}" N_IMAGES=5120 COMPILE=0 DEADLINE=120 \
        ./gpu_check.sh >/dev/null 2>&1
elif [ "$GPU_CHECK" = 1 ]; then
    OUT="$OUT" LWZOO_RESULTS="${LWZOO_RESULTS:-$PWD/RESULTS.md}" DEVICE=cpu DEADLINE=120 ./gpu_check.sh >/dev/null 2>&1
fi
echo "gpu_check exit $?"
[ -f "$OUT/gpu_check.log" ] && tail -n 15 "$OUT/gpu_check.log"
cp "${LWZOO_RESULTS:-RESULTS.md}" "$OUT/RESULTS.md"
