"""Test set-up: no network, ever; a tiny Hub cache stands in for the Hub.

The environment is fixed before anything imports huggingface_hub, so every library reads the
temporary cache and offline mode exactly as it would read a user's.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

_CACHE_ROOT = tempfile.mkdtemp(prefix="vitzoo-hub-")
atexit.register(shutil.rmtree, _CACHE_ROOT, True)
os.environ["HF_HOME"] = os.path.join(_CACHE_ROOT, "home")
os.environ["HF_HUB_CACHE"] = os.path.join(_CACHE_ROOT, "hub")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
os.environ.pop("HF_TOKEN", None)
os.environ.setdefault("OMP_NUM_THREADS", "2")

import pytest  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

torch.set_num_threads(2)
transformers.utils.logging.disable_progress_bar()

from vitzoo import registry  # noqa: E402


@pytest.fixture(scope="session")
def tiny_checkpoints():
    """Every registered checkpoint as a tiny model in the offline Hub cache, built once per session.
    Returns {name: tiny spec}."""
    from tiny_hub import build_tiny_hub

    tiny = build_tiny_hub(os.environ["HF_HUB_CACHE"], registry.all_specs())
    return {spec.name: spec for spec in tiny}


@pytest.fixture
def tiny_hub(tiny_checkpoints, monkeypatch):
    """The tiny Hub cache, with the registry's specs swapped for the tiny ones during one test."""
    for name, spec in tiny_checkpoints.items():
        monkeypatch.setitem(registry._SPECS, name, spec)
    return tiny_checkpoints


@pytest.fixture
def sample_image():
    """A real photo shipped with scikit-learn (china.jpg), as a uint8 HxWx3 array."""
    from sklearn.datasets import load_sample_images

    return load_sample_images().images[0]


@pytest.fixture
def crash_after_checkpoint():
    """crash_after_checkpoint(step): a callback for a recipe's `main(argv, callbacks=[...])` that
    raises KeyboardInterrupt once the checkpoint of optimizer step `step` is on disk (a run killed
    mid-training)."""
    from vitzoo.training.objective import Callback

    class Crash(Callback):
        def __init__(self, step: int) -> None:
            self.step = step

        def on_checkpoint(self, context, path: str) -> None:
            if context.state.step == self.step:
                raise KeyboardInterrupt("simulated crash")

    return Crash
