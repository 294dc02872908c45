"""The one allocator of every kernel output and scratch buffer in rio_kernels.

Kernels call `buffers.empty` through the module (never a copied name), so that the tests'
autouse fixture (`testing.poisoned_outputs`) can fill every buffer with NaN or an out-of-range
integer: a lane a kernel forgets to write then fails the comparison with the reference.
"""

from __future__ import annotations

import torch


def empty(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
    """An uninitialised buffer (torch.empty); poisoned under the kernel tests."""
    return torch.empty(shape, dtype=dtype, device=device)
