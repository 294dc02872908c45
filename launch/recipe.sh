#!/usr/bin/env bash
# Serve Rio on one hardware target: launch/recipe.sh TARGET [extra sglang.launch_server args] is
# `rio-sglang serve --target TARGET -- [extra args]` (rio_sglang/serve.py).
# Targets are launch/targets/TARGET.flags; the model is $RIO_MODEL_PATH (cpu-tiny generates one).
# Uses the project virtualenv ($RIO_VENV, default ~/.cache/rio-sglang/venv) without reinstalling.
set -euo pipefail
RIO_VENV="${RIO_VENV:-$HOME/.cache/rio-sglang/venv}"
PY="$RIO_VENV/bin/python"
if [ ! -x "$PY" ]; then
  echo "[rio-sglang] no virtualenv at $RIO_VENV: run scripts/quickstart.sh or set RIO_VENV" >&2
  exit 2
fi
# The module, not $RIO_VENV/bin/rio-sglang: a virtualenv installed before that script existed
# lacks it. PYTHONSAFEPATH: the working directory must not land on sys.path (a repository
# root's kernels/ and frontend/ folders would shadow real packages of those names).
export PYTHONSAFEPATH=1
if [ $# -eq 0 ] || [ "$1" = -h ] || [ "$1" = --help ]; then
  echo "usage: launch/recipe.sh TARGET [sglang.launch_server args], which runs:" >&2
  "$PY" -m rio_sglang.cli serve --help >&2
  [ $# -gt 0 ] || exit 2
  exit 0
fi
TARGET="$1"
shift
exec "$PY" -m rio_sglang.cli serve --target "$TARGET" -- "$@"
