#!/usr/bin/env bash
# The GPU check of issue 16 (item 6): lwzoo.pretrain's pairs/s, GPU-busy fraction and peak memory for
# MobileNet-V3-L and EfficientNet-B0 at 224 px on a JPEG folder written to disk, beside the plain loop in the
# MoCo authors' style, and the 32-px step before/after split BatchNorm and train.compile (gpu_check.py's
# docstring says how each is measured). It fits 6 minutes on one H200, the folder's writing included: every
# phase is time-boxed, phases that no longer fit are skipped, and the results are rewritten after each phase.
#
#   benchmarks/gpu_check.sh                  # on the GPU machine (OUT=... for the results)
#   DEVICE=cpu benchmarks/gpu_check.sh       # a dry run anywhere: toy sizes (the second defaults below),
#                                            # ~8 minutes on 2 busy CPU cores; its section says it was a dry run
#
# Knobs (environment; default on a GPU / with DEVICE=cpu): N_IMAGES (10240 / 96), BATCH (256 / 32),
# IMAGE_SIZE (224 / 32), STEPS (80 / 2, per lwzoo.pretrain run), SMALL_STEPS (30 / 1, per 32-px step),
# PLAIN_STEPS (0: two rounds of the DataLoader's workers / 2), COMPILE (reduce-overhead / 0; 0 leaves the
# compiled rows out), DEADLINE (330 / 1500 s for the Python part; a hard stop follows 25 s later),
# ONLY (phase names, space-separated; default all), OUT (where the results go), SCRATCH (the JPEG folder,
# decode cache and run folders; cleared at the end unless KEEP=1).
# What comes back in $OUT: RESULTS.md (the gpu_check section, to copy into benchmarks/RESULTS.md),
# gpu_check.json (every row) and gpu_check.log.
# Needs torch, torchvision, timm and lwzoo's other dependencies importable; nothing from the network.
set -uo pipefail
cd "$(dirname "$0")"
: "${OUT:=/tmp/lwzoo-gpu-check-out}" "${DEVICE:=cuda}" "${SCRATCH:=/tmp/lwzoo-gpu-check}" "${KEEP:=0}" "${ONLY:=}"
if [ "$DEVICE" = cpu ]; then
    : "${N_IMAGES:=96}" "${BATCH:=32}" "${IMAGE_SIZE:=32}" "${STEPS:=2}" "${SMALL_STEPS:=1}" "${PLAIN_STEPS:=2}"
    : "${COMPILE:=0}" "${DEADLINE:=1500}"
fi
: "${N_IMAGES:=10240}" "${BATCH:=256}" "${IMAGE_SIZE:=224}" "${STEPS:=80}" "${SMALL_STEPS:=30}" "${PLAIN_STEPS:=0}"
: "${COMPILE:=reduce-overhead}" "${DEADLINE:=330}"
STARTED=$(date +%s)
mkdir -p "$OUT"
PY=$(command -v python3 || command -v python)
export PYTHONPATH="$(cd .. && pwd)${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export LWZOO_RESULTS="${LWZOO_RESULTS:-$OUT/RESULTS.md}"
KNOBS="DEVICE=$DEVICE N_IMAGES=$N_IMAGES BATCH=$BATCH IMAGE_SIZE=$IMAGE_SIZE STEPS=$STEPS SMALL_STEPS=$SMALL_STEPS"
KNOBS="$KNOBS PLAIN_STEPS=$PLAIN_STEPS COMPILE=$COMPILE DEADLINE=$DEADLINE${ONLY:+ ONLY=\"$ONLY\"}"
[ "$DEVICE" = cuda ] && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
# shellcheck disable=SC2086  # ONLY is a list
timeout -k 10 $((DEADLINE + 25)) "$PY" gpu_check.py --device "$DEVICE" --images "$N_IMAGES" --batch "$BATCH" \
    --image-size "$IMAGE_SIZE" --steps "$STEPS" --small-steps "$SMALL_STEPS" --plain-steps "$PLAIN_STEPS" \
    --compile "$COMPILE" --deadline "$DEADLINE" --started "$STARTED" --scratch "$SCRATCH" \
    --json "$OUT/gpu_check.json" --command "$KNOBS benchmarks/gpu_check.sh" ${ONLY:+--only $ONLY} \
    2>&1 | tee "$OUT/gpu_check.log"
rc=${PIPESTATUS[0]}
echo "gpu_check exit $rc after $(($(date +%s) - STARTED)) s; results in $LWZOO_RESULTS"
# only what gpu_check.py made there (it clears the same at its start: a fresh folder each run)
[ "$KEEP" = 1 ] || { rm -rf "$SCRATCH/jpegs" "$SCRATCH/cache" "$SCRATCH/runs"; rmdir "$SCRATCH" 2>/dev/null; }
exit "$rc"
