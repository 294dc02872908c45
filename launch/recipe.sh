#!/usr/bin/env bash
# Serve Rio on one hardware target: launch/recipe.sh TARGET [extra sglang.launch_server args].
# Targets are launch/targets/TARGET.flags; the model is $RIO_MODEL_PATH (cpu-tiny generates one).
# Uses the project virtualenv ($RIO_VENV, default ~/.cache/rio-sglang/venv) without reinstalling.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
RIO_VENV="${RIO_VENV:-$HOME/.cache/rio-sglang/venv}"
PY="$RIO_VENV/bin/python"
if [ ! -x "$PY" ]; then
  echo "[rio-sglang] no virtualenv at $RIO_VENV: run scripts/quickstart.sh or set RIO_VENV" >&2
  exit 2
fi
# By path, not `-m launch.recipe`: the repository root must not land on the server's sys.path
# (its kernels/ and frontend/ folders would shadow real packages of those names).
exec "$PY" "$HERE/recipe.py" "$@"
