"""`rio_sglang.provenance identity`: mention counting and Wilson intervals by hand, the whole
command over real HTTP against a scripted local endpoint, and once against the tiny CPU server."""

from __future__ import annotations

import json
import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from rio_sglang.provenance.__main__ import main
from rio_sglang.provenance.identity import mentioned, wilson

# Answer by request seed (mod 4): what the scripted endpoint says.
SCRIPT = ("I am Qwen3.5, trained by Alibaba.", "I'm Nex-N2, from the Nex team.",
          "qwen? nex? I am both.", "I am a Nexus of knowledge, an AI assistant.")


@pytest.mark.parametrize("text, names, expected", [
    ("I am Qwen3.5, made by Alibaba", ["Qwen", "Nex"], ["Qwen"]),
    ("i am qwen", ["Qwen"], ["Qwen"]),
    ("Nex-N2-Pro here", ["Nex", "Qwen"], ["Nex"]),
    ("a Nexus of facts", ["Nex"], []),
    ("Qwenlike", ["Qwen"], []),
    ("(Rio) and [Qwen]", ["Rio", "Qwen", "Nex"], ["Rio", "Qwen"]),
    ("", ["Qwen"], []),
])
def test_mentions(text, names, expected):
    assert mentioned(text, names) == expected


@pytest.mark.parametrize("k, n", [(0, 10), (79, 100), (5, 5), (1, 3), (500, 1000)])
def test_wilson_bounds_solve_the_score_equation(k, n):
    # The bounds are the roots p of (k/n - p)^2 = z^2 p (1 - p) / n.
    z, phat = 1.959963984540054, k / n
    a, b, c = 1 + z * z / n, -(2 * phat + z * z / n), phat * phat
    disc = math.sqrt(b * b - 4 * a * c)
    assert wilson(k, n) == pytest.approx(((-b - disc) / (2 * a), (-b + disc) / (2 * a)), abs=1e-12)


def test_wilson_by_hand():
    assert wilson(0, 10)[1] == pytest.approx(0.38416 / 1.38416, abs=1e-5)
    assert wilson(0, 0) == (0.0, 1.0)


@pytest.fixture
def endpoint():
    """A scripted OpenAI-style endpoint on 127.0.0.1 that records the requests it gets."""
    seen = []

    class Handler(BaseHTTPRequestHandler):
        def _send(self, body: dict):
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):  # /v1/models
            self._send({"data": [{"id": "scripted"}]})

        def do_POST(self):  # /v1/chat/completions
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append((self.path, body))
            answer = SCRIPT[body["seed"] % len(SCRIPT)]
            self._send({"choices": [{"message": {"role": "assistant", "content": answer}}]})

        def log_message(self, *args):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_port}", seen
    srv.shutdown()


def test_identity_counts_shares(endpoint, tmp_path, capsys):
    url, seen = endpoint
    main(["identity", url + "/v1", "--names", "Qwen", "Nex", "-n", "8", "--seed", "0",
          "--temperature", "0.5", "--out", str(tmp_path), "--no-progress"])
    assert [p for p, _ in seen] == ["/v1/chat/completions"] * 8
    assert all(b["messages"] == [{"role": "user", "content": b["messages"][0]["content"]}]
               and b["model"] == "scripted" and b["temperature"] == 0.5 for _, b in seen)
    assert [b["seed"] for _, b in seen] == list(range(8))
    report = json.loads((tmp_path / "identity.json").read_text())
    rows = {r["name"]: (r["count"], r["share"]) for r in report["shares"]}
    assert rows == {"Qwen": (4, 0.5), "Nex": (4, 0.5), "(none of the names)": (2, 0.25)}
    low, high = wilson(4, 8)
    table = capsys.readouterr().out
    assert f"| Qwen | 4 / 8 | 50.0% | {100 * low:.1f}% - {100 * high:.1f}% |" in table
    assert table == (tmp_path / "identity.md").read_text()


def test_identity_http_error_is_clear(tmp_path):
    with pytest.raises(SystemExit, match="error: .*HTTP 501"):
        # http.server answers a method it lacks with 501; here: any non-200 status.
        class NoPost(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

        srv = ThreadingHTTPServer(("127.0.0.1", 0), NoPost)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        try:
            main(["identity", f"http://127.0.0.1:{srv.server_port}", "--names", "Qwen", "-n", "1",
                  "--model", "m", "--no-progress"])
        finally:
            srv.shutdown()


@pytest.mark.server
def test_identity_against_the_tiny_server(server, tmp_path, capsys):
    main(["identity", server.url, "--names", "Qwen", "Rio", "-n", "2", "--max-tokens", "8",
          "--temperature", "0", "--out", str(tmp_path), "--no-progress"])
    report = json.loads((tmp_path / "identity.json").read_text())
    assert report["asked"] == 2 and len(report["answers"]) == 2
    none = sum(not a["mentions"] for a in report["answers"])
    assert report["shares"][-1] == {"name": "(none of the names)", "count": none,
                                    "share": none / 2, "low": wilson(none, 2)[0],
                                    "high": wilson(none, 2)[1]}
    assert "| Qwen |" in capsys.readouterr().out
