# Sourced by bench/gpu_check.sh and kernels/<op>/gpu_check.sh, never run alone: a GPU check's
# start (torch + triton + pytest only, no SGLang, no network) and its two steps. Moves to the
# repository root and exports PYTHONPATH there (a rio_kernels -> kernels symlink: imported as
# when installed); OUT (default bench/out) gets commit.txt and device.txt; PY: $PYTHON or python3.
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT="${OUT:-$PWD/bench/out}"
mkdir -p "$OUT"
[ -e rio_kernels ] || ln -s kernels rio_kernels
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY="${PYTHON:-python3}"
# The device copy's git metadata may predate the tree that travelled (it printed the session's
# starting commit for a merged tree): the count of files differing from that commit says so.
echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo none)," \
  "$(git status --porcelain 2>/dev/null | wc -l) files differ from it" | tee "$OUT/commit.txt"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader \
  | tee "$OUT/device.txt"
"$PY" -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" \
  | tee -a "$OUT/device.txt"

# gpu_tests PATH: the gpu-marked tests under PATH (90 s at most); JUnit XML and log in $OUT.
# Sets tests (pytest's exit status).
gpu_tests() {
  local start=$SECONDS
  timeout 90 "$PY" -m pytest -q -m gpu -p no:cacheprovider "$1" \
    --junitxml "$OUT/gpu_tests.xml" >"$OUT/gpu_tests.txt" 2>&1
  tests=$?
  tail -5 "$OUT/gpu_tests.txt"
  echo "gpu tests: rc=$tests in $((SECONDS - start)) s"
}

# run_bench SECONDS SKIP ARGS...: `$PY ARGS` (a benchmark, OUT=$OUT) under a time limit, its log
# in $OUT/bench.log; prints the log's last lines but those matching SKIP. Sets bench.
run_bench() {
  local start=$SECONDS limit=$1 skip=$2
  shift 2
  OUT="$OUT" timeout "$limit" "$PY" "$@" >"$OUT/bench.log" 2>&1
  bench=$?
  grep -v "$skip" "$OUT/bench.log" | tail -75
  echo "bench: rc=$bench in $((SECONDS - start)) s"
}
