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
  on CUDA `torch.cuda.max_memory_allocated` (after `reset_peak_memory_stats`); on CPU the peak of
  the bytes held by the tensors the forward creates (`LiveTensorBytes`, a dispatch mode that sees
  every op's outputs and when they are freed; views and in-place results are not counted again).
  It does not see the scratch space inside a kernel, so it is a lower bound, but it is exact and
  the same for models of one shape, unlike the process's resident set, which mostly measures
  what the allocator kept from earlier work.

`measure_many` measures several models the way a comparison needs: the torch thread count fixed
(and recorded), each model warmed up, then `rounds` rounds in which every model is timed in turn
(round-robin, so a slow spell of the machine hits all of them alike); images/s is the median of
the rounds, with their spread, and the latency percentiles pool every round's batch-1 times.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from vitzoo.errors import BadInputError

__all__ = [
    "LiveTensorBytes",
    "count_flops",
    "count_params",
    "latency",
    "measure",
    "measure_many",
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
        return _timed_passes(forward, pixels, device, iters, min_seconds)


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


class LiveTensorBytes(TorchDispatchMode):
    """While active, the bytes held by the tensors created under it: `current` and `peak`.

    Every op's outputs are seen as they are made; an output sharing its storage with one of the op's
    tensor arguments (a view, an in-place result) is not new memory and is skipped, and a storage is
    counted once however many tensors view it. Each counted tensor's bytes are released when it is
    freed (a weakref finaliser), so the peak is of what was alive at once.
    """

    def __init__(self) -> None:
        super().__init__()
        self.current = 0
        self.peak = 0
        self._held: dict[int, int] = {}

    def _release(self, pointer: int) -> None:
        self.current -= self._held.pop(pointer, 0)

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        import weakref

        from torch.utils._pytree import tree_leaves

        out = func(*args, **(kwargs or {}))
        inputs = {
            t.untyped_storage().data_ptr()
            for t in tree_leaves((args, kwargs or {}))
            if isinstance(t, torch.Tensor) and t.device.type != "meta"
        }
        for tensor in tree_leaves(out):
            if not isinstance(tensor, torch.Tensor) or tensor.device.type == "meta":
                continue
            storage = tensor.untyped_storage()
            pointer, size = storage.data_ptr(), storage.nbytes()
            if size == 0 or pointer in inputs or pointer in self._held:
                continue
            self._held[pointer] = size
            self.current += size
            self.peak = max(self.peak, self.current)
            weakref.finalize(tensor, self._release, pointer)
        return out


def peak_memory(
    forward: Forward, image_size: int, module: nn.Module | None = None, *, batch_size: int = 64
) -> dict[str, Any]:
    """Peak memory one forward at `batch_size` adds: {"bytes": int, "method": str}.

    CUDA: `max_memory_allocated` minus `memory_allocated` before the pass ("cuda_max_memory_allocated").
    Elsewhere: the peak bytes of the tensors the forward creates, alive at once (`LiveTensorBytes`,
    "live_tensor_peak"): activations and outputs, not a kernel's internal scratch space.
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
        tracker = LiveTensorBytes()
        with tracker:
            output = forward(pixels)
        del output
    return {"bytes": int(tracker.peak), "method": "live_tensor_peak"}


def measure(
    forward: Forward,
    module: nn.Module,
    image_size: int,
    *,
    batch_size: int = 64,
    warmup: int = 2,
    iters: int = 5,
    latency_iters: int = 20,
    rounds: int = 3,
) -> dict[str, Any]:
    """Everything above for one model at one image size, as one flat dict (JSON-ready): `measure_many`
    of this model alone (`iters` timed passes and `latency_iters` batch-1 passes in each of `rounds` rounds).

    Keys: params, gflops (forward, per image), images_per_second (median of the rounds) and
    images_per_second_spread (max - min over the rounds), latency_p50_ms / latency_p90_ms (batch 1),
    peak_memory_mb and peak_memory_method, torch_threads, rounds, image_size, batch_size, device.
    """
    return measure_many(
        {"model": (forward, module, image_size)}, batch_size=batch_size, warmup=warmup, iters=iters,
        latency_iters=latency_iters, rounds=rounds,
    )["model"]


def _timed_passes(forward: Forward, pixels: torch.Tensor, device: torch.device, iters: int, min_seconds: float) -> float:
    """Images per second of at least `iters` passes lasting at least `min_seconds`."""
    _sync(device)
    start = time.perf_counter()
    done = 0
    while done < iters or time.perf_counter() - start < min_seconds:
        forward(pixels)
        done += 1
    _sync(device)
    return done * pixels.shape[0] / max(time.perf_counter() - start, 1e-9)


def measure_many(
    models: dict[str, tuple[Forward, nn.Module, int]],
    *,
    batch_size: int = 64,
    warmup: int = 2,
    iters: int = 5,
    latency_iters: int = 20,
    rounds: int = 3,
    min_seconds: float = 0.05,
    threads: int | None = None,
) -> dict[str, dict[str, Any]]:
    """Measure several models alike: {name: the keys of `measure`}, for `models` = {name: (forward, module,
    image size)}.

    The torch thread count is set to `threads` (default: the current one) for the whole measurement and
    recorded. Each model is warmed up (`warmup` passes at both batch sizes, and at least `min_seconds`),
    then in each of `rounds` rounds every model in turn runs `iters` timed passes at `batch_size` (and for
    at least `min_seconds`) and `latency_iters` timed batch-1 passes. images/s is the median over the rounds;
    the latency percentiles are over the batch-1 times of every round.
    """
    if iters < 1 or warmup < 0 or rounds < 1 or latency_iters < 1:
        raise BadInputError(
            f"iters, latency_iters and rounds must be >= 1 and warmup >= 0, got {iters}, {latency_iters}, "
            f"{rounds} and {warmup}"
        )
    previous = torch.get_num_threads()
    threads = threads or previous
    torch.set_num_threads(threads)
    try:
        entries = {}
        for name, (forward, module, image_size) in models.items():
            device = _device_of(module)
            memory = peak_memory(forward, image_size, module, batch_size=batch_size)
            entries[name] = {
                "forward": forward, "module": module, "device": device, "image_size": image_size,
                "batch": _inputs(batch_size, image_size, device), "single": _inputs(1, image_size, device),
                "memory": memory, "speeds": [], "times": [],
            }
            with _frozen(module):  # warm-up: allocator, kernels' first-call set-up, caches
                _timed_passes(forward, entries[name]["batch"], device, warmup, min_seconds)
                _timed_passes(forward, entries[name]["single"], device, warmup, min_seconds / 2)
        for _ in range(rounds):
            for entry in entries.values():
                forward, device = entry["forward"], entry["device"]
                with _frozen(entry["module"]):
                    entry["speeds"].append(_timed_passes(forward, entry["batch"], device, iters, min_seconds))
                    for _ in range(latency_iters):
                        _sync(device)
                        start = time.perf_counter()
                        forward(entry["single"])
                        _sync(device)
                        entry["times"].append((time.perf_counter() - start) * 1000.0)
        out = {}
        for name, entry in entries.items():
            speeds = torch.tensor(entry["speeds"], dtype=torch.float64)
            times = torch.tensor(entry["times"], dtype=torch.float64)
            memory, module, image_size = entry["memory"], entry["module"], entry["image_size"]
            out[name] = {
                "params": count_params(module),
                "gflops": count_flops(entry["forward"], image_size, module) / 1e9,
                "images_per_second": float(torch.quantile(speeds, 0.5)),
                "images_per_second_spread": float(speeds.max() - speeds.min()),
                "latency_p50_ms": float(torch.quantile(times, 0.5)),
                "latency_p90_ms": float(torch.quantile(times, 0.9)),
                "peak_memory_mb": memory["bytes"] / 2**20 if memory["bytes"] is not None else None,
                "peak_memory_method": memory["method"],
                "torch_threads": threads,
                "rounds": rounds,
                "image_size": int(image_size),
                "batch_size": int(batch_size),
                "device": str(entry["device"]),
            }
        return out
    finally:
        torch.set_num_threads(previous)
