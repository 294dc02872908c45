"""`python launch/smoke.py URL [--server-log PATH] [--wait S] [--json PATH]`: is this server
serving Rio as we built it?

One row per check, printed as a pass/fail table; exit status 1 if any row fails. A row passes
only on evidence the server gives, never on a 200 alone: our class's log line, the reasoning
statistics the runtime returns, the image's extra prompt tokens.
"""

from __future__ import annotations

import argparse
import base64
import json
import struct
import sys
import time
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import requests

from rio_frontend.wire import STATS_KEY, openai_body, stats_from_meta_info, stats_from_openai
from rio_sglang.logmarks import SERVING_MARK
from rio_sglang.reasoning.spec import ReasoningSpec
from rio_sglang.sglang_server import MODEL_PACKAGE, PARSER_FLAGS

# Which class serves, over HTTP: a key of /model_info, or of an entry of /server_info's
# internal_states, holding the class's dotted path. SGLang 0.5.23 reports neither; our class
# logs SERVING_MARK instead, which only a caller holding the server's log can check.
CLASS_KEY = "rio_model_class"
QUESTION = "What is 12 + 30?"
TIMEOUT = 600  # seconds per request: a CPU server decodes ~2 tokens/s


@dataclass(frozen=True)
class Row:
    name: str
    ok: bool
    detail: str


def check_server(url: str) -> tuple[Row, dict]:
    try:
        r = requests.get(f"{url}/model_info", timeout=30)
    except requests.RequestException as e:
        return Row("server", False, f"no answer from {url}/model_info: {e}"), {}
    if r.status_code != 200:
        return Row("server", False, f"/model_info: HTTP {r.status_code}"), {}
    info = r.json()
    return Row("server", True, f"{info.get('architectures')} from {info.get('model_path')}"), info


def check_parsers(info: dict) -> Row:
    want = dict(zip(PARSER_FLAGS[::2], PARSER_FLAGS[1::2]))
    got = {"--reasoning-parser": info.get("reasoning_parser"),
           "--tool-call-parser": info.get("tool_call_parser")}
    return Row("parsers", got == want, ", ".join(f"{k} {v}" for k, v in got.items()))


def check_class(url: str, info: dict, server_log: str | None) -> Row:
    """Our class, not SGLang's built-in one of the same name (SGLang swallows import errors)."""
    found = info.get(CLASS_KEY)
    if found is None:
        try:
            states = requests.get(f"{url}/server_info", timeout=60).json().get("internal_states")
        except (requests.RequestException, ValueError):
            states = None
        found = next((s[CLASS_KEY] for s in states or () if CLASS_KEY in s), None)
    if found is not None:
        return Row("our model class", str(found).startswith(MODEL_PACKAGE + "."),
                   f"{CLASS_KEY} = {found}")
    if server_log:
        try:
            marked = SERVING_MARK in Path(server_log).read_text(errors="replace")
        except OSError as e:
            return Row("our model class", False, f"cannot read the server log: {e}")
        return Row("our model class", marked,
                   f"{SERVING_MARK!r} {'in' if marked else 'NOT in'} {server_log}"
                   + ("" if marked else ": SGLang serves its built-in class"))
    return Row("our model class", False,
               f"not identifiable over HTTP: no {CLASS_KEY!r} in /model_info or /server_info "
               f"and SGLang reports only architectures {info.get('architectures')}, which its "
               "built-in class shares; pass --server-log to check our class's log line")


def _chat(url: str, content, max_tokens: int, **extra) -> tuple[dict | None, str]:
    body = {"model": "default", "messages": [{"role": "user", "content": content}],
            "max_tokens": max_tokens, "temperature": 0, "separate_reasoning": True, **extra}
    try:
        r = requests.post(f"{url}/v1/chat/completions", json=body, timeout=TIMEOUT)
    except requests.RequestException as e:
        return None, f"request failed: {e}"
    if r.status_code != 200:
        return None, f"HTTP {r.status_code}: {r.text[:200]}"
    return r.json(), ""


