# Sourced by the scripts: one virtualenv for the project (sglang 0.5.23 is ~11 GB: install once).
RIO_VENV="${RIO_VENV:-$HOME/.cache/rio-sglang/venv}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ ! -x "$RIO_VENV/bin/python" ]; then
  echo "[rio-sglang] creating virtualenv $RIO_VENV" >&2
  python3 -m venv "$RIO_VENV"
fi
echo "[rio-sglang] pip install -e \"$ROOT[dev]\" (first time: several minutes)" >&2
"$RIO_VENV/bin/pip" install -q -e "$ROOT[dev]" >&2
PY="$RIO_VENV/bin/python"
