"""`rio-sglang serve`: check the reasoning default and the checkpoint once, start
`sglang.launch_server` (sglang_server.py), wait until it answers, report a failed start with its log's
tail. The one serve command: scripts/quickstart.sh and launch/recipe.sh go through it.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

from rio_sglang import env, sglang_server, targets
from rio_sglang.checkpoint import CheckpointError, verify_checkpoint

log = logging.getLogger("rio_sglang.serve")


class ServeError(ValueError):
    """Input that cannot be served, found before anything starts; the message names it."""


@dataclass(frozen=True)
class Plan:
    """A checked launch; `command()` is the argv and environment it starts."""

    model_path: str
    port: int
    cpu: bool  # --tiny / --model-path on this CPU: sglang_server's CPU flags and environment
    stock: bool  # --swireasoning: SGLang's own class serves (no SGLANG_EXTERNAL_MODEL_PACKAGE)
    flags: tuple[str, ...]  # a target's flags, then the arguments after `--` (last: they win)
    environ: dict
    timeout: float
    http: bool = True  # this node answers HTTP (not a later node of a multi-node target)

    def command(self) -> tuple[list, dict]:
        return sglang_server.server_command(self.model_path, port=self.port, cpu=self.cpu,
                                       extra_args=self.flags, environ=self.environ,
                                       stock=self.stock)


def parser(prog: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__, usage=(
        "%(prog)s (--tiny | --model-path DIR | --target NAME) [options] "
        "[-- sglang.launch_server args, last: they win]"))
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--tiny", action="store_true", help="a generated tiny checkpoint, on this CPU")
    src.add_argument("--model-path", metavar="DIR",
                     help="a checkpoint folder (verified first) or a Hugging Face id")
    src.add_argument("--target", metavar="NAME",
                     help="launch/targets/NAME.flags, serving $RIO_MODEL_PATH: "
                          + ", ".join(targets.target_names()))
    ap.add_argument("--preset", help="with --tiny: the tiny preset (default tiny)")
    ap.add_argument("--seed", type=int, help="with --tiny: its seed (default 0)")
    ap.add_argument("--port", type=int, default=30000)
    ap.add_argument("--gpu", action="store_true", help="with --tiny / --model-path: no CPU flags")
    ap.add_argument("--timeout", type=float,
                    help="seconds to wait for readiness (default $RIO_SERVER_START_TIMEOUT, 600)")
    ap.add_argument("--reasoning-default", metavar="JSON",
                    help="reasoning spec of requests without custom_params.rio_reasoning, "
                         f"e.g. '{{\"mode\": \"switch\"}}' (default ${env.REASONING_DEFAULT})")
    ap.add_argument("--resume-memory-mib", type=float, metavar="MIB",
                    help="host memory per rank for latent requests' soft inputs, so that one "
                         "SGLang retracts resumes exactly; past it, from tokens (default "
                         f"${env.RESUME_MEMORY}, {env.RESUME_MEMORY_DEFAULT_MIB})")
    ap.add_argument("--swireasoning", action="store_true",
                    help="SGLang's own model class serves (no SGLANG_EXTERNAL_MODEL_PACKAGE), "
                         f"with {env.SWIREASONING}=1: the any-model switch of issue 29")
    return ap


def plan(argv: list[str], prog: str = "rio-sglang serve") -> Plan:
    """Parse and check `serve`'s arguments; ServeError before anything starts. The tiny
    checkpoint is generated only once the default reasoning spec has passed."""
    ours, passthrough = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv \
        else (argv, [])
    ap = parser(prog)
    args = ap.parse_args(ours)
    if not args.tiny and (args.preset is not None or args.seed is not None):
        ap.error("--preset and --seed apply to --tiny")
    if args.target and args.gpu:
        ap.error("--gpu applies to --tiny and --model-path (a target's flags choose the device)")
    try:
        target = targets.read_target(args.target) if args.target else None
    except targets.TargetError as e:
        raise ServeError(str(e)) from None
    flags = [*(targets.target_flags(target) if target else ()), *passthrough]
    environ = {**os.environ, **(target.env if target else {})}
    port = sglang_server.flag_value(flags, "--port", str(args.port))
    if not port.isdigit():
        raise ServeError(f"--port {port!r}: not a port number")

    # 1. the default spec (a target's @env line, then the environment; SGLang's processes
    # inherit it and read it there)
    source = "--reasoning-default" if args.reasoning_default is not None else env.REASONING_DEFAULT
    text = args.reasoning_default if args.reasoning_default is not None else \
        (target and target.env.get(env.REASONING_DEFAULT)) or env.reasoning_default()
    if text:
        from rio_sglang.runtime.defaults import DefaultSpecError, check_default  # imports torch

        try:
            log.info("reasoning default: %s", check_default(text, flags, source).to_json())
        except DefaultSpecError as e:
            raise ServeError(str(e)) from None
    environ[env.REASONING_DEFAULT] = text or ""
    # 2. the any-model switch
    try:
        stock = args.swireasoning or env.swireasoning()
    except ValueError as e:
        raise ServeError(str(e)) from None
    if stock:
        environ[env.SWIREASONING] = "1"
    # 3. the memory that keeps retracted latent requests exact (checked here, read there)
    if args.resume_memory_mib is not None:
        environ[env.RESUME_MEMORY] = str(args.resume_memory_mib)
    try:
        env.resume_memory_bytes_of(environ.get(env.RESUME_MEMORY))
    except ValueError as e:
        raise ServeError(f"--resume-memory-mib: {e}" if args.resume_memory_mib is not None
                         else str(e)) from None
    # 4. the checkpoint, last: --tiny generates one on first use
    try:
        path = _checkpoint(args, target)
    except (targets.TargetError, CheckpointError) as e:
        raise ServeError(str(e)) from None
    timeout = env.server_start_timeout() if args.timeout is None else args.timeout
    return Plan(path, int(port), cpu=target is None and not args.gpu, stock=stock,
                flags=tuple(flags), environ=environ, timeout=timeout,
                http=sglang_server.flag_value(flags, "--node-rank", "0") == "0")


def _checkpoint(args, target) -> str:
    """The checkpoint to serve; a local folder is verified shard by shard, a Hugging Face id goes
    to SGLang unverified."""
    if args.tiny:
        from rio_sglang.tiny import PRESETS, cached_tiny_checkpoint  # imports torch

        preset = args.preset or "tiny"
        servable = sorted(n for n, p in PRESETS.items() if not p.config_only)
        if preset not in servable:
            raise ServeError(f"--preset {preset!r}: --tiny serves one of {', '.join(servable)}")
        path = str(cached_tiny_checkpoint(preset, args.seed or 0))
    else:
        path = targets.model_path(target) if target else args.model_path
    if Path(path).expanduser().is_dir() or path.startswith(("/", ".", "~")):
        path = str(Path(path).expanduser())
        log.info("checkpoint ok: %s", verify_checkpoint(path).describe())
    else:
        log.warning("%s is not a local folder: SGLang fetches it, unverified", path)
    return path


def run(p: Plan) -> int:
    """Start SGLang, wait until it answers, then serve until it exits or we are stopped."""
    # SIGTERM (a supervisor, a shell trap) must still stop the server's process group.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    argv, environ = p.command()
    server = sglang_server.start(argv, environ, p.port, expect_mark=not p.stock)
    log.info("starting SGLang (log: %s)", server.log_path)
    try:
        if p.http:
            server.wait_ready(p.timeout)
            log.info("ready: %s", server.url)
        else:
            log.info("not the first node: no HTTP here; serving until SGLang exits")
        code = server.proc.wait()
        if code:
            log.error("SGLang exited with code %d; log %s:\n%s", code, server.log_path,
                      server.log_tail())
        return code
    except sglang_server.ServerStartError as e:
        log.error("%s", e)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        server.stop()


def main(argv: list[str] | None = None, prog: str = "rio-sglang serve") -> int:
    logging.basicConfig(level=logging.INFO, format="[rio-sglang] %(message)s")
    try:
        p = plan(list(sys.argv[1:] if argv is None else argv), prog)
    except ServeError as e:
        log.error("cannot serve: %s", e)
        return 2
    return run(p)
