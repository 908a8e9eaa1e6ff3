#!/usr/bin/env bash
# One short GPU check for sessions that have a device: a GPU smoke pretraining run plus timings
# (lwzoo's GPU path against a plain loop), written into benchmarks/RESULTS.md. Budget: 6 minutes.
# Needs torch, torchvision, timm and lwzoo's other dependencies importable on the GPU machine.
set -euo pipefail
cd "$(dirname "$0")"
export PYTHONPATH="$(cd .. && pwd)${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
timeout 360 python gpu_check.py --steps "${STEPS:-300}" "$@"
