"""CLI: `python -m rio_sglang.tiny OUT_DIR [--preset NAME] [--seed N] [--expert-layout L]`."""

import argparse
import logging

from . import EXPERT_LAYOUTS, PRESETS, write_tiny_checkpoint


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m rio_sglang.tiny", description=__doc__)
    ap.add_argument("out_dir")
    ap.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--expert-layout", default="per-expert", choices=EXPERT_LAYOUTS)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    write_tiny_checkpoint(args.out_dir, args.preset, args.seed, args.expert_layout)


if __name__ == "__main__":
    main()
