#!/usr/bin/env bash
# The README's main job: install (once), serve a generated tiny checkpoint on this CPU with the
# real SGLang server, ask it one question with switching reasoning (SwiReasoning), print the
# reasoning, the answer and the latent statistics, stop the server.
set -euo pipefail
source "$(dirname "$0")/env.sh"
PORT="${PORT:-30000}"
"$RIO_VENV/bin/rio-sglang" serve --tiny --port "$PORT" &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null || true' EXIT
"$RIO_VENV/bin/rio-sglang" ask --url "http://127.0.0.1:$PORT" --wait 600 --reasoning switch \
  "What is 12 + 30?"
