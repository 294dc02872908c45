"""Turn a hardware target (`launch/targets/NAME.flags`) into a `sglang.launch_server` command.

Called by `launch/recipe.sh TARGET [extra args]`, which execs the server; the tests build the
same command and parse it with SGLang's own ServerArgs parser.

A flags file holds one item per line; blank lines and `#` lines are ignored:
  --flag [VALUE]     a launch_server flag; VALUE is the rest of the line, unquoted (JSON welcome)
  @include NAME      the lines of NAME.flags first (long-context builds on h200x8)
  @env NAME=VALUE    an environment variable for the server processes
  @gpu KIND          the GPU the target runs on, for launch/memory.py (h200, h100)
  @model tiny        serve the generated tiny checkpoint instead of $RIO_MODEL_PATH
`${VAR}` in a value is replaced from the environment; an unset VAR is an error.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from rio_sglang import env as rio_env
from rio_sglang.launcher import MODEL_PACKAGE, PARSER_FLAGS

TARGETS_DIR = Path(__file__).resolve().parent / "targets"
GPU_ATTENTION = ("--attention-backend", "flashinfer")  # Hopper would default to fa3
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")

log = logging.getLogger("launch.recipe")


class TargetError(ValueError):
    """A flags file that cannot be used; the message names the file and line."""


@dataclass(frozen=True)
class Target:
    name: str
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    gpu: str | None = None
    tiny: bool = False

    @property
    def on_cpu(self) -> bool:
        return _flag_value(self.args, "--device") == "cpu"

    def flag(self, name: str) -> str | None:
        """The last value given for `name` (`--tp-size` ...), or None."""
        return _flag_value(self.args, name)


def target_names() -> list[str]:
    return sorted(p.stem for p in TARGETS_DIR.glob("*.flags"))


def read_target(name: str, environ: dict | None = None, _seen: tuple = ()) -> Target:
    """Parse `targets/NAME.flags` (and what it includes); `${VAR}` comes from `environ`."""
    environ = os.environ if environ is None else environ
    path = TARGETS_DIR / f"{name}.flags"
    if not path.is_file():
        raise TargetError(f"unknown target {name!r}; known: {', '.join(target_names())}")
    if name in _seen:
        raise TargetError(f"{path}: @include cycle through {' -> '.join(_seen + (name,))}")
    args: list[str] = []
    env: dict[str, str] = {}
    gpu, tiny = None, False
    for lineno, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{path.name}:{lineno}"
        head, _, rest = line.partition(" ")
        rest = _expand(rest.strip(), environ, where)
        if head == "@include":
            base = read_target(rest, environ, _seen + (name,))
            args += base.args
            env.update(base.env)
            gpu, tiny = base.gpu or gpu, base.tiny or tiny
        elif head == "@env":
            key, eq, value = rest.partition("=")
            if not eq or not key:
                raise TargetError(f"{where}: expected '@env NAME=VALUE', got {line!r}")
            env[key] = value
        elif head == "@gpu":
            gpu = rest
        elif head == "@model":
            if rest != "tiny":
                raise TargetError(f"{where}: '@model' takes only 'tiny', got {rest!r}")
            tiny = True
        elif head.startswith("--"):
            args += [head, rest] if rest else [head]
        else:
            raise TargetError(f"{where}: a line is a --flag, a comment or an @directive: {line!r}")
    return Target(name, tuple(args), env, gpu, tiny)


def _expand(text: str, environ, where: str) -> str:
    def value(m: re.Match) -> str:
        if m.group(1) not in environ:
            raise TargetError(f"{where}: ${{{m.group(1)}}} is not set in the environment")
        return environ[m.group(1)]

    return _VAR.sub(value, text)


def _flag_value(args, name: str) -> str | None:
    found = None
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            found = args[i + 1]
        elif arg.startswith(name + "="):
            found = arg.split("=", 1)[1]
    return found


def server_args(target: Target, model_path, extra=()) -> list[str]:
    """The arguments after `python -m sglang.launch_server`; `extra` comes last and wins."""
    args = ["--model-path", str(model_path), *PARSER_FLAGS]
    if not target.on_cpu and target.flag("--attention-backend") is None:
        args += GPU_ATTENTION
    return args + list(target.args) + list(extra)


def server_env(target: Target, base: dict | None = None) -> dict:
    """The server's environment: `base`, the target's @env lines, and our model package."""
    env = dict(os.environ if base is None else base)
    env.update(target.env)
    env["SGLANG_EXTERNAL_MODEL_PACKAGE"] = MODEL_PACKAGE
    return env


def model_path(target: Target, environ=None) -> str:
    """RIO_MODEL_PATH, or the cached tiny checkpoint for `@model tiny` targets."""
    environ = os.environ if environ is None else environ
    if target.tiny:
        from rio_sglang.quickstart import tiny_checkpoint

        return str(tiny_checkpoint())
    path = environ.get("RIO_MODEL_PATH")
    if not path:
        raise TargetError(f"target {target.name!r} serves $RIO_MODEL_PATH, which is not set "
                          "(a checkpoint folder or a Hugging Face id)")
    return path


def default_ok(environ: dict, args) -> bool:
    """Checks the default reasoning spec (from the environment or an `@env` line; every SGLang
    process reads it there) before SGLang starts; logs why not."""
    text = environ.get(rio_env.REASONING_DEFAULT)
    if not text:
        return True
    from rio_sglang.runtime.defaults import DefaultSpecError, check_default  # imports torch

    try:
        log.info("reasoning default: %s", check_default(text, args).to_json())
    except DefaultSpecError as e:
        log.error("cannot serve: %s", e)
        return False
    return True


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="[rio-sglang] %(message)s")
    if not argv or argv[0] in ("-h", "--help"):
        log.info("usage: launch/recipe.sh TARGET [sglang.launch_server args]; targets: %s",
                 ", ".join(target_names()))
        return 0 if argv else 2
    try:
        target = read_target(argv[0])
        environ = server_env(target)
        if not default_ok(environ, [*target.args, *argv[1:]]):
            return 2
        path = model_path(target)
    except TargetError as e:
        log.error("%s", e)
        return 2
    if Path(path).is_dir():
        from rio_sglang.checkpoint import CheckpointError, verify_checkpoint

        try:
            log.info("checkpoint ok: %s", verify_checkpoint(path).describe())
        except CheckpointError as e:
            log.error("cannot serve: %s", e)
            return 2
    elif path.startswith(("/", ".", "~")):
        log.error("cannot serve: no checkpoint folder at %s", path)
        return 2
    else:
        log.warning("%s is not a local folder: SGLang fetches it, unverified", path)
    cmd = [sys.executable, "-m", "sglang.launch_server", *server_args(target, path, argv[1:])]
    log.info("target %s: %s", target.name, " ".join(cmd[1:]))
    # exec, not a child: signals from a supervisor reach SGLang directly.
    os.execve(sys.executable, cmd, environ)
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(main())
