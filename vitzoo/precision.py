"""Inference precision: the names a user chooses (`vitzoo.load(precision=...)`, `--precision`), the
dtype each one computes in on a device, and the autocast that applies it. What vitzoo returns is fp32
whatever the compute precision; `vitzoo.zoo.precision_agreement` measures what the precision costs."""

from __future__ import annotations

import contextlib

import torch

from vitzoo.errors import BadInputError
from vitzoo.hardware import auto_inference_dtype

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
PRECISION_HELP = (
    "torch.autocast dtype, outputs always fp32: auto = bf16 on GPUs that support it and on CPUs with native bf16 "
    "(AVX512-BF16 or AMX), fp32 elsewhere; fp32 = no autocast (bit-identical to plain torch); bf16; fp16 (GPUs only)"
)


def resolve_precision(precision: str, device: torch.device | str) -> torch.dtype:
    """The dtype `precision` computes in on `device`.

    "auto" is `vitzoo.hardware.auto_inference_dtype`: bf16 where the hardware computes it natively,
    fp32 elsewhere. An explicit "bf16" is honoured everywhere (emulated, so slower, on CPUs without
    native bf16). "fp16" is refused on CPUs: every CPU with fp16 matrix units (AVX512-FP16, AMX-FP16)
    also has bf16 ones, so bf16 is at least as fast there and keeps fp32's range, which fp16 lacks
    (large activations overflow to inf); elsewhere torch emulates both.

    Raises:
        BadInputError: an unknown name, or "fp16" on a CPU.
    """
    if precision not in PRECISIONS:
        raise BadInputError(f"unknown precision {precision!r} (--precision); choose one of {', '.join(PRECISIONS)}")
    device = torch.device(device)
    if precision == "auto":
        return auto_inference_dtype(device)
    if precision == "fp16" and device.type == "cpu":
        raise BadInputError(
            "precision 'fp16' (--precision fp16) runs on GPUs only: on a CPU use 'bf16' (as fast wherever fp16 is "
            "native, with fp32's range) or 'auto' (bf16 where this CPU computes it natively, else fp32)"
        )
    return DTYPES[precision]


def dtype_name(dtype: torch.dtype) -> str:
    """"fp32", "bf16" or "fp16": how results and cache keys record a compute dtype."""
    return next(name for name, known in DTYPES.items() if known == dtype)


def autocast(device_type: str, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    """torch.autocast to `dtype` on `device_type`; for fp32, autocast switched off, so that the code inside
    runs exactly as without autocast even within a caller's autocast region."""
    if dtype == torch.float32:
        return torch.autocast(device_type, enabled=False)
    return torch.autocast(device_type, dtype=dtype)
