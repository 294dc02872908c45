"""The per-reasoning-mode rows: streamed /generate requests carrying a reasoning spec, timed as
`sglang.bench_serving` times its own (TTFT, ITL p50/p99, output tokens/s).

Called by bench/serve_bench.py. A row is refused unless every request came back complete and
reported reasoning statistics, and a latent request really took latent steps.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import json
import time
from dataclasses import dataclass, field

import numpy as np

# The math-token rule (digits, letters, operators stay explicit) is off: random weights emit
# such tokens often enough to keep a "latent" request explicit, which would time the wrong path.
MODE_SPECS = {"explicit": {"mode": "explicit"},
              "latent": {"mode": "latent", "math_tokens_explicit": False},
              "switch": {"mode": "switch", "math_tokens_explicit": False}}


@functools.cache
def workload_prompts(tokenizer_path: str, input_len: int, output_len: int, num_prompts: int,
                     seed: int) -> tuple[tuple[int, ...], ...]:
    """The token ids `bench_serving --dataset-name random-ids --tokenize-prompt
    --random-range-ratio 1 --seed S` sends: SGLang's own sampler, seeded as it seeds it."""
    import random

    from sglang.benchmark.datasets.random import sample_random_requests
    from transformers import AutoTokenizer

    random.seed(seed)
    np.random.seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
    with contextlib.redirect_stdout(io.StringIO()):  # it prints token totals
        rows = sample_random_requests(input_len, output_len, num_prompts, 1.0, tokenizer, "",
                                      random_sample=False, return_text=False)
    return tuple(tuple(row.prompt) for row in rows)


@dataclass
class Timed:
    """One request: seconds to its first token, the gaps after it (one per token), its stats."""

    ttft: float = 0.0
    itls: list[float] = field(default_factory=list)
    output_len: int = 0
    stats: dict | None = None
    error: str | None = None


async def _one(session, url: str, ids, output_len: int, spec: dict | None) -> Timed:
    # As serve_bench.sampling_params asks of bench_serving's requests.
    sampling = {"temperature": 0.0, "max_new_tokens": output_len, "ignore_eos": True,
                "skip_special_tokens": False}
    if spec is not None:
        sampling["custom_params"] = {"rio_reasoning": spec}
    body = {"input_ids": list(ids), "sampling_params": sampling, "stream": True}
    out, start = Timed(), time.perf_counter()
    last = start
    async with session.post(f"{url}/generate", json=body) as resp:
        if resp.status != 200:
            out.error = f"HTTP {resp.status}: {(await resp.text())[:300]}"
            return out
        async for raw in resp.content:  # server-sent events, one "data: {...}" line each
            line = raw.strip()
            if not line.startswith(b"data:") or line[5:].strip() == b"[DONE]":
                continue
            meta = json.loads(line[5:])["meta_info"]
            now, got = time.perf_counter(), meta["completion_tokens"]
            if got > out.output_len:
                if out.output_len == 0:
                    out.ttft = now - start
                else:  # a chunk of n tokens counts as n gaps of equal length, as bench_serving
                    out.itls += [(now - last) / (got - out.output_len)] * (got - out.output_len)
                out.output_len, last = got, now
            out.stats = meta.get("rio_reasoning", out.stats)
    return out


async def _run(url, prompts, output_len, spec, concurrency, warmup) -> tuple[list[Timed], float]:
    import aiohttp

    gate = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as session:

        async def limited(ids, n):
            async with gate:
                return await _one(session, url, ids, n, spec)

        await asyncio.gather(*(limited(prompts[0], min(output_len, 32)) for _ in range(warmup)))
        start = time.perf_counter()
        timed = await asyncio.gather(*(limited(ids, output_len) for ids in prompts))
        return timed, time.perf_counter() - start


def warm_up(url: str, ids, specs: list[dict | None]) -> None:
    """One short request per spec, one after another: first-call costs (the reasoning runtime is
    built on the first latent batch) stay out of every timed run."""
    import aiohttp

    async def go():
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as session:
            for spec in specs:
                got = await _one(session, url, ids, 2, spec)
                if got.error or got.output_len != 2:
                    raise RuntimeError(f"warm-up request {spec} failed: {got.error}")

    asyncio.run(go())


def run_mode(url: str, prompts, output_len: int, mode: str, concurrency: int,
             warmup: int = 0) -> dict:
    """All `prompts` at most `concurrency` at a time, sent at once; one report row."""
    timed, seconds = asyncio.run(_run(url, prompts, output_len, MODE_SPECS[mode], concurrency,
                                      warmup))
    bad = [t.error or f"{t.output_len}/{output_len} tokens, stats {t.stats}" for t in timed
           if t.error or t.output_len != output_len or t.stats is None]
    if bad:
        raise RuntimeError(f"mode {mode}: {len(bad)} of {len(timed)} requests incomplete: "
                           f"{bad[:3]}")
    stats = {k: sum(int(t.stats[k]) for t in timed)
             for k in ("latent_steps", "explicit_steps", "switches")}
    if mode == "latent" and output_len > 1 and stats["latent_steps"] == 0:
        raise RuntimeError(f"mode latent took no latent step: {stats}")
    itls = [x for t in timed for x in t.itls]
    return {"completed": len(timed),
            "output_tok_s": sum(t.output_len for t in timed) / seconds,
            "ttft_p50_ms": float(np.median([t.ttft for t in timed])) * 1e3,
            "itl_p50_ms": float(np.percentile(itls, 50)) * 1e3 if itls else None,
            "itl_p99_ms": float(np.percentile(itls, 99)) * 1e3 if itls else None,
            "reasoning": stats}
