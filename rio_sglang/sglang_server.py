"""Start, wait for and stop a real `sglang.launch_server` process (used by `rio-sglang serve`,
serve.py, and the tests; targets.py shares its flags).

The CPU flags are those measured in shared CPU_SGLANG.md; readiness polls /model_info because
/health runs a whole generation (seconds on a CPU).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from rio_sglang import env
from rio_sglang.logmarks import MTP_MARK, SERVING_MARK

CPU_FLAGS = (
    "--device", "cpu", "--dtype", "float16", "--attention-backend", "torch_native",
    "--mamba-radix-cache-strategy", "no_buffer", "--disable-overlap-schedule",
    "--cuda-graph-backend-decode", "disabled", "--cuda-graph-backend-prefill", "disabled",
    "--skip-server-warmup", "--max-total-tokens", "2048", "--mem-fraction-static", "0.1",
    "--max-running-requests", "8", "--max-mamba-cache-size", "16",
    # An idle scheduler otherwise spins a core: tests keep several servers up on 2 cores.
    "--sleep-on-idle",
)
# NEXTN speculative decoding with the checkpoint's own MTP head (our draft class), one draft
# token per step. On the CPU platform the draft needs SGLang's Triton attention backend
# (EAGLE refuses torch_native); on a GPU leave the attention backend at its default.
NEXTN_FLAGS = ("--speculative-algorithm", "NEXTN", "--speculative-num-steps", "1",
               "--speculative-eagle-topk", "1", "--speculative-num-draft-tokens", "2")
NEXTN_CPU_FLAGS = (*NEXTN_FLAGS, "--attention-backend", "triton")
PARSER_FLAGS = ("--reasoning-parser", "qwen3", "--tool-call-parser", "qwen3_coder")
MODEL_PACKAGE = env.MODEL_PACKAGE


class ServerStartError(RuntimeError):
    """The server process died or never became ready; the message carries its log's tail."""


def cpu_env(base: dict | None = None) -> dict:
    """Environment for a CPU server: our platform on, Triton interpreted."""
    e = dict(os.environ if base is None else base)
    e.update(RIO_CPU_PLATFORM="1", TRITON_INTERPRET="1")
    # One torch thread per process unless told otherwise: the interpreter runs kernels in one
    # Python thread anyway, and where other processes keep the cores busy (tests keep several
    # servers up on 2 cores) every multi-threaded op waits for its second thread to be
    # scheduled (an fp16 [1, 64] x [64, 512] linear: ~9 us idle, ~4 ms beside a busy core).
    e.setdefault("OMP_NUM_THREADS", "1")
    return e


def flag_value(argv, flag: str, default=None):
    """The value of `flag` in a launch_server argv (`--flag V` or `--flag=V`; the last one wins,
    as in SGLang's parser), or `default`."""
    found = default
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            found = argv[i + 1]
        elif arg.startswith(flag + "="):
            found = arg.split("=", 1)[1]
    return found


