"""The one device helper: CUDA → MPS → CPU, overridable with CHATQA_DEVICE; bf16 autocast where supported."""

from __future__ import annotations

import contextlib
import functools
import os


def pick_device(preferred: str | None = None) -> str:
    """`preferred`, else $CHATQA_DEVICE, else the best available of cuda, mps, cpu."""
    import torch

    choice = preferred if preferred is not None else os.environ.get("CHATQA_DEVICE")
    if choice:
        return choice
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


@functools.cache
def cpu_supports_bf16() -> bool:
    """True when this CPU has native bf16 instructions (AVX512-BF16 or AMX), where bf16 autocast pays off."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def autocast(device: str, enabled: bool | None = None):
    """bf16 autocast on CUDA and on CPUs that support it; a no-op context elsewhere or when disabled."""
    import torch

    kind = device.split(":")[0]
    if enabled is None:
        enabled = kind == "cuda" or (kind == "cpu" and cpu_supports_bf16())
    if not enabled or kind not in ("cuda", "cpu"):
        return contextlib.nullcontext()
    return torch.autocast(device_type=kind, dtype=torch.bfloat16)
