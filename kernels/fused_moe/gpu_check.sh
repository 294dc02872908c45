#!/usr/bin/env bash
# The one GPU check of kernels/fused_moe (torch + triton + pytest only, no SGLang, no network):
# the gpu-marked tests of this folder (w8a8 prefill included), then bench_fused_moe (checks each
# kernel against the reference on fresh data, then times it; its last lines give w8a8 / bf16
# TFLOP/s, then the FP8 small-T tile sweep: sweep_small_t.py). Results land in $OUT (default
# bench/out): gpu_tests.xml, bench_fused_moe.json and .md.
# usage, from anywhere:  OUT=/some/dir bash kernels/fused_moe/gpu_check.sh [bench args...]
set -uo pipefail
# shellcheck source=kernels/gpu_check_lib.sh
source "$(dirname "$0")/../gpu_check_lib.sh"
gpu_tests kernels/fused_moe
run_bench 180 '^{' -m rio_kernels.fused_moe.bench_fused_moe --sweep-fp8 --out "$OUT" "$@"
exit $((tests || bench))
