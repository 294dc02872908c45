#!/usr/bin/env bash
# The one GPU check of kernels/swir_step (torch + triton + pytest only, no SGLang, no network):
# the gpu-marked tests of this folder (the bf16 step against the reference, no host sync, a CUDA
# graph; the opt-ins' bits), then bench_swir_step (checks each configuration against the
# single-request reference, then times it; default flags --parts --sweep, see its docstring).
# Results land in $OUT (default bench/out): gpu_tests.xml, reasoning_step.json and .md.
# usage, from anywhere:  OUT=/some/dir bash kernels/swir_step/gpu_check.sh [bench args...]
set -uo pipefail
# shellcheck source=kernels/gpu_check_lib.sh
source "$(dirname "$0")/../gpu_check_lib.sh"
[ $# -gt 0 ] || set -- --parts --sweep
gpu_tests kernels/swir_step
run_bench 150 '^sweep B\|^tp ' -m rio_kernels.swir_step.bench_swir_step "$@"
exit $((tests || bench))
