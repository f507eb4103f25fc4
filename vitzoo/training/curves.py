"""The curves of every run: one engine callback that redraws `curves.png` in the run folder at each
evaluation and at the end (training loss and learning rate per step, the per-step entropies a
method logs, every evaluation metric per epoch), from the run's own metrics.jsonl, so a resumed
run's figure covers the whole run. `vitzoo plot RUN_DIR ...` draws the same for finished runs."""

from __future__ import annotations

from typing import Any

from vitzoo.errors import DiskFullError
from vitzoo.training.objective import Callback, Context

CURVES = "curves.png"


class Curves(Callback):
    """Draws curves.png on the main process (matplotlib, a fraction of a second per evaluation).

    The figure is not essential: a failed write (a full disk, a read-only file) is a warning, once per
    run, and the run goes on; the previous figure is intact (it is replaced by a rename)."""

    def __init__(self) -> None:
        self.warned = False

    def _draw(self, context: Context) -> None:
        if context.accelerator.is_main_process:
            from vitzoo.plots import save_run_curves

            path = context.run.file(CURVES)
            try:
                save_run_curves(path, [("run", context.run.events())])
            except (OSError, DiskFullError) as error:
                if not self.warned:
                    print(f"warning: {CURVES} not updated: {error}; the run goes on without it", flush=True)
                    self.warned = True

    def on_evaluate(self, context: Context, metrics: dict[str, Any]) -> None:
        self._draw(context)

    def on_end(self, context: Context, results: dict[str, Any]) -> None:
        self._draw(context)
