"""The `rio-sglang` command: declared and resolvable, every subcommand answers --help, `serve`
refuses bad input before it starts anything, and the argv / environment it would launch with
(no server starts here: tests/test_launch.py serves through it for real)."""

from __future__ import annotations

from importlib.metadata import EntryPoint
from pathlib import Path

import pytest
import tomllib

from rio_sglang import cli, env, serve, sglang_server
from rio_sglang.targets import read_target, server_args

ROOT = Path(__file__).resolve().parents[1]
HF_ID = "Qwen/Qwen3.5-397B-A17B"  # not a local folder: goes to SGLang unverified, nothing read


def test_the_console_script_is_declared_and_resolves():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    entry = EntryPoint("rio-sglang", scripts["rio-sglang"], "console_scripts")
    assert entry.load() is cli.main


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_every_subcommand_answers_help(name, capsys):
    with pytest.raises(SystemExit) as done:
        cli.main([name, "--help"])
    assert done.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: rio-sglang {name}")


def test_the_command_lists_its_subcommands_and_refuses_others(capsys):
    assert cli.main(["--help"]) == 0
    listed = capsys.readouterr().out
    assert all(f"  {name} " in listed for name in cli.COMMANDS)
    assert cli.main(["srve"]) == 2 and "unknown command 'srve'" in capsys.readouterr().err
    assert cli.main([]) == 2


def test_memory_runs_from_the_command(capsys):
    assert cli.main(["memory", "--target", "h200x8"]) == 0
    assert capsys.readouterr().out.startswith("target h200x8: 8 x h200")


# serve's arguments, what it must say; each stops before anything starts or is written
REFUSED = [
    (["--tiny", "--reasoning-default", '{"mode": "switch", "window": 0}'], {},
     "cannot serve: --reasoning-default.window: must lie in"),
    (["--target", "h200x8", "--reasoning-default", '{"mode": "switch"}', "--",
      "--speculative-algorithm", "NEXTN"], {"RIO_MODEL_PATH": HF_ID},
     "'switch' reasoning cannot run under --speculative-algorithm"),
    (["--model-path", "/nowhere/rio"], {}, "cannot serve: model path /nowhere/rio does not exist"),
    (["--target", "h9000"], {}, "cannot serve: unknown target 'h9000'; known: cpu-tiny,"),
    (["--target", "h200x8"], {}, "serves $RIO_MODEL_PATH, which is not set"),
    (["--target", "h100x16-2node"], {"RIO_MODEL_PATH": HF_ID}, "${NODE_RANK} is not set"),
    (["--tiny", "--preset", "rio-slice-4"], {}, "--preset 'rio-slice-4': --tiny serves one of"),
    (["--tiny", "--", "--port", "30OOO"], {}, "--port '30OOO': not a port number"),
    (["--model-path", HF_ID], {"RIO_SWIREASONING": "yes"}, "RIO_SWIREASONING='yes': expected 0 or 1"),
    (["--model-path", HF_ID, "--seed", "1"], {}, "--preset and --seed apply to --tiny"),
    (["--target", "cpu-tiny", "--gpu"], {}, "--gpu applies to --tiny and --model-path"),
    (["--tiny", "--target", "cpu-tiny"], {}, "not allowed with argument"),
    (["--tiny", "--resume-memory-mib", "-1"], {}, "RIO_RESUME_MEMORY_MIB='-1.0': expected a number"),
    (["--tiny"], {"RIO_RESUME_MEMORY_MIB": "lots"}, "RIO_RESUME_MEMORY_MIB='lots': expected a"),
]


@pytest.mark.parametrize("argv,environ,message", REFUSED, ids=[m[:24] for *_, m in REFUSED])
def test_serve_refuses_bad_input_before_starting(argv, environ, message, tmp_path, monkeypatch,
                                                 capsys, caplog):
    for name in ("RIO_MODEL_PATH", "NODE_RANK", env.REASONING_DEFAULT, env.SWIREASONING,
                 env.RESUME_MEMORY):
        monkeypatch.delenv(name, raising=False)
    for name, value in {"RIO_CACHE_DIR": str(tmp_path), **environ}.items():
        monkeypatch.setenv(name, value)
    try:
        code = cli.main(["serve", *argv])
    except SystemExit as e:  # argparse's refusals
        code = e.code
    assert code == 2
    assert message in capsys.readouterr().err + caplog.text
    assert list(tmp_path.iterdir()) == []  # no checkpoint generated, no server log


