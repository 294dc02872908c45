#!/usr/bin/env bash
# One GPU session's checks, SGLang-free (torch + triton + pytest only): the gpu-marked tests of
# the reasoning step and the kernels, then the benchmarks (about 4 minutes on an H200). Writes
# logs and tables to $OUT, and everything once more as $OUT/all.tgz (the device tool brings back
# at most 8 files).
# Usage from the repository root: OUT=/some/dir bash bench/gpu_check.sh
# RIO_BENCH_ARGS: bench_reasoning_step's flags (default --parts --sweep; see its docstring).
# Last: bench/verdicts.py's lines (which opt-ins and tiles the run supports turning on).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu-out}"
mkdir -p "$OUT/moe"
[ -e rio_kernels ] || ln -sfn kernels rio_kernels
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/device.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" \
  | tee -a "$OUT/device.txt"
# The device copy's git metadata may predate the tree that travelled (it printed the session's
# starting commit for a merged tree): the count of files differing from that commit says so.
echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo none)," \
  "$(git status --porcelain 2>/dev/null | wc -l) files differ from it" | tee -a "$OUT/device.txt"
rc=0
start=$SECONDS
# --noconftest: tests/conftest.py builds tiny checkpoints with transformers classes the GPU
# machine's older transformers may lack; these tests need none of it.
timeout 90 python3 -m pytest -q --noconftest -p no:cacheprovider -m gpu \
  tests/test_swir_step.py tests/test_swir_step_tiles.py --junitxml "$OUT/gpu_tests.xml" \
  >"$OUT/gpu_tests.log" 2>&1 || rc=1
tail -3 "$OUT/gpu_tests.log"; echo "step gpu tests: $((SECONDS - start)) s"
start=$SECONDS
# shellcheck disable=SC2086
OUT="$OUT" timeout 150 python3 -m bench.bench_reasoning_step ${RIO_BENCH_ARGS:---parts --sweep} \
  >"$OUT/bench_reasoning_step.log" 2>&1 || rc=1
grep -v "^sweep B\|^tp " "$OUT/bench_reasoning_step.log" | tail -70
echo "bench_reasoning_step: $((SECONDS - start)) s"
start=$SECONDS
OUT="$OUT/moe" timeout 170 bash kernels/fused_moe/gpu_check.sh \
  >"$OUT/fused_moe.log" 2>&1 || rc=1
tail -60 "$OUT/fused_moe.log"; echo "fused_moe: $((SECONDS - start)) s"
# What the run decides for the opt-ins and the tiles (bench/verdicts.py; nothing is flipped here)
python3 -m bench.verdicts "$OUT" 2>&1 | tee "$OUT/verdicts.txt"
(cd "$OUT" && tar czf all.tgz --exclude all.tgz .)
exit $rc