def cpu_thread_binding(argv, cores: int | None = None) -> str | None:
    """SGLANG_CPU_OMP_THREADS_BIND for a CPU server of several ranks (TP x PP x DP): SGLang
    otherwise allows one rank per NUMA node. Cores are split evenly ("0|1" for two ranks on two
    cores); with more ranks than cores, ranks share them round-robin. None for one rank."""
    ranks = 1
    for flag in ("--tp-size", "--pp-size", "--dp-size"):
        ranks *= int(flag_value(argv, flag, 1))
    if ranks == 1:
        return None
    cores = cores or os.cpu_count() or 1
    per = max(1, cores // ranks)
    spans = [((r * per) % cores, (r * per) % cores + per - 1) for r in range(ranks)]
    return "|".join(f"{a}" if a == b else f"{a}-{b}" for a, b in spans)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    """A running server: its URL, its own process (group) and its log file."""

    url: str
    proc: subprocess.Popen
    log_path: Path
    argv: list = field(default_factory=list)
    expect_mark: bool = True

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return ""
        # The server_args dump is one enormous line: leave it out of error messages.
        return "\n".join([ln[:400] for ln in text if "server_args=" not in ln][-lines:])

    def wait_ready(self, timeout: float) -> None:
        import requests

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerStartError(f"server exited with code {self.proc.returncode} "
                                       f"before it was ready; log {self.log_path}:\n"
                                       + self.log_tail())
            try:
                if requests.get(f"{self.url}/model_info", timeout=5).status_code == 200:
                    self._check_serving_class()
                    return
            except requests.RequestException:
                pass
            time.sleep(1.0)
        self.stop()
        raise ServerStartError(f"server not ready after {timeout:.0f}s; log {self.log_path}:\n"
                               + self.log_tail())

    def expected_marks(self) -> list[str]:
        """Our target class always; our MTP head too when NEXTN/EAGLE drafts from the checkpoint's
        own mtp.* (no separate draft model)."""
        if not self.expect_mark:
            return []
        algo = flag_value(self.argv, "--speculative-algorithm")
        own_draft = algo in ("NEXTN", "EAGLE") and "--speculative-draft-model-path" not in self.argv
        return [SERVING_MARK, MTP_MARK] if own_draft else [SERVING_MARK]

    def _check_serving_class(self) -> None:
        text = self.log_path.read_text(errors="replace")
        absent = [m for m in self.expected_marks() if m not in text]
        if not absent:
            return
        self.stop()
        raise ServerStartError(f"SGLang is serving its built-in class, not rio-sglang's (no "
                               f"'{absent[0]}' in {self.log_path}); import errors:\n"
                               + "\n".join(ln for ln in self.log_tail(400).splitlines()
                                            if "Ignore import error" in ln and "rio_" in ln))

    def stop(self, grace: float = 20.0) -> None:
        """Stop the server's own process group (its scheduler and detokenizer children too)."""
        if self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(grace)
        except ProcessLookupError:
            pass


def server_command(model_path, *, port: int, cpu: bool = True, extra_args=(),
                   environ: dict | None = None, stock: bool = False) -> tuple[list, dict]:
    """(argv, environment) of `python -m sglang.launch_server` on 127.0.0.1:`port`; `extra_args`
    come last and win.

    Our model class serves through SGLANG_EXTERNAL_MODEL_PACKAGE; `stock=True` leaves it unset
    so that SGLang's own class serves (the benchmark's baseline, `serve --swireasoning`).
    """
    argv = [sys.executable, "-m", "sglang.launch_server", "--model-path", str(model_path),
            "--host", "127.0.0.1", "--port", str(port), *PARSER_FLAGS]
    if cpu:
        argv += CPU_FLAGS
    argv += list(extra_args)
    e = cpu_env(environ) if cpu else dict(os.environ if environ is None else environ)
    binding = cpu_thread_binding(argv) if cpu else None
    if binding and "SGLANG_CPU_OMP_THREADS_BIND" not in e:
        e["SGLANG_CPU_OMP_THREADS_BIND"] = binding
    if stock:
        e.pop("SGLANG_EXTERNAL_MODEL_PACKAGE", None)
    else:
        e["SGLANG_EXTERNAL_MODEL_PACKAGE"] = MODEL_PACKAGE
    return argv, e


def start_server(model_path, *, port: int | None = None, cpu: bool = True, extra_args=(),
           log_path=None, environ: dict | None = None, stock: bool = False) -> Server:
    """Start `server_command(...)` (a free port unless `port`); see `start`."""
    port = port or free_port()
    argv, e = server_command(model_path, port=port, cpu=cpu, extra_args=extra_args,
                             environ=environ, stock=stock)
    return start(argv, e, port, log_path, expect_mark=not stock)


def start(argv: list, environ: dict, port: int, log_path=None, expect_mark: bool = True) -> Server:
    """Run `argv` in its own process group, its output in `log_path` (default
    RIO_CACHE_DIR/logs/server-PORT.log); `expect_mark`: readiness also needs our class's line."""
    log_path = Path(log_path or env.cache_dir() / "logs" / f"server-{port}.log")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=environ,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    return Server(f"http://127.0.0.1:{port}", proc, log_path, argv, expect_mark=expect_mark)
