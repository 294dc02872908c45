"""CLI: `rio-sglang provenance blend CHILD PARENT_A [PARENT_B] [--out DIR]` and
`rio-sglang provenance identity URL --names NAME ... [-n N]` (or `python -m rio_sglang.provenance`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _blend(args) -> None:
    from rio_sglang.checkpoint import CheckpointError

    from .blend import compare
    from .plot import plot_groups
    from .report import markdown, summarize, write_json

    try:
        cmp = compare(args.child, args.parents, args.sample_rows, args.seed, args.block_elems,
                      progress=not args.no_progress)
    except CheckpointError as e:
        raise SystemExit(f"error: {e}") from None
    summary = summarize(cmp, args.alpha_tol, args.max_residual, args.min_share)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    skipped = ("PNG not drawn (--no-plot)" if args.no_plot
               else plot_groups(summary, out / "blend.png"))
    summary["plot"] = skipped or str(out / "blend.png")
    write_json(summary, out / "blend.json")
    (out / "blend.md").write_text(markdown(summary))
    if skipped:
        print(skipped, file=sys.stderr)
    print(summary["verdict"])
    print(f"report: {out / 'blend.md'}, {out / 'blend.json'}"
          + ("" if skipped else f", {out / 'blend.png'}"))


def _identity(args) -> None:
    from .identity import QUESTIONS, IdentityError, ask_identity, identity_markdown

    try:
        summary = ask_identity(args.url, args.names, args.n, args.temperature, args.seed,
                               args.max_tokens, args.model, tuple(args.question or QUESTIONS),
                               args.include_reasoning, progress=not args.no_progress)
    except IdentityError as e:
        raise SystemExit(f"error: {e}") from None
    table = identity_markdown(summary)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "identity.json").write_text(json.dumps(summary, indent=1) + "\n")
        (out / "identity.md").write_text(table)
    print(table, end="")


def main(argv=None, prog: str = "python -m rio_sglang.provenance") -> None:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    b = sub.add_parser("blend", help="fit CHILD ~ alpha*A + (1-alpha)*B per tensor (or compare "
                       "CHILD with one parent)")
    b.add_argument("child")
    b.add_argument("parents", nargs="+", metavar="PARENT", help="one or two parent checkpoints")
    b.add_argument("--out", default="provenance-report", help="folder for blend.{json,md,png}")
    b.add_argument("--no-plot", action="store_true",
                   help="skip the PNG (bench/provenance_memory.py: matplotlib's own memory is "
                   "not what it measures)")
    b.add_argument("--sample-rows", type=int, default=None,
                   help="fit each tensor on this many seeded rows (last-dim vectors), not all")
    b.add_argument("--seed", type=int, default=0, help="seed of --sample-rows")
    b.add_argument("--block-elems", type=int, default=1 << 20,
                   help="elements per read block and checkpoint (bounds memory: ~50 B each)")
    b.add_argument("--alpha-tol", type=float, default=0.005,
                   help="a tensor agrees if |alpha - global alpha| <= this")
    b.add_argument("--max-residual", type=float, default=0.05,
                   help="... and its residual <= this fraction of ||A-B|| (one parent: the "
                   "largest relative distance still called close)")
    b.add_argument("--min-share", type=float, default=0.9,
                   help="share of agreeing tensors for the verdict BLEND (CLOSE)")
    b.add_argument("--no-progress", action="store_true")
    b.set_defaults(run=_blend)
    i = sub.add_parser("identity", help="ask a running OpenAI-compatible server who it is")
    i.add_argument("url", help="server base URL, e.g. http://127.0.0.1:30000")
    i.add_argument("--names", nargs="+", required=True, help="names to count in the answers")
    i.add_argument("-n", type=int, default=20, help="answers to collect (questions in turn)")
    i.add_argument("--temperature", type=float, default=0.7)
    i.add_argument("--seed", type=int, default=0, help="seed of the first answer (+1 each)")
    i.add_argument("--max-tokens", type=int, default=256)
    i.add_argument("--model", default=None, help="model id (default: the first of /v1/models)")
    i.add_argument("--question", action="append", help="replace the built-in questions")
    i.add_argument("--include-reasoning", action="store_true",
                   help="also count names in reasoning_content")
    i.add_argument("--out", default=None, help="also write identity.{json,md} here")
    i.add_argument("--no-progress", action="store_true")
    i.set_defaults(run=_identity)
    args = ap.parse_args(argv)
    if args.command == "blend" and len(args.parents) > 2:
        ap.error("blend takes one or two parents")
    if args.command == "identity" and args.n < 1:
        ap.error("-n must be at least 1")
    args.run(args)


if __name__ == "__main__":
    main()
