"""The out-of-tree SGLang platform for CPU-only machines (selected by RIO_CPU_PLATFORM=1)."""

from __future__ import annotations

from sglang.srt.platforms.cpu import CpuDeviceMixin
from sglang.srt.platforms.device_mixin import PlatformEnum
from sglang.srt.platforms.interface import PlatformCapabilities, SRTPlatform


class RioCpuPlatform(CpuDeviceMixin, SRTPlatform):
    """CPU device; SGLang's Triton kernels run under TRITON_INTERPRET=1."""

    _enum = PlatformEnum.OOT
    device_name = "cpu"
    device_type = "cpu"
    capabilities = PlatformCapabilities(supports_triton=True)

    def get_default_attention_backend(self) -> str:
        return "torch_native"

    def is_pin_memory_available(self, device=None) -> bool:
        return False

    def support_mamba_cache_extra_buffer(self) -> bool:
        return False

    def supports_speculative_algorithm(self, algorithm: str) -> bool:
        return algorithm in ("EAGLE", "NEXTN")

    def supports_speculative_draft_attention_backend(self, algorithm: str, backend: str) -> bool:
        return backend == "triton"
