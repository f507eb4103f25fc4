"""How big and how fast a model is, measured on this machine: parameters, FLOPs, throughput, latency, memory.

    >>> from vitzoo.measure import measure
    >>> zoo = vitzoo.load("deit-tiny", pretrained=False, image_size=32)     # doctest: +SKIP
    >>> measure(zoo.logits, zoo.model, image_size=32, batch_size=64)      # doctest: +SKIP
    {'params': ..., 'gflops': ..., 'images_per_second': ..., 'latency_p50_ms': ..., ...}

Every function takes a `forward` callable (a preprocessed float batch B x 3 x S x S -> anything)
and, where it needs them, the module behind it, so it works for `ZooModel.logits`,
`ZooModel.features`, a bare `nn.Module` or a timm model alike.

* FLOPs: counted, never looked up, with torch's own `torch.utils.flop_counter.FlopCounterMode`
  over one forward of one image. It counts 2 FLOPs per multiply-accumulate of the matmuls and
  convolutions (including the attention's Q@K^T and A@V, and `scaled_dot_product_attention`),
  and nothing for elementwise ops, norms and softmax. Torch has no formula for its CPU attention
  kernel (`_scaled_dot_product_flash_attention_for_cpu`), so `count_flops` adds torch's own
  `sdpa_flop_count` for it: the same count as on CUDA.
* Throughput: images/s of forward passes at `batch_size`, after warm-up, under `torch.no_grad`.
* Latency: batch-1 forward times, p50 / p90 in milliseconds (CUDA synchronised before each read).
* Peak memory during a forward at `batch_size`, in bytes above what was in use before it:
  on CUDA `torch.cuda.max_memory_allocated` (after `reset_peak_memory_stats`); on CPU the
  process's peak resident set size (Linux `VmHWM`, reset by writing 5 to `/proc/self/clear_refs`)
  minus the resident set before the forward. The CPU figure includes allocator effects
  (freed memory the allocator keeps), so compare it between models of one run, not across
  machines; it is None where /proc is not available.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from vitzoo.errors import BadInputError

__all__ = [
    "count_flops",
    "count_params",
    "latency",
    "measure",
    "peak_memory",
    "throughput",
]

Forward = Callable[[torch.Tensor], Any]


def _device_of(module: nn.Module | None) -> torch.device:
    if module is None:
        return torch.device("cpu")
    parameter = next(module.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _inputs(batch_size: int, image_size: int, device: torch.device, seed: int = 0) -> torch.Tensor:
    if batch_size < 1 or image_size < 1:
        raise BadInputError(f"batch size and image size must be positive, got {batch_size} and {image_size}")
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch_size, 3, image_size, image_size, generator=generator).to(device)


@contextlib.contextmanager
def _frozen(module: nn.Module | None):
    """Eval mode and no autograd for the measurement; the module's mode is restored afterwards."""
    was_training = module.training if module is not None else False
    if module is not None:
        module.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        if module is not None:
            module.train(was_training)


def count_params(module: nn.Module) -> int:
    """Parameters of `module` (all of them, trainable or not; shared ones once)."""
    return sum(p.numel() for p in module.parameters())


def _cpu_sdpa_flops(query_shape: Any, key_shape: Any, value_shape: Any, *args: Any, **kwargs: Any) -> int:
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _extra_formulas() -> dict[Any, Callable[..., int]]:
    """Formulas torch's counter lacks: its CPU attention kernel (`scaled_dot_product_attention` on CPU
    runs `_scaled_dot_product_flash_attention_for_cpu`, which FlopCounterMode would count as 0),
    counted with torch's own `sdpa_flop_count`, as on CUDA."""
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    return {op: _cpu_sdpa_flops} if op is not None else {}


def count_flops(forward: Forward, image_size: int, module: nn.Module | None = None, *, batch_size: int = 1) -> int:
    """Forward FLOPs of one pass over `batch_size` images of `image_size` (torch's FlopCounterMode total).

    Torch's own formulas, plus its attention formula for the CPU attention kernel it does not map.
    """
    from torch.utils.flop_counter import FlopCounterMode, flop_registry

    device = _device_of(module)
    pixels = _inputs(batch_size, image_size, device)
    extra = {op: formula for op, formula in _extra_formulas().items() if op not in flop_registry}
    counter = FlopCounterMode(display=False, custom_mapping=extra)
    with _frozen(module), counter:
        forward(pixels)
    return int(counter.get_total_flops())


