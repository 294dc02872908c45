"""Hardware targets: read `launch/targets/NAME.flags` into launch_server flags and environment.

Called by `rio-sglang serve --target NAME` (serve.py) and `rio-sglang memory` (launch/memory.py);
the tests parse the flags with SGLang's own ServerArgs parser. The flags files are part of the
source checkout (an editable install), not of the installed package.

A flags file holds one item per line; blank lines and `#` lines are ignored:
  --flag [VALUE]     a launch_server flag; VALUE is the rest of the line, unquoted (JSON welcome)
  @include NAME      the lines of NAME.flags first (long-context builds on h200x8)
  @env NAME=VALUE    an environment variable for the server processes
  @gpu KIND          the GPU the target runs on, for launch/memory.py (h200, h100)
  @model tiny        serve the generated tiny checkpoint instead of $RIO_MODEL_PATH
`${VAR}` in a value is replaced from the environment; an unset VAR is an error.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from rio_sglang.sglang_server import MODEL_PACKAGE, PARSER_FLAGS, flag_value

TARGETS_DIR = Path(__file__).resolve().parents[1] / "launch" / "targets"
GPU_ATTENTION = ("--attention-backend", "flashinfer")  # Hopper would default to fa3
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


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
        return flag_value(self.args, "--device") == "cpu"

    def flag(self, name: str) -> str | None:
        """The last value given for `name` (`--tp-size` ...), or None."""
        return flag_value(self.args, name)


def target_names() -> list[str]:
    return sorted(p.stem for p in TARGETS_DIR.glob("*.flags"))  # none outside a checkout


def read_target(name: str, environ: dict | None = None, _seen: tuple = ()) -> Target:
    """Parse `targets/NAME.flags` (and what it includes); `${VAR}` comes from `environ`."""
    environ = os.environ if environ is None else environ
    path = TARGETS_DIR / f"{name}.flags"
    if not TARGETS_DIR.is_dir():
        raise TargetError(f"no {TARGETS_DIR}: targets come with the source checkout "
                          "(pip install -e)")
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


def target_flags(target: Target) -> list[str]:
    """The target's launch_server flags, GPU targets' attention backend first."""
    gpu = not target.on_cpu and target.flag("--attention-backend") is None
    return [*(GPU_ATTENTION if gpu else ()), *target.args]


def server_args(target: Target, model_path, extra=()) -> list[str]:
    """The arguments after `python -m sglang.launch_server`; `extra` comes last and wins."""
    return ["--model-path", str(model_path), *PARSER_FLAGS, *target_flags(target), *extra]


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
        from rio_sglang.tiny import cached_tiny_checkpoint

        return str(cached_tiny_checkpoint())
    path = environ.get("RIO_MODEL_PATH")
    if not path:
        raise TargetError(f"target {target.name!r} serves $RIO_MODEL_PATH, which is not set "
                          "(a checkpoint folder or a Hugging Face id)")
    return path
