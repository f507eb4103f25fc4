"""`vitzoo.measure`: models of one shape measure alike; memory is the forward's own tensors."""

from __future__ import annotations

import pytest
import torch

import vitzoo
from vitzoo.measure import LiveTensorBytes, measure_many, peak_memory

SHAPE = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, patch_size=4)


def _model(seed):
    torch.manual_seed(seed)
    return vitzoo.load("dino-vits16", task="classification", num_labels=10, pretrained=False, image_size=16,
                       config_overrides=SHAPE)


def test_two_models_of_one_shape_measure_within_noise_of_each_other():
    """Different random weights, the same shape: measured together, round-robin, they agree within 20% in
    images/s and exactly in memory; the thread count is recorded and restored."""
    first, second = _model(0), _model(1)
    threads = torch.get_num_threads()
    costs = measure_many({"a": (first.logits, first.model, 16), "b": (second.logits, second.model, 16)},
                         batch_size=16, rounds=7, iters=3, latency_iters=5, min_seconds=0.03, threads=1)
    a, b = costs["a"], costs["b"]
    assert torch.get_num_threads() == threads and a["torch_threads"] == 1
    assert abs(a["images_per_second"] - b["images_per_second"]) <= 0.2 * max(a["images_per_second"],
                                                                              b["images_per_second"])
    assert a["gflops"] == b["gflops"] and a["params"] == b["params"]
    assert a["peak_memory_mb"] == b["peak_memory_mb"] > 0 and a["peak_memory_method"] == "live_tensor_peak"
    assert a["latency_p50_ms"] <= a["latency_p90_ms"] and a["rounds"] == 7


def test_live_tensor_bytes_counts_what_is_alive_at_once():
    x = torch.zeros(1000)  # made before: not counted
    with LiveTensorBytes() as tracker:
        y = x + 1  # 4000 bytes
        z = y * 2  # 8000 alive
        view = z[:10]  # a view: no new memory
        z.add_(1)  # in place: no new memory
        del y  # 4000 alive
        w = torch.ones(250)  # 5000 alive
    assert tracker.peak == 8000 and tracker.current == 5000
    del view, w, z

    def forward(pixels):
        return pixels.flatten(1) @ torch.ones(pixels[0].numel(), 100)

    memory = peak_memory(forward, 8, batch_size=4)  # the ones matrix (192 x 100 floats) and the output (4 x 100)
    assert memory == {"bytes": 4 * (192 * 100 + 4 * 100), "method": "live_tensor_peak"}
    with pytest.raises(Exception, match="rounds"):
        measure_many({"a": (forward, None, 8)}, rounds=0)
