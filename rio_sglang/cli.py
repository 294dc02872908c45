"""The `rio-sglang` command (pyproject's [project.scripts]): one subcommand per job, each the
`main` that the job's `python -m` form runs. Only the chosen job is imported: `rio-sglang ask`
loads no torch and no SGLang.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

# subcommand: (the module whose main(argv, prog) runs it, what it does)
COMMANDS = {
    "serve": ("rio_sglang.serve", "serve --tiny, --model-path DIR or --target NAME on SGLang"),
    "ask": ("rio_sglang.client", "ask a running server one chat question with a reasoning mode"),
    "tiny": ("rio_sglang.tiny.__main__", "write a tiny checkpoint of the real architecture"),
    "memory": ("launch.memory", "per-GPU memory of a launch target (weights, KV cache, state)"),
    "provenance": ("rio_sglang.provenance.__main__",
                   "check a checkpoint's lineage: blend against parents, identity of a server"),
}
LAUNCH_DIR = Path(__file__).resolve().parents[1] / "launch"


def usage() -> str:
    rows = "\n".join(f"  {name:<11} {what}" for name, (_, what) in COMMANDS.items())
    return f"usage: rio-sglang COMMAND [ARGS] (rio-sglang COMMAND --help)\n\ncommands:\n{rows}"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["-h"], ["--help"]):
        print(usage())
        return 0
    if not argv or argv[0] not in COMMANDS:
        unknown = f"\nrio-sglang: unknown command {argv[0]!r}" if argv else ""
        print(usage() + unknown, file=sys.stderr)
        return 2
    name, rest = argv[0], argv[1:]
    return _job(COMMANDS[name][0]).main(rest, prog=f"rio-sglang {name}") or 0


def _job(module: str):
    """Import a job's module; `launch.*` from the source checkout: launch/ is not installed, and
    the checkout's root must not go on sys.path (its kernels/ and frontend/ folders would
    shadow real packages of those names)."""
    if module.startswith("launch.") and "launch" not in sys.modules:
        init = LAUNCH_DIR / "__init__.py"
        if not init.is_file():
            raise SystemExit(f"rio-sglang: {module} comes with the source checkout "
                             f"(pip install -e): no {LAUNCH_DIR}")
        spec = importlib.util.spec_from_file_location("launch", init,
                                                      submodule_search_locations=[str(LAUNCH_DIR)])
        package = importlib.util.module_from_spec(spec)
        sys.modules["launch"] = package
        spec.loader.exec_module(package)
    return importlib.import_module(module)


if __name__ == "__main__":
    sys.exit(main())
