"""`rio-sglang ask [--url URL] [--reasoning MODE] "question"` (or `python -m rio_sglang.client`):
ask a running server one chat question with a SwiReasoning mode; prints the reasoning, the answer
and the latent statistics. Used by scripts/quickstart.sh; imports no torch.
"""

from __future__ import annotations

import argparse
import sys
import time


def wait_for(url: str, timeout: float) -> None:
    """Poll /model_info (not /health: that one runs a generation, slow on a CPU)."""
    import requests

    deadline = time.monotonic() + timeout
    while True:
        try:
            if requests.get(f"{url}/model_info", timeout=5).status_code == 200:
                return
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"no server answered at {url} within {timeout:.0f}s")
        time.sleep(2)


def ask(url: str, question: str, max_tokens: int = 16, reasoning: str | None = "switch") -> dict:
    import requests

    from rio_sglang.reasoning.spec import SPEC_KEY, ReasoningSpec

    body = {"model": "default", "messages": [{"role": "user", "content": question}],
            "max_tokens": max_tokens, "temperature": 0, "separate_reasoning": True}
    if reasoning is not None:
        body["custom_params"] = {SPEC_KEY: ReasoningSpec(mode=reasoning).to_json()}
    r = requests.post(f"{url}/v1/chat/completions", json=body, timeout=900)
    if r.status_code != 200:
        raise SystemExit(f"HTTP {r.status_code}: {r.text[:500]}")
    return r.json()


def main(argv=None, prog: str = "python -m rio_sglang.client") -> int:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__)
    ap.add_argument("question")
    ap.add_argument("--url", default="http://127.0.0.1:30000")
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--reasoning", default="switch", choices=["explicit", "latent", "switch"])
    ap.add_argument("--wait", type=float, default=0, help="seconds to wait for the server")
    args = ap.parse_args(argv)
    if args.wait:
        wait_for(args.url, args.wait)
    out = ask(args.url, args.question, args.max_tokens, args.reasoning)
    msg = out["choices"][0]["message"]
    stats = (out.get("metadata") or {}).get("rio_reasoning")
    print(f"mode:      {args.reasoning}")
    print(f"reasoning: {msg.get('reasoning_content')!r}")
    print(f"answer:    {msg.get('content')!r}")
    print(f"stats:     {stats}")
    if stats is None:
        print("error: the server returned no reasoning statistics", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
