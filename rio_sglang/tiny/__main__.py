"""CLI: `rio-sglang tiny OUT_DIR [--preset NAME] [--seed N] [--expert-layout L]
[--mtp] [--fp8 block|channel [--fp8-linears]] [--config-only]` (the rio-slice presets, and
their -fp8 twins, are always config-only: serve them with `--load-format dummy`), or
`python -m rio_sglang.tiny OUT_DIR --family NAME [--seed N] [--no-think-tags]` (families.py)."""

import argparse
import logging

from . import EXPERT_LAYOUTS, PRESETS, write_tiny_checkpoint
from .families import FAMILIES, write_family_checkpoint
from .fp8 import FP8_KINDS
from .writer import write_config_only


def main(argv=None, prog: str = "python -m rio_sglang.tiny") -> None:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__)
    ap.add_argument("out_dir")
    ap.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--expert-layout", default="per-expert", choices=EXPERT_LAYOUTS)
    ap.add_argument("--mtp", action="store_true",
                    help="add a random multi-token-prediction head (mtp.*) for NEXTN")
    ap.add_argument("--fp8", choices=FP8_KINDS, default=None,
                    help="FP8 experts: Qwen's block scales or compressed-tensors channel scales")
    ap.add_argument("--fp8-linears", action="store_true",
                    help="with --fp8: attention, GDN and shared-expert projections in FP8 too "
                         "(SGLang's FP8 linear methods: a GPU)")
    ap.add_argument("--config-only", action="store_true",
                    help="config, tokenizer and processor without weights")
    ap.add_argument("--family", choices=sorted(FAMILIES), default=None,
                    help="a paper family in transformers' own class instead of a Rio preset")
    ap.add_argument("--no-think-tags", action="store_true",
                    help="with --family: a vocabulary without <think> / </think>")
    args = ap.parse_args(argv)
    if args.no_think_tags and args.family is None:
        ap.error("--no-think-tags goes with --family")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.family is not None:
        write_family_checkpoint(args.out_dir, args.family, args.seed,
                                think_tags=not args.no_think_tags)
    elif args.config_only or PRESETS[args.preset].config_only:
        write_config_only(args.out_dir, args.preset)
    else:
        write_tiny_checkpoint(args.out_dir, args.preset, args.seed, args.expert_layout,
                              mtp=args.mtp, fp8=args.fp8, fp8_linears=args.fp8_linears)


if __name__ == "__main__":
    main()
