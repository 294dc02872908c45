#!/usr/bin/env bash
# The README's test command: install (once) and run every test that needs no GPU.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"
exec "$PY" -m pytest -m "not gpu" "$@"
