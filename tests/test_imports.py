"""Importing our packages initialises no CUDA and imports no `sglang.srt` (SGLang forks later);
what bench/gpu_check.sh runs on the device machines imports and collects without SGLang."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

MODULES = ["rio_sglang", "rio_kernels", "rio_frontend", "rio_sglang.tiny", "rio_sglang.env",
           "rio_sglang.checkpoint", "rio_sglang.sglang_server", "rio_sglang.serve",
           "rio_sglang.targets", "rio_sglang.logmarks", "rio_sglang.cpu", "rio_sglang.reasoning",
           "rio_kernels.fused_moe"]

PROBE = """
import sys, importlib
importlib.import_module({mod!r})
srt = sorted(m for m in sys.modules if m == "sglang.srt" or m.startswith("sglang.srt."))
torch = sys.modules.get("torch")
cuda = bool(torch is not None and torch.cuda.is_initialized())
bare = "kernels" in sys.modules or "frontend" in sys.modules
print(len(srt), cuda, bare)
"""


@pytest.mark.parametrize("mod", MODULES)
def test_import_is_clean(mod):
    out = subprocess.run([sys.executable, "-c", PROBE.format(mod=mod)], check=True,
                         capture_output=True, text=True).stdout.split()
    assert out == ["0", "False", "False"], f"{mod}: sglang.srt modules, CUDA init, bare name"


# A client (an agent script, an SGLang frontend program, the openai helpers) builds a JSON spec
# and sends HTTP: `import rio_frontend` loads none of the heavy stack (before: torch and
# rio_kernels, ~1.9 s; now ~0.06 s here), nor does the spec dataclass alone.
HEAVY = ("torch", "rio_kernels", "triton", "sglang.srt", "numpy")
LIGHT = ["rio_frontend", "rio_sglang.reasoning", "rio_sglang.reasoning.spec", "rio_sglang.cli",
         "rio_sglang.client"]
LIGHT_PROBE = """
import sys, importlib
importlib.import_module({mod!r})
print(sorted(h for h in {heavy!r} if h in sys.modules))
"""


@pytest.mark.parametrize("mod", LIGHT)
def test_a_client_import_loads_no_heavy_stack(mod):
    out = subprocess.run([sys.executable, "-c", LIGHT_PROBE.format(mod=mod, heavy=HEAVY)],
                         check=True, capture_output=True, text=True).stdout.strip()
    assert out == "[]", f"import {mod} loaded {out}"


# The `rio-sglang` command imports only the job it runs: asking a server, or reading how to
# serve, loads none of the heavy stack either.
COMMAND_PROBE = """
import sys
from rio_sglang.cli import main
try:
    main({argv!r})
except SystemExit as e:
    assert e.code == 0, e.code
print(sorted(h for h in {heavy!r} if h in sys.modules))
"""


@pytest.mark.parametrize("argv", [["ask", "--help"], ["serve", "--help"]], ids=" ".join)
def test_a_light_command_loads_no_heavy_stack(argv):
    out = subprocess.run([sys.executable, "-c", COMMAND_PROBE.format(argv=argv, heavy=HEAVY)],
                         check=True, capture_output=True, text=True).stdout.splitlines()
    assert out[-1] == "[]", f"rio-sglang {' '.join(argv)} loaded {out[-1]}"


def test_the_lazy_reasoning_names_resolve():
    from rio_sglang import reasoning
    from rio_sglang.reasoning import reference, spec, state, tokens

    assert sorted(reasoning.__all__) == sorted(reasoning._NAMES)
    owners = {"reference": reference, "spec": spec, "state": state, "tokens": tokens}
    for name in reasoning.__all__:
        assert getattr(reasoning, name) is getattr(owners[reasoning._NAMES[name]], name)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        reasoning.nope  # noqa: B018


# What bench/gpu_check.sh runs on the device machines: torch and triton, but no SGLang (nor
# FlashInfer or sgl-kernel), which cannot be installed there. The modules it runs with `-m` and
# the test paths it hands pytest are read from the scripts, so a module or test added to them
# is held to the same rule.
ROOT = Path(__file__).resolve().parents[1]
GPU_SCRIPTS = [ROOT / "bench" / "gpu_check.sh", *sorted(ROOT.glob("kernels/*/gpu_check.sh"))]
NO_SGLANG = ("import sys\n"
             "for name in ('sglang', 'flashinfer', 'sgl_kernel'): sys.modules[name] = None\n")


def _gpu_check_targets() -> tuple[list[str], list[str]]:
    text = "\n".join(p.read_text() for p in GPU_SCRIPTS)
    modules = sorted(set(re.findall(r"-m ((?:bench|rio_kernels)\.[\w.]+)", text)))
    paths = sorted(set(re.findall(r"(?<![\w/])((?:tests/test_\w+\.py)|(?:kernels/\w+))(?=[\s\\])",
                                  text)))
    return modules, paths


def test_the_gpu_check_runs_without_sglang():
    modules, paths = _gpu_check_targets()
    assert {"rio_kernels.swir_step.bench_swir_step", "bench.verdicts",
            "rio_kernels.fused_moe.bench_fused_moe"} <= set(modules)
    assert {"kernels/swir_step", "kernels/fused_moe"} <= set(paths)
    lazy = ["rio_kernels.swir_step.tune"]  # bench_swir_step --sweep / --parts imports it in main
    probe = NO_SGLANG + "import importlib\n" + "".join(
        f"importlib.import_module({m!r})\n" for m in modules + lazy)
    run = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True,
                         check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    # the gpu tests as the scripts run them (--noconftest: only the test modules' own imports)
    collect = NO_SGLANG + ("import pytest\nsys.exit(pytest.main(['--collect-only', '-q', "
                           "'--noconftest', '-p', 'no:cacheprovider', '-m', 'gpu', "
                           "*sys.argv[1:]]))")
    run = subprocess.run([sys.executable, "-c", collect, *paths], cwd=ROOT, capture_output=True,
                         text=True, check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    selected = re.search(r"(\d+)/\d+ tests collected", run.stdout)
    assert selected and int(selected.group(1)) > 0, run.stdout[-3000:]
