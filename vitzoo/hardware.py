"""What this machine computes fast, asked of torch in one place: training's `--mixed-precision auto`
(vitzoo.training.engine) and inference's `precision="auto"` (vitzoo.precision) both decide from here.

A leaf module: it imports torch and nothing of vitzoo.
"""

from __future__ import annotations

import torch


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware (AVX512-BF16 or AMX tiles); without
    it bf16 autocast is emulated and slower than fp32."""
    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(check() for check in checks if check is not None)


def auto_inference_dtype(device: torch.device) -> torch.dtype:
    """The dtype inference computes in on `device` when the precision is "auto": bf16 on CUDA GPUs
    that support it and on CPUs with native bf16 (AVX512-BF16 or AMX), where it is faster than fp32
    for a small cost in agreement; fp32 everywhere else (other CPUs, where bf16 is emulated, and MPS)."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    if device.type == "cpu":
        return torch.bfloat16 if cpu_has_native_bf16() else torch.float32
    return torch.float32