def throughput(
    forward: Forward,
    image_size: int,
    module: nn.Module | None = None,
    *,
    batch_size: int = 64,
    warmup: int = 2,
    iters: int = 5,
    min_seconds: float = 0.0,
) -> float:
    """Images per second of forward passes at `batch_size` (after `warmup` untimed passes).

    Runs `iters` timed passes, and more until `min_seconds` have passed.
    """
    if iters < 1 or warmup < 0:
        raise BadInputError(f"iters must be >= 1 and warmup >= 0, got {iters} and {warmup}")
    device = _device_of(module)
    pixels = _inputs(batch_size, image_size, device)
    with _frozen(module):
        for _ in range(warmup):
            forward(pixels)
        _sync(device)
        start = time.perf_counter()
        done = 0
        while done < iters or time.perf_counter() - start < min_seconds:
            forward(pixels)
            done += 1
        _sync(device)
        elapsed = time.perf_counter() - start
    return done * batch_size / max(elapsed, 1e-9)


def latency(
    forward: Forward, image_size: int, module: nn.Module | None = None, *, warmup: int = 3, iters: int = 20
) -> dict[str, float]:
    """Batch-1 forward latency in milliseconds: {"p50_ms", "p90_ms", "mean_ms"} over `iters` passes."""
    if iters < 1 or warmup < 0:
        raise BadInputError(f"iters must be >= 1 and warmup >= 0, got {iters} and {warmup}")
    device = _device_of(module)
    pixels = _inputs(1, image_size, device)
    times = []
    with _frozen(module):
        for _ in range(warmup):
            forward(pixels)
        for _ in range(iters):
            _sync(device)
            start = time.perf_counter()
            forward(pixels)
            _sync(device)
            times.append((time.perf_counter() - start) * 1000.0)
    ordered = torch.tensor(times, dtype=torch.float64)
    return {
        "p50_ms": float(torch.quantile(ordered, 0.5)),
        "p90_ms": float(torch.quantile(ordered, 0.9)),
        "mean_ms": float(ordered.mean()),
    }


def _rss_bytes() -> tuple[int, int] | None:
    """(current RSS, peak RSS since the last reset) of this process, from /proc; None elsewhere."""
    try:
        with open("/proc/self/status") as handle:
            fields = dict(line.split(":", 1) for line in handle if ":" in line)
        return int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def peak_memory(
    forward: Forward, image_size: int, module: nn.Module | None = None, *, batch_size: int = 64
) -> dict[str, Any]:
    """Peak memory one forward at `batch_size` adds: {"bytes": int | None, "method": str}.

    CUDA: `max_memory_allocated` minus `memory_allocated` before the pass ("cuda_max_memory_allocated").
    CPU: peak RSS (VmHWM after a reset) minus RSS before the pass ("cpu_peak_rss_delta"); bytes
    is None ("unavailable") where /proc cannot be read or reset.
    """
    device = _device_of(module)
    pixels = _inputs(batch_size, image_size, device)
    with _frozen(module):
        if device.type == "cuda":
            _sync(device)
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
            forward(pixels)
            _sync(device)
            peak = torch.cuda.max_memory_allocated(device)
            return {"bytes": int(peak - before), "method": "cuda_max_memory_allocated"}
        if not _reset_peak_rss():
            return {"bytes": None, "method": "unavailable"}
        before = _rss_bytes()
        forward(pixels)
        after = _rss_bytes()
    if before is None or after is None:
        return {"bytes": None, "method": "unavailable"}
    return {"bytes": max(0, after[1] - before[0]), "method": "cpu_peak_rss_delta"}


def measure(
    forward: Forward,
    module: nn.Module,
    image_size: int,
    *,
    batch_size: int = 64,
    warmup: int = 2,
    iters: int = 5,
    latency_iters: int = 20,
) -> dict[str, Any]:
    """Everything above for one model at one image size, as one flat dict (JSON-ready).

    Keys: params, gflops (forward, per image), images_per_second (batch `batch_size`),
    latency_p50_ms / latency_p90_ms (batch 1), peak_memory_mb and peak_memory_method,
    image_size, batch_size, device.
    """
    memory = peak_memory(forward, image_size, module, batch_size=batch_size)
    timing = latency(forward, image_size, module, warmup=warmup, iters=latency_iters)
    return {
        "params": count_params(module),
        "gflops": count_flops(forward, image_size, module) / 1e9,
        "images_per_second": throughput(forward, image_size, module, batch_size=batch_size, warmup=warmup, iters=iters),
        "latency_p50_ms": timing["p50_ms"],
        "latency_p90_ms": timing["p90_ms"],
        "peak_memory_mb": memory["bytes"] / 2**20 if memory["bytes"] is not None else None,
        "peak_memory_method": memory["method"],
        "image_size": int(image_size),
        "batch_size": int(batch_size),
        "device": str(_device_of(module)),
    }
