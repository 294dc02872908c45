#!/usr/bin/env bash
# The one GPU check of kernels/fused_moe (torch + triton + pytest only, no SGLang, no network):
# the gpu-marked tests of this folder (w8a8 prefill included), then bench_fused_moe (checks each
# kernel against the reference on fresh data, then times it; its last lines give w8a8 / bf16
# TFLOP/s, then the FP8 small-T tile sweep: sweep_small_t.py). Results land in $OUT (default bench/out).
# usage, from anywhere:  OUT=/some/dir bash kernels/fused_moe/gpu_check.sh [bench args...]
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-$PWD/bench/out}"
mkdir -p "$OUT"
[ -e rio_kernels ] || ln -s kernels rio_kernels  # imported as rio_kernels, as when installed
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY="${PYTHON:-python3}"
echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo none)," \
  "$(git status --porcelain 2>/dev/null | wc -l) files differ from it" | tee "$OUT/commit.txt"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/device.txt"
"$PY" -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"

start=$SECONDS
timeout 90 "$PY" -m pytest -q -m gpu -p no:cacheprovider kernels/fused_moe \
    --junitxml "$OUT/gpu_tests.xml" >"$OUT/gpu_tests.txt" 2>&1
tests=$?
tail -5 "$OUT/gpu_tests.txt"
echo "gpu tests: rc=$tests in $((SECONDS - start)) s"

start=$SECONDS
timeout 180 "$PY" -m rio_kernels.fused_moe.bench_fused_moe --sweep-fp8 --out "$OUT" "$@" \
    >"$OUT/bench.log" 2>&1
bench=$?
grep -v '^{' "$OUT/bench.log" | tail -75
echo "bench: rc=$bench in $((SECONDS - start)) s (rows so far: $OUT/bench_fused_moe.md)"
exit $((tests || bench))