def check_mode(url: str, mode: str, max_tokens: int) -> Row:
    """One chat request asking for `mode` through custom_params; pass on the server's stats."""
    # The math-token rule would keep a tiny vocabulary (letters, digits) explicit: switch it
    # off so that latent steps must show whenever the runtime acts on the spec.
    spec = ReasoningSpec(mode=mode, math_tokens_explicit=mode == "explicit")
    out, err = _chat(url, QUESTION, max_tokens, **openai_body(spec), return_meta_info=True)
    name = f"reasoning: {mode}"
    if out is None:
        return Row(name, False, err)
    tokens = out["usage"]["completion_tokens"]
    stats = stats_from_openai(out) or stats_from_meta_info(out["choices"][0].get("meta_info"))
    if stats is None:
        # Explicit reasoning is plain decoding, which every server does: answered is enough.
        return Row(name, mode == "explicit" and tokens > 0,
                   f"answered {tokens} tokens; no {STATS_KEY!r} statistics in the response: "
                   "the spec was not acted on (reasoning runtime, issue 4, not serving)")
    ok = {"explicit": stats.latent_steps == 0 and tokens > 0,
          "latent": stats.latent_steps > 0 and stats.switches == 0,
          "switch": stats.latent_steps > 0}[mode]
    return Row(name, ok, f"{tokens} tokens, {stats}")


def tiny_png(size: int = 64) -> bytes:
    """A size x size RGB PNG: red with a blue band (no imaging library needed)."""
    rows = b"".join(b"\x00" + (b"\x20\x40\xe0" if size // 3 <= y < size // 2 else b"\xe0\x20\x20")
                    * size for y in range(size))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b""))


def check_image(url: str, max_tokens: int) -> Row:
    """An image as a base64 data URL; passes when its tokens reached the prompt and it answered."""
    text = "What colours are in this picture?"
    data_url = "data:image/png;base64," + base64.b64encode(tiny_png()).decode()
    parts = [{"type": "image_url", "image_url": {"url": data_url}}, {"type": "text", "text": text}]
    with_image, err = _chat(url, parts, max_tokens)
    if with_image is None:
        return Row("image", False, err)
    text_only, err = _chat(url, text, 1)
    if text_only is None:
        return Row("image", False, f"text-only comparison: {err}")
    n_img, n_txt = (with_image["usage"]["prompt_tokens"], text_only["usage"]["prompt_tokens"])
    answered = with_image["usage"]["completion_tokens"]
    return Row("image", n_img > n_txt and answered > 0,
               f"prompt {n_img} tokens with the image, {n_txt} without; answered {answered} tokens")


def run(url: str, max_tokens: int = 8, server_log: str | None = None) -> list[Row]:
    url = url.rstrip("/")
    server, info = check_server(url)
    if not server.ok:
        return [server]
    rows = [server, check_parsers(info), check_class(url, info, server_log)]
    rows += [check_mode(url, mode, max_tokens) for mode in ("explicit", "latent", "switch")]
    return rows + [check_image(url, max_tokens)]


def table(rows: list[Row]) -> str:
    width = max(len(r.name) for r in rows)
    lines = [f"{'check':<{width}}  result  detail"]
    lines += [f"{r.name:<{width}}  {'PASS' if r.ok else 'FAIL':<6}  {r.detail}" for r in rows]
    return "\n".join(lines)


def wait_for(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{url}/model_info", timeout=5).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(2)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python launch/smoke.py", description=__doc__)
    ap.add_argument("url")
    ap.add_argument("--wait", type=float, default=0, help="seconds to wait for the server")
    ap.add_argument("--max-tokens", type=int, default=8)
    ap.add_argument("--json", help="also write the rows to this file")
    ap.add_argument("--server-log", help="the server's log, to find our class's serving line")
    args = ap.parse_args(argv)
    if args.wait:
        wait_for(args.url.rstrip("/"), args.wait)
    rows = run(args.url, args.max_tokens, args.server_log)
    sys.stdout.write(table(rows) + "\n")
    if args.json:
        with open(args.json, "w") as f:
            json.dump([asdict(r) for r in rows], f, indent=1)
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