def launch_env(argv: list[str], monkeypatch, **environ) -> tuple[serve.Plan, list, dict]:
    monkeypatch.delenv(env.SWIREASONING, raising=False)
    monkeypatch.setenv("SGLANG_EXTERNAL_MODEL_PACKAGE", env.MODEL_PACKAGE)  # even if exported
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    plan = serve.plan(argv)
    return (plan, *plan.command())


# how serve is asked for the any-model switch, and whether SGLang's own class then serves
SWITCH = [
    (["--model-path", HF_ID], {}, False),
    (["--model-path", HF_ID, "--swireasoning"], {}, True),
    (["--model-path", HF_ID], {"RIO_SWIREASONING": "1"}, True),
    (["--target", "h200x8", "--swireasoning"], {"RIO_MODEL_PATH": HF_ID}, True),
]


def test_the_resume_memory_reaches_the_server(monkeypatch):
    monkeypatch.delenv(env.RESUME_MEMORY, raising=False)
    _, _, e = launch_env(["--model-path", HF_ID, "--resume-memory-mib", "0"], monkeypatch)
    assert e[env.RESUME_MEMORY] == "0.0" and env.resume_memory_bytes_of(e[env.RESUME_MEMORY]) == 0
    _, _, e = launch_env(["--model-path", HF_ID], monkeypatch)
    assert env.RESUME_MEMORY not in e and env.resume_memory_bytes() == 1024 * 2**20


@pytest.mark.parametrize("argv,environ,stock", SWITCH, ids=[" ".join(a) for a, *_ in SWITCH])
def test_swireasoning_serves_sglangs_class_with_the_switch_on(argv, environ, stock, monkeypatch):
    plan, argv, e = launch_env(argv, monkeypatch, **environ)
    assert plan.stock is stock
    assert argv[1:5] == ["-m", "sglang.launch_server", "--model-path", HF_ID]
    if stock:
        assert e[env.SWIREASONING] == "1" and "SGLANG_EXTERNAL_MODEL_PACKAGE" not in e
    else:
        assert env.SWIREASONING not in e
        assert e["SGLANG_EXTERNAL_MODEL_PACKAGE"] == env.MODEL_PACKAGE


def test_a_target_launches_what_its_flags_parse_into(monkeypatch):
    """The argv test_launch.py parses with SGLang's parser is the one serve starts; arguments
    after `--` come last, and the readiness wait follows their --port."""
    extra = ["--tp-size", "4", "--port", "31000"]
    plan, argv, e = launch_env(["--target", "h200x8", "--", *extra], monkeypatch,
                               RIO_MODEL_PATH=HF_ID)
    wanted = server_args(read_target("h200x8"), HF_ID, extra)
    assert argv[argv.index("--reasoning-parser"):] == wanted[2:]
    assert plan.port == 31000 and plan.http and not plan.cpu
    assert e["SGLANG_EXTERNAL_MODEL_PACKAGE"] == env.MODEL_PACKAGE


@pytest.mark.parametrize("rank,http", [("0", True), ("1", False)])
def test_only_the_first_node_is_waited_on_over_http(rank, http, monkeypatch):
    plan, _, _ = launch_env(["--target", "h100x16-2node"], monkeypatch, RIO_MODEL_PATH=HF_ID,
                            NODE_RANK=rank, DIST_INIT_ADDR="10.0.0.1:5000")
    assert plan.http is http


def test_model_path_on_this_cpu_adds_the_cpu_setup(monkeypatch):
    _, argv, e = launch_env(["--model-path", HF_ID, "--", "--max-running-requests", "2"],
                            monkeypatch)
    assert argv[-len(sglang_server.CPU_FLAGS) - 2:-2] == list(sglang_server.CPU_FLAGS)
    assert argv[-2:] == ["--max-running-requests", "2"]
    assert e["RIO_CPU_PLATFORM"] == "1" and e["TRITON_INTERPRET"] == "1"
