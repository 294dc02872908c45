#!/usr/bin/env bash
# The README's test command: install (once) and run every test that needs no GPU, on two
# pytest-xdist workers (RIO_TEST_WORKERS; 0 runs in this process). A test module is one unit of
# work, handed out longest first (the root conftest, tests/suite_weights.json).
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"
exec "$PY" -m pytest -m "not gpu" -n "${RIO_TEST_WORKERS:-2}" --dist loadfile \
  --no-loadscope-reorder "$@"
