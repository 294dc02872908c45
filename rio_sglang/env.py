"""Every environment variable rio-sglang reads, typed, in one place (all listed in the README)."""

from __future__ import annotations

import os
from pathlib import Path


def _flag(name: str) -> bool:
    value = os.environ.get(name, "0").strip().lower()
    if value not in ("0", "1", "true", "false", ""):
        raise ValueError(f"{name}={value!r}: expected 0 or 1")
    return value in ("1", "true")


MODEL_PACKAGE = "rio_sglang.models"  # our external model package (SGLang imports its classes)


def serves_rio_model() -> bool:
    """SGLANG_EXTERNAL_MODEL_PACKAGE (SGLang's own variable, set by `rio-sglang serve`) names our
    model package: this SGLang process serves our class, so the reasoning hooks install."""
    return os.environ.get("SGLANG_EXTERNAL_MODEL_PACKAGE", "").strip() == MODEL_PACKAGE


SWIREASONING = "RIO_SWIREASONING"


def swireasoning() -> bool:
    """RIO_SWIREASONING=1: serve SwiReasoning with whatever SGLang model class the checkpoint
    names (SGLang's own Qwen3, Llama, Qwen2 ...), not only with ours."""
    return _flag(SWIREASONING)


def swireasoning_on() -> bool:
    """The reasoning plugin installs its hooks: RIO_SWIREASONING=1, or our class is served."""
    return swireasoning() or serves_rio_model()


def cpu_platform() -> bool:
    """RIO_CPU_PLATFORM=1: activate our out-of-tree CPU platform and Triton-interpreter plugin."""
    return _flag("RIO_CPU_PLATFORM")


def cache_dir() -> Path:
    """RIO_CACHE_DIR: where generated tiny checkpoints live (default ~/.cache/rio-sglang)."""
    return Path(os.environ.get("RIO_CACHE_DIR") or Path.home() / ".cache" / "rio-sglang")


def server_start_timeout() -> float:
    """RIO_SERVER_START_TIMEOUT: seconds `rio-sglang serve` waits for a server to be ready (600)."""
    return float(os.environ.get("RIO_SERVER_START_TIMEOUT", "600"))


REASONING_DEFAULT = "RIO_REASONING_DEFAULT"


def reasoning_default() -> str | None:
    """RIO_REASONING_DEFAULT: the server-wide default reasoning spec, a JSON object such as
    '{"mode": "switch"}' (unset: requests without a spec decode plainly). Parsed and checked in
    runtime/defaults.py."""
    return os.environ.get(REASONING_DEFAULT) or None


def reasoning_request_log() -> bool:
    """RIO_REASONING_LOG=1: one debug line per finished reasoning request (mode, steps,
    switches, injections) from the tokenizer manager; off by default."""
    return _flag("RIO_REASONING_LOG")


RESUME_MEMORY = "RIO_RESUME_MEMORY_MIB"
RESUME_MEMORY_DEFAULT_MIB = 1024


def resume_memory_bytes() -> int:
    """RIO_RESUME_MEMORY_MIB (default 1024; `rio-sglang serve --resume-memory-mib`): host memory
    per rank for the soft inputs of live latent / switch requests, so that a request SGLang
    retracts resumes exactly. Past it a request resumes from tokens; 0 keeps none."""
    return resume_memory_bytes_of(os.environ.get(RESUME_MEMORY))


def resume_memory_bytes_of(value: str | None) -> int:
    """RIO_RESUME_MEMORY_MIB's value (None or blank: the default) in bytes; ValueError names
    the variable."""
    text = (value or "").strip() or str(RESUME_MEMORY_DEFAULT_MIB)
    try:
        mib = float(text)
    except ValueError:
        mib = float("nan")
    if not 0 <= mib < float("inf"):
        raise ValueError(f"{RESUME_MEMORY}={text!r}: expected a number of MiB >= 0")
    return int(mib * 2**20)


def moe_w8a8() -> bool:
    """RIO_MOE_W8A8=1: FP8 experts quantize activations to e4m3 on the prefill (grouped) path
    and use fp8 tensor cores (`fused_moe(act_quant=True)`). Opt-in: its speed is not measured."""
    return _flag("RIO_MOE_W8A8")
