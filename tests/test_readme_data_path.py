"""Every `file::name` hop the README's data path cites exists: the file (from the repository
root, under rio_sglang/, or a basename unique in the repository) defines that name (a function,
class, `Class.method` or module-level assignment)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HOP = re.compile(r"`([\w/.]+\.py)::([\w.]+)`")


def data_path_hops() -> list[tuple[str, str]]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Data path", 1)[1].split("\n## ", 1)[0]
    return HOP.findall(" ".join(section.split()))


def resolve_file(cited: str) -> Path | None:
    cited = re.sub(r"^rio_kernels/", "kernels/", cited)
    for path in (ROOT / cited, ROOT / "rio_sglang" / cited):
        if path.is_file():
            return path
    found = [p for p in ROOT.rglob(Path(cited).name) if ".git" not in p.parts
             and p.as_posix().endswith("/" + cited)]
    return found[0] if len(found) == 1 else None


def defines(path: Path, dotted: str) -> bool:
    scope = ast.parse(path.read_text()).body
    for part in dotted.split("."):
        nodes = [n for n in scope if getattr(n, "name", None) == part
                 or any(getattr(t, "id", None) == part for t in getattr(n, "targets", []))]
        if not nodes:
            return False
        scope = getattr(nodes[0], "body", [])
    return True


def cited_name_exists(cited_file: str, name: str) -> bool:
    path = resolve_file(cited_file)
    return path is not None and defines(path, name)


HOPS = data_path_hops()


def test_the_data_path_cites_hops():
    assert len(HOPS) >= 20


@pytest.mark.parametrize("cited_file,name", HOPS, ids=["::".join(h) for h in HOPS])
def test_each_hop_exists(cited_file, name):
    assert cited_name_exists(cited_file, name), f"{cited_file}::{name}"


# made-up hops the check must reject: file, name
MADE_UP = [
    ("models/qwen3_5_moe.py", "forward"),
    ("sampler.py", "end"),
    ("runtime/hooks.py", "_patch_radix_cache"),
    ("rio_sglang/nowhere.py", "launch"),
    ("sampler.py", "ReasoningRuntime.no_such_method"),
]


@pytest.mark.parametrize("cited_file,name", MADE_UP, ids=["::".join(h) for h in MADE_UP])
def test_a_made_up_hop_fails(cited_file, name):
    assert not cited_name_exists(cited_file, name)
