#!/usr/bin/env bash
# One GPU session's checks, SGLang-free (torch + triton + pytest only): each kernel folder's
# gpu_check.sh (its gpu-marked tests, then its benchmark; about 4 minutes on an H200), each into
# its own folder of $OUT (step/: kernels/swir_step, moe/: kernels/fused_moe), and everything
# once more as $OUT/all.tgz (the device tool brings back at most 8 files).
# Usage from the repository root: OUT=/some/dir bash bench/gpu_check.sh
# RIO_BENCH_ARGS: bench_swir_step's flags (default --parts --sweep; see its docstring).
# Last: bench/verdicts.py's lines (which opt-ins and tiles the run supports turning on).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu-out}"
# shellcheck source=kernels/gpu_check_lib.sh
source kernels/gpu_check_lib.sh
rc=0
start=$SECONDS
# shellcheck disable=SC2086
OUT="$OUT/step" timeout 250 bash kernels/swir_step/gpu_check.sh ${RIO_BENCH_ARGS:-} \
  >"$OUT/swir_step.log" 2>&1 || rc=1
tail -80 "$OUT/swir_step.log"; echo "swir_step: $((SECONDS - start)) s"
start=$SECONDS
OUT="$OUT/moe" timeout 170 bash kernels/fused_moe/gpu_check.sh >"$OUT/fused_moe.log" 2>&1 || rc=1
tail -60 "$OUT/fused_moe.log"; echo "fused_moe: $((SECONDS - start)) s"
# What the run decides for the opt-ins and the tiles (bench/verdicts.py; nothing is flipped here)
"$PY" -m bench.verdicts "$OUT" 2>&1 | tee "$OUT/verdicts.txt"
(cd "$OUT" && tar czf all.tgz --exclude all.tgz .)
exit $rc
