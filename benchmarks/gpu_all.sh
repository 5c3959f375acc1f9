#!/usr/bin/env bash
# The one prepared GPU run (issues 20 and 21): the latency suite, then the CIFAR-10 ResNet-56
# experiment, each under its own wall-clock budget, logs and JSON rows under $OUT.
#
#   OUT=out/gpu bash benchmarks/gpu_all.sh [--smoke]
#
# On the lent GPU machine the packages it lacks (fxprune itself, torch-pruning) come as wheels
# in .gpu/whl and the CIFAR-10 archive in .gpu/data (both git-ignored, carried along); the
# scripts import fxprune from the checkout when it is not installed:
#   pip download --no-deps --only-binary=:all: --python-version 3.12 -d .gpu/whl torch-pruning==1.6.1
#   cp -r ../shared/data/cifar10-jpeg .gpu/data/
# --smoke runs the same code paths on the CPU with tiny sizes (no wheels needed).
set -u -o pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out/gpu}
mkdir -p "$OUT/latency" "$OUT/cifar"
SMOKE=0
[ "${1:-}" = "--smoke" ] && SMOKE=1
PY=${PYTHON:-python3}
if [ "$SMOKE" = 0 ] && [ -d .gpu/whl ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
  export FXPRUNE_DATA=${FXPRUNE_DATA:-$PWD/.gpu/data}
fi
export PYTHONUNBUFFERED=1
T0=$(date +%s)
{
  date -u +"start %Y-%m-%dT%H:%M:%SZ"
  nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,clocks.mem,memory.total --format=csv 2>/dev/null || echo "no nvidia-smi"
  $PY -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'cuda', torch.cuda.is_available())"
} 2>&1 | tee "$OUT/env.txt"
if [ "$SMOKE" = 1 ]; then
  $PY benchmarks/gpu_suite.py --smoke --out "$OUT/latency" --plot "$OUT/latency/gpu_latency.png" 2>&1 | tee "$OUT/latency/log.txt"
  $PY benchmarks/cifar10_resnet56.py --smoke --out "$OUT/cifar" 2>&1 | tee "$OUT/cifar/log.txt"
else
  # each part stops starting work at its budget; `timeout` is the hard stop (rows are written
  # as they come, so a stop loses only the row in progress)
  timeout "${LATENCY_HARD:-215}" $PY benchmarks/gpu_suite.py --budget-s "${LATENCY_BUDGET:-170}" --compile-first 0.25 \
    --out "$OUT/latency" --plot "$OUT/latency/gpu_latency.png" 2>&1 | tee "$OUT/latency/log.txt"
  echo "latency suite done after $(( $(date +%s) - T0 )) s"
  timeout "${CIFAR_HARD:-360}" $PY benchmarks/cifar10_resnet56.py --gpu --budget-s "${CIFAR_BUDGET:-330}" \
    --out "$OUT/cifar" 2>&1 | tee "$OUT/cifar/log.txt"
fi
echo "all done after $(( $(date +%s) - T0 )) s"
