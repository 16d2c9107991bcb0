#!/usr/bin/env bash
# The GPU checks in one prepared command, for a session lent a CUDA machine (the device tool's
# `run`, from the repository root, timeout_s 600). It needs no install: the machine's python3
# has torch with CUDA and mibench's other requirements; mibench runs from this checkout.
#
#   bash benchmarks/gpu_checks.sh            # everything, about 6-8 minutes
#   bash benchmarks/gpu_checks.sh tests      # or any of: tests cmif estimators run
#
# Writes under $OUT (default /tmp/mibench-gpu): gpu.txt, tests.log, cmif.log,
# estimators.log, run.log, run-naed.csv. Each step has its own time limit, so a slow step
# leaves the others' results; the figures go into docs/performance.md by hand.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/mibench-gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD:$PWD/tests${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
steps=${*:-tests cmif estimators run}

{
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
    "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda,
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'NO CUDA DEVICE')"
} > "$OUT/gpu.txt" 2>&1
cat "$OUT/gpu.txt"

for step in $steps; do
    echo "== $step ($(date +%T))"
    case $step in
    tests)  # CUDA against CPU, and the device handling
        timeout 170 "$PY" -m pytest -q -p no:cacheprovider -o addopts="" \
            tests/test_cuda.py tests/run/test_device.py 2>&1 | tee "$OUT/tests.log" | tail -n 25 ;;
    cmif)  # the issue-5 cases on CUDA: (b) straightforward, (c) cmif, bare FFT count
        timeout 150 "$PY" benchmarks/cmif.py --device cuda --cases small,256,512 --repeats 7 \
            2>&1 | tee "$OUT/cmif.log" | grep -v "^  \(page_faults\|fft_per\|package_grid:\)" ;;
    estimators)  # sparse binning core against dense N x B references: time and peak memory
        timeout 120 "$PY" benchmarks/estimators.py --device cuda --repeats 7 \
            2>&1 | tee "$OUT/estimators.log" | tail -n 30 ;;
    run)  # the default benchmark on the GPU (NAED per method, compare with the CPU figures)
        rm -rf /tmp/mibench-gpu-run
        timeout 200 "$PY" -m mibench.cli run --device cuda --out /tmp/mibench-gpu-run \
            2>&1 | tee "$OUT/run.log" | tail -n 20
        cp /tmp/mibench-gpu-run/results.csv "$OUT/run-naed.csv" 2>/dev/null ;;
    *) echo "unknown step $step (tests cmif estimators run)"; exit 2 ;;
    esac
done
echo "== done ($(date +%T))"
