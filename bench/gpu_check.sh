#!/usr/bin/env bash
# One GPU session's checks, SGLang-free (torch + triton + pytest only): the gpu-marked tests of
# the reasoning step and the kernels, then the benchmarks. Writes logs and tables to $OUT.
# Usage from the repository root: OUT=/some/dir bash bench/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu-out}"
mkdir -p "$OUT"
[ -e rio_kernels ] || ln -sfn kernels rio_kernels
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/device.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" \
  | tee -a "$OUT/device.txt"
rc=0
# --noconftest: tests/conftest.py builds tiny checkpoints with transformers classes the GPU
# machine's older transformers may lack; these tests need none of it.
timeout 240 python3 -m pytest -q --noconftest -p no:cacheprovider -m gpu \
  tests/test_swir_step.py tests/test_reasoning_state.py kernels/entropy kernels/soft_embed \
  2>&1 | tee "$OUT/gpu_tests.log" | tail -15 || rc=1
timeout 300 python3 -m bench.bench_reasoning_step ${RIO_BENCH_ARGS:-} 2>&1 | tee "$OUT/bench_reasoning_step.log" \
  | tail -40 || rc=1
if [ -f kernels/fused_moe/gpu_check.sh ]; then
  OUT="$OUT" timeout 200 bash kernels/fused_moe/gpu_check.sh 2>&1 | tee "$OUT/fused_moe.log" \
    | tail -40 || rc=1
fi
exit $rc
