"""`python -m rio_sglang.quickstart --tiny [--port N]`: the command-line entry of the launcher
(`launcher.py`): generate a tiny checkpoint if needed and serve it.

Or `--model-path DIR` for an existing checkpoint. Arguments after `--` go to sglang.launch_server.
`--reasoning-default JSON` (or RIO_REASONING_DEFAULT) is the spec of requests that send none.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

from rio_sglang import env
from rio_sglang.checkpoint import CheckpointError, verify_checkpoint
from rio_sglang.launcher import ServerStartError, launch

log = logging.getLogger("rio_sglang.quickstart")


def tiny_checkpoint(preset: str = "tiny", seed: int = 0):
    """The cached tiny checkpoint for (preset, seed), generated on first use."""
    import json

    from rio_sglang.tiny import write_tiny_checkpoint
    from rio_sglang.tiny.writer import GENERATOR_VERSION

    path = env.cache_dir() / "checkpoints" / f"{preset}-seed{seed}"
    config = path / "config.json"
    made_by = json.loads(config.read_text()).get("rio_tiny", {}) if config.exists() else {}
    if made_by.get("generator") != GENERATOR_VERSION:
        log.info("generating %s checkpoint (seed %d) in %s", preset, seed, path)
        write_tiny_checkpoint(path, preset, seed)
    return path


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    passthrough = argv[argv.index("--") + 1:] if "--" in argv else []
    ours = argv[: argv.index("--")] if "--" in argv else argv
    ap = argparse.ArgumentParser(prog="python -m rio_sglang.quickstart", description=__doc__)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--tiny", action="store_true", help="serve a generated tiny checkpoint")
    src.add_argument("--model-path", help="serve this checkpoint folder")
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--port", type=int, default=30000)
    ap.add_argument("--gpu", action="store_true", help="do not add the CPU flags")
    ap.add_argument("--timeout", type=float, default=env.server_start_timeout())
    ap.add_argument("--reasoning-default", metavar="JSON", default=env.reasoning_default(),
                    help="reasoning spec of requests without custom_params.rio_reasoning, "
                         f"e.g. '{{\"mode\": \"switch\"}}' (default: ${env.REASONING_DEFAULT})")
    args = ap.parse_args(ours)
    logging.basicConfig(level=logging.INFO, format="[rio-sglang] %(message)s")

    if args.reasoning_default:  # (imports torch: only then)
        from rio_sglang.runtime.defaults import DefaultSpecError, check_default

        flag = any(a.startswith("--reasoning-default") for a in ours)
        try:
            default = check_default(args.reasoning_default, passthrough,
                                    "--reasoning-default" if flag else env.REASONING_DEFAULT)
        except DefaultSpecError as e:
            log.error("cannot serve: %s", e)
            return 2
        log.info("reasoning default: %s", default.to_json())
    # SGLang's processes inherit the launcher's environment: each reads the default there.
    environ = {**os.environ, env.REASONING_DEFAULT: args.reasoning_default or ""}
    try:
        path = tiny_checkpoint(args.preset, args.seed) if args.tiny else args.model_path
        log.info("checkpoint ok: %s", verify_checkpoint(path).describe())
    except CheckpointError as e:
        log.error("cannot serve: %s", e)
        return 2
    # SIGTERM (a supervisor, a shell trap) must still stop the server's process group.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    server = launch(path, port=args.port, cpu=not args.gpu, extra_args=passthrough,
                    environ=environ)
    log.info("starting SGLang (log: %s)", server.log_path)
    try:
        server.wait_ready(args.timeout)
        log.info("ready: %s", server.url)
        return server.proc.wait()
    except ServerStartError as e:
        log.error("%s", e)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
