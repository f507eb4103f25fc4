"""Comparison reports: results.json / results.csv / report.md, two plots, and a terminal table.

    >>> pareto_front([(0.9, 100.0), (0.8, 200.0), (0.7, 150.0)])   # accuracy vs images/s, both maximised
    [True, True, False]

The rows are the flat dicts of `vitzoo.compare.runner.run_compare`; the same rows (sorted) go to every
file, so the JSON, the CSV and the markdown table always agree.
"""

from __future__ import annotations

import csv
import io
import math
import os
import platform
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from vitzoo.errors import BadInputError
from vitzoo.io import atomic_write_json, atomic_write_text
from vitzoo.plots import save_figure

if TYPE_CHECKING:
    from vitzoo.compare.config import CompareConfig

__all__ = [
    "COLUMNS",
    "SIGNIFICANCE",
    "best_line",
    "mark_noise",
    "pareto_front",
    "plot",
    "sort_rows",
    "terminal_table",
    "to_csv",
    "to_markdown",
    "write_report",
]

SIGNIFICANCE = 0.05  # a difference to the best model is real when McNemar's exact p-value is below this

# (key, header, format) of the main table; published_* columns follow, then the error
COLUMNS: list[tuple[str, str, str]] = [
    ("model", "model", "{}"),
    ("family", "family", "{}"),
    ("status", "status", "{}"),
    ("accuracy", "top-1", "{:.4f}"),
    ("val_accuracy", "val top-1", "{:.4f}"),
    ("vs_best", "vs best", "{}"),
    ("rank", "rank", "{}"),
    ("top5", "top-5", "{:.4f}"),
    ("macro_f1", "macro F1", "{:.4f}"),
    ("params", "params (M)", "{:.2f}"),
    ("trainable_params", "trained (M)", "{:.3f}"),
    ("gflops", "GFLOPs", "{:.4f}"),
    ("images_per_second", "infer img/s", "{:.1f}"),
    ("latency_p50_ms", "lat p50 ms", "{:.2f}"),
    ("latency_p90_ms", "lat p90 ms", "{:.2f}"),
    ("peak_memory_mb", "peak mem MB", "{:.1f}"),
    ("train_images_per_second", "train img/s", "{:.1f}"),
    ("pareto", "Pareto", "{}"),
]
# shown only where some row has a value (a validation top-1 exists only when the report scores a test split)
OPTIONAL_COLUMNS = {"val_accuracy"}
# per-image fields: in results.json and models/*.json, too long for the CSV and the tables
PER_IMAGE = ("predictions", "correct")
# ascending sorts; every other metric sorts descending (best first)
LOWER_IS_BETTER = {"gflops", "params", "trainable_params", "latency_p50_ms", "latency_p90_ms", "peak_memory_mb"}
SORTABLE = ("accuracy", "top5", "macro_f1", "images_per_second", "train_images_per_second", *sorted(LOWER_IS_BETTER))


def _number(value: Any) -> float | None:
    return (
        float(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        else None
    )


def pareto_front(points: Sequence[tuple[Any, Any]], maximize: tuple[bool, bool] = (True, True)) -> list[bool]:
    """Which (a, b) points no other point dominates (at least as good in both, better in one).

    `maximize` says per coordinate whether larger is better. Points with a missing or
    non-finite coordinate are never on the front. Equal points are all on it.
    """
    signs = [1.0 if up else -1.0 for up in maximize]
    clean = [
        (signs[0] * a, signs[1] * b) if (a := _number(p[0])) is not None and (b := _number(p[1])) is not None else None
        for p in points
    ]
    front = []
    for i, point in enumerate(clean):
        if point is None:
            front.append(False)
            continue
        dominated = any(
            other is not None and j != i and other[0] >= point[0] and other[1] >= point[1] and other != point
            for j, other in enumerate(clean)
        )
        front.append(not dominated)
    return front


def sort_rows(rows: Sequence[dict[str, Any]], sort_by: str = "accuracy") -> list[dict[str, Any]]:
    """Rows sorted by `sort_by` (best first; failed and missing values last), `pareto` marked
    (accuracy vs inference images/s, among the finished models)."""
    if sort_by not in SORTABLE:
        raise BadInputError(f"cannot sort by {sort_by!r}; choose one of {', '.join(SORTABLE)}")
    front = pareto_front([(row.get("accuracy"), row.get("images_per_second")) for row in rows])
    marked = mark_noise([{**row, "pareto": bool(on) and row.get("status") == "ok"} for row, on in zip(rows, front)])
    sign = 1.0 if sort_by in LOWER_IS_BETTER else -1.0

    def key(row: dict[str, Any]) -> tuple[int, float, str]:
        value = _number(row.get(sort_by))
        return (value is None or row.get("status") != "ok", sign * value if value is not None else 0.0, row["model"])

    return sorted(marked, key=key)


def _best_index(rows: Sequence[dict[str, Any]]) -> int | None:
    """The best finished model: the highest validation top-1 where every finished row has one (the report
    scores a test split, and the choice is made on validation), else the highest top-1."""
    finished = [i for i, row in enumerate(rows) if row.get("status") == "ok" and _number(row.get("accuracy")) is not None]
    if not finished:
        return None
    key = "val_accuracy" if all(_number(rows[i].get("val_accuracy")) is not None for i in finished) else "accuracy"
    return max(finished, key=lambda i: (rows[i][key], rows[i]["accuracy"], -i))


def mark_noise(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Copies of `rows` with the paired test against the best model: `best` (bool), `p_vs_best` (McNemar's
    exact p-value on the per-image outcomes, None where they are missing or of other images), `within_noise`
    (not significantly different from the best at 95%), and `vs_best` and `rank` as the tables print them."""
    from vitzoo.compare.stats import mcnemar_exact

    out = [dict(row) for row in rows]
    best = _best_index(out)
    reference = out[best].get("correct") if best is not None else None
    for i, row in enumerate(out):
        row["best"], row["p_vs_best"], row["within_noise"], row["vs_best"], row["rank"] = False, None, None, "", ""
        if best is None or row.get("status") != "ok" or _number(row.get("accuracy")) is None:
            continue
        higher = sum(1 for other in out if other.get("status") == "ok"
                     and (_number(other.get("accuracy")) or 0.0) > row["accuracy"])
        row["rank"] = str(1 + higher)
        if i == best:
            row["best"], row["vs_best"], row["rank"] = True, "best", row["rank"] + " (best)"
            continue
        mine = row.get("correct")
        if isinstance(mine, str) and isinstance(reference, str) and len(mine) == len(reference):
            p = mcnemar_exact([c == "1" for c in reference], [c == "1" for c in mine])
            row["p_vs_best"], row["within_noise"] = p, p >= SIGNIFICANCE
            row["vs_best"] = f"p={p:.3g}" + (", within noise" if p >= SIGNIFICANCE else ", worse" if
                                             row["accuracy"] <= out[best]["accuracy"] else ", better")
            if row["within_noise"]:
                row["rank"] += " (within noise of best)"
    return out


def best_line(rows: Sequence[dict[str, Any]]) -> str:
    """One sentence: the best model, its top-1 with its uncertainty, and which others are within noise of it."""
    marked = rows if rows and "within_noise" in rows[0] else mark_noise(rows)
    best = next((row for row in marked if row.get("best")), None)
    if best is None:
        return "best: none (no model finished)"
    chosen = " (chosen on validation top-1 {:.4f})".format(best["val_accuracy"]) if (
        _number(best.get("val_accuracy")) is not None and all(
            _number(r.get("val_accuracy")) is not None for r in marked if r.get("status") == "ok")) else ""
    noise = [row["model"] for row in marked if row.get("within_noise")]
    tested = [row for row in marked if row.get("p_vs_best") is not None]
    if noise:
        tail = f"; within noise of it (McNemar exact, p >= {SIGNIFICANCE:g}): {', '.join(noise)}"
    elif tested:
        tail = f"; every other model differs from it significantly (McNemar exact, p < {SIGNIFICANCE:g})"
    else:
        tail = ""
    return f"best: {best['model']}{chosen}, top-1 {_accuracy_text(best)}{tail}"


def _accuracy_text(row: dict[str, Any]) -> str:
    """Top-1 with its uncertainty: mean ± std over seeds, or the Wilson 95% interval of one seed."""
    accuracy = row["accuracy"]
    seeds = row.get("seeds") or []
    if len(seeds) > 1 and _number(row.get("accuracy_std")) is not None:
        return f"{accuracy:.4f} ± {row['accuracy_std']:.4f}"
    low, high = _number(row.get("accuracy_ci_low")), _number(row.get("accuracy_ci_high"))
    if low is not None and high is not None:
        return f"{accuracy:.4f} [{low:.3f}, {high:.3f}]"
    return f"{accuracy:.4f}"


def _error_bar(row: dict[str, Any]) -> tuple[float, float]:
    """(below, above) the top-1 of the bar drawn: one std over seeds, or the Wilson 95% interval."""
    accuracy = row["accuracy"]
    if len(row.get("seeds") or []) > 1 and _number(row.get("accuracy_std")) is not None:
        return row["accuracy_std"], row["accuracy_std"]
    low, high = _number(row.get("accuracy_ci_low")), _number(row.get("accuracy_ci_high"))
    if low is None or high is None:
        return 0.0, 0.0
    return max(0.0, accuracy - low), max(0.0, high - accuracy)


def _cell(row: dict[str, Any], key: str, fmt: str) -> str:
    value = row.get(key)
    if key == "accuracy" and _number(value) is not None:
        return _accuracy_text(row)
    if key in ("params", "trainable_params") and _number(value) is not None:
        value = value / 1e6
    if key == "pareto":
        return ("* (within noise)" if row.get("within_noise") else "*") if value else ""
    if value is None or value == "":
        return "-"
    try:
        return fmt.format(value)
    except (ValueError, TypeError):
        return str(value)


def _published_keys(rows: Sequence[dict[str, Any]]) -> list[str]:
    keys: list[str] = []
    for row in rows:
        keys.extend(key for key in row if key.startswith("published_") and key not in keys)
    return keys


def _published_cell(value: Any, key: str) -> str:
    if value is None or value == "":
        return "-"
    if key == "published_params" and _number(value) is not None:
        return f"{value / 1e6:.1f}M"
    return str(value)


def _columns(rows: Sequence[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return [column for column in COLUMNS
            if column[0] not in OPTIONAL_COLUMNS or any(_number(row.get(column[0])) is not None for row in rows)]


def _table(rows: Sequence[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    published = _published_keys(rows)
    columns = _columns(rows)
    headers = [header for _, header, _ in columns] + [f"{k.replace('published_', 'published ')}" for k in published]
    headers.append("error")
    body = []
    for row in rows:
        cells = [_cell(row, key, fmt) for key, _, fmt in columns]
        cells += [_published_cell(row.get(key), key) for key in published]
        cells.append(row.get("error") or "")
        body.append(cells)
    return headers, body


def terminal_table(rows: Sequence[dict[str, Any]], sort_by: str = "accuracy") -> str:
    """The main columns as aligned text (published numbers after them), sorted, Pareto marked *."""
    headers, body = _table(sort_rows(rows, sort_by))
    widths = [
        max(len(header), *(len(cells[i]) for cells in body)) if body else len(header)
        for i, header in enumerate(headers)
    ]
    lines = ["  ".join(header.ljust(width) for header, width in zip(headers, widths)).rstrip()]
    lines += ["  ".join(cell.ljust(width) for cell, width in zip(cells, widths)).rstrip() for cells in body]
    return "\n".join(lines)


def _flat(value: Any) -> Any:
    """A CSV cell: lists (the per-seed values) joined with ';'."""
    if isinstance(value, (list, tuple)):
        return ";".join(str(item) for item in value)
    return "" if value is None else value


def csv_fields(rows: Sequence[dict[str, Any]]) -> list[str]:
    fields = [key for key, _, _ in COLUMNS]
    for row in rows:
        fields.extend(key for key in row if key not in fields and key != "settings" and key not in PER_IMAGE)
    return fields


def to_csv(rows: Sequence[dict[str, Any]]) -> str:
    """Every field of every row (settings left out), raw values (params as a count, not millions)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=csv_fields(rows), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: _flat(row.get(key)) for key in writer.fieldnames})
    return buffer.getvalue()


def to_markdown(rows: Sequence[dict[str, Any]]) -> str:
    headers, body = _table(rows)
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |" for cells in body]
    return "\n".join(lines)


def plot(rows: Sequence[dict[str, Any]], x_key: str, path: str, *, x_label: str, maximize_x: bool, title: str) -> None:
    """Accuracy (y) against `x_key` for the finished models, each point labelled, the Pareto front drawn."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    points = [(row, _number(row.get(x_key)), _number(row.get("accuracy"))) for row in rows if row.get("status") == "ok"]
    points = [(row, x, y) for row, x, y in points if x is not None and y is not None]
    figure, axes = plt.subplots(figsize=(7, 4.5), dpi=110)
    if points:
        scale = 1e6 if x_key == "params" else 1.0
        xs = [x / scale for _, x, _ in points]
        ys = [y * 100 for _, _, y in points]
        front = pareto_front([(y, x) for x, y in zip(xs, ys)], maximize=(True, maximize_x))
        bars = [_error_bar(row) for row, _, _ in points]
        axes.errorbar(xs, ys, yerr=[[low * 100 for low, _ in bars], [high * 100 for _, high in bars]], fmt="none",
                      ecolor="0.5", elinewidth=1, capsize=3, zorder=2)
        axes.scatter(xs, ys, c=["tab:red" if on else "tab:blue" for on in front], zorder=3)
        for (row, _, _), x, y in zip(points, xs, ys):
            axes.annotate(row["model"], (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
        on_front = sorted((x, y) for x, y, on in zip(xs, ys, front) if on)
        if on_front:
            axes.plot(
                [x for x, _ in on_front],
                [y for _, y in on_front],
                "--",
                color="tab:red",
                zorder=2,
                label="Pareto front",
            )
            axes.legend(loc="lower right" if maximize_x else "lower left")
        if max(xs) > 20 * max(min(xs), 1e-12):
            axes.set_xscale("log")
        lows = [y - low * 100 for y, (low, _) in zip(ys, bars)]
        highs = [y + high * 100 for y, (_, high) in zip(ys, bars)]
        pad = max(1.0, (max(highs) - min(lows)) * 0.1)
        axes.set_ylim(min(lows) - pad, min(100.0, max(highs) + pad) + 0.5)
    else:
        axes.text(0.5, 0.5, "no finished model", ha="center", va="center", transform=axes.transAxes)
    axes.set_xlabel(x_label)
    axes.set_ylabel("top-1 accuracy (%), bars: " + _bar_meaning(rows))
    axes.set_title(title, fontsize=10)
    axes.grid(True, alpha=0.3)
    save_figure(figure, path)


def _bar_meaning(rows: Sequence[dict[str, Any]]) -> str:
    several = any(len(row.get("seeds") or []) > 1 for row in rows)
    return "± 1 std over seeds" if several else "Wilson 95% interval"


def _threads(rows: Sequence[dict[str, Any]], versions: dict[str, Any]) -> Any:
    measured = sorted({row["torch_threads"] for row in rows if isinstance(row.get("torch_threads"), int)})
    return ", ".join(map(str, measured)) if measured else versions["torch_threads"]


def _versions() -> dict[str, Any]:
    from vitzoo.training.engine import environment

    return {**environment(), "platform": platform.platform(), "load_average": _load_average()}


def _load_average() -> list[float] | None:
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return None


def _split_text(info: dict[str, Any], config: CompareConfig) -> str:
    """The scored split, named, with its size."""
    name = info.get("eval") or (f"`{config.eval_split}`" if config.eval_split else "the eval split")
    size = f", {info['eval_images']} images" if "eval_images" in info else ""
    kind = "the test split" if info.get("test_mode") else "the evaluation split"
    return f"{kind} ({name}{size})"


def _validation_lines(info: dict[str, Any], config: CompareConfig) -> list[str]:
    if not info.get("test_mode"):
        if config.protocol in ("finetune", "lora"):
            return ["- the fine-tunes evaluated on the same split during training and kept their best epoch by it "
                    "(no separate test split: pass `--eval-split` or use data with a `test` split to keep the choice "
                    "apart from the report)."]
        return []
    if config.protocol in ("finetune", "lora"):
        return [f"- validation: {info.get('validation')}: each fine-tune evaluated on it during training and kept "
                "its best epoch by it (*val top-1*); the best model is chosen by it too; that model was then scored "
                "once on the test split (*top-1* and the rest)."]
    return ["- frozen-feature protocols choose nothing during training: the probes fit on the whole training split."]


def _uncertainty_lines(rows: Sequence[dict[str, Any]], config: CompareConfig) -> list[str]:
    seeds = max((len(row.get("seeds") or []) for row in rows), default=1)
    knn = " (k-NN has no seed: the first run is the k-NN on the whole training set, the others on bootstrap " \
          "resamples of it)" if config.protocol == "knn" else ""
    spread = (f"- uncertainty: {seeds} runs per model, seeds {config.seed}..{config.seed + seeds - 1}{knn}; top-1 "
              "is their mean ± their standard deviation (n - 1); the values per seed are in results.json / "
              "results.csv (`*_per_seed`); plot error bars: ± 1 std." if seeds > 1 else
              "- uncertainty: one run per model (`--seeds 1`); top-1 is followed by its Wilson score 95% interval "
              "over the evaluation images, drawn as error bars in the plots.")
    return [
        spread,
        "- vs best: McNemar's exact test (two-sided binomial on the images where exactly one of the two models "
        f"is right) between the best model and each other one on the same evaluation images, using each model's "
        f"first-seed predictions (seed {config.seed}); *within noise* means p >= {SIGNIFICANCE:g}, i.e. the "
        "difference is not significant at 95%. The rank, the best line and the Pareto marks say so.",
    ]


def write_report(rows: Sequence[dict[str, Any]], config: CompareConfig) -> dict[str, str]:
    """Write results.json, results.csv, report.md and the two plots into `config.output_dir`;
    return {what: path}."""
    import torch

    directory = config.output_dir
    ordered = sort_rows(rows, config.sort_by)
    best = best_line(ordered)
    info = config.splits_info or {}
    versions = _versions()
    versions["torch_threads"] = torch.get_num_threads()
    settings = config.settings()
    paths = {
        name: os.path.join(directory, name)
        for name in ("results.json", "results.csv", "report.md", "accuracy_vs_throughput.png", "accuracy_vs_params.png")
    }
    title = f"{config.dataset}, {config.protocol}" + (", random init (--scratch)" if config.scratch else "")
    atomic_write_json(
        paths["results.json"],
        {
            "command": config.command,
            "settings": settings,
            "sort_by": config.sort_by,
            "defaults_applied": config.defaults_applied,
            "splits": info,
            "best": best,
            "environment": versions,
            "models": [{key: value for key, value in row.items() if key != "settings"} for row in ordered],
        },
    )
    atomic_write_text(paths["results.csv"], to_csv(ordered))
    plot(
        ordered,
        "images_per_second",
        paths["accuracy_vs_throughput.png"],
        x_label=f"inference images/s (batch {config.batch_size}, {config.device})",
        maximize_x=True,
        title=f"accuracy vs throughput: {title}",
    )
    plot(
        ordered,
        "params",
        paths["accuracy_vs_params.png"],
        x_label="parameters (M)",
        maximize_x=False,
        title=f"accuracy vs parameters: {title}",
    )
    failed = [row for row in ordered if row.get("status") != "ok"]
    defaults = ", ".join(f"{key}={value}" for key, value in config.defaults_applied.items()) or "none"
    memory_methods = sorted({row.get("peak_memory_method") for row in ordered if row.get("peak_memory_method")})
    lines = [
        f"# vitzoo compare: {title}",
        "",
        f"Sorted by **{config.sort_by}**; `*` marks the Pareto front of top-1 accuracy vs inference images/s "
        "(no other model is both more accurate and faster). Columns named *published* are the registry's "
        "reference numbers for the released checkpoint, not measured here.",
        "",
        to_markdown(ordered),
        "",
        f"**{best}.**",
        "",
        f"{len(ordered) - len(failed)} of {len(ordered)} models finished"
        + (f"; failed: {', '.join(r['model'] for r in failed)}" if failed else "")
        + ".",
        "",
        "## How it was measured",
        "",
        f"- quality: protocol **{config.protocol}** on {_split_text(info, config)} of `{config.dataset}` "
        "(top-1, top-5, macro F1)"
        + (f", {config.epochs} epochs" if config.protocol != "knn" else f", k={config.k}")
        + f"; trained on `{config.train_split}`"
        + (f" ({info['train_images']} images)" if "train_images" in info else "")
        + ".",
        *_validation_lines(info, config),
        *_uncertainty_lines(ordered, config),
        f"- image size: {config.image_size or 'each model’s own'}; weights: "
        + ("random init (`--scratch`)" if config.scratch else "pretrained")
        + "; config overrides: "
        + f"`{config.config_overrides or 'none'}`.",
        f"- defaults filled in for this run: {defaults}.",
        "- GFLOPs: forward of one image, counted by `torch.utils.flop_counter.FlopCounterMode` (2 FLOPs per "
        "multiply-accumulate of matmuls/convolutions/attention; elementwise ops not counted).",
        f"- inference precision: `--precision {config.precision}`, computed in "
        f"{', '.join(sorted({str(row['precision']) for row in ordered if row.get('precision')})) or '-'} "
        "(frozen features and the throughput/latency forwards; outputs fp32; a fine-tune trains in the recipe's own "
        "`--mixed-precision`).",
        f"- throughput: forward images/s at batch {config.batch_size}, the median of the rounds; latency: batch-1 "
        f"forward p50/p90 over every round; both under `torch.no_grad` on `{config.device}` ({_threads(ordered, versions)} "
        "torch threads), every model warmed up, then measured round-robin (each model in turn, several rounds) "
        "after all models had their accuracy, so that the machine's slow spells hit every model alike.",
        f"- peak memory: {', '.join(memory_methods) or '-'} (CUDA: `max_memory_allocated` of a forward at the "
        "throughput batch; CPU, `live_tensor_peak`: the peak bytes of the tensors that forward creates, alive at "
        "once, seen op by op: activations and outputs, not a kernel's inner scratch space).",
        "- training images/s (finetune, lora): the recipe's own figure over the whole run; trained (M): the "
        "parameters the optimizer updated (finetune: all of them; lora: the LoRA matrices of `vitzoo finetune --peft "
        "lora` at its defaults and the head), beside params (M), the whole model (for lora: the merged one).",
        f"- machine load average (1/5/15 min) when the report was written: {versions['load_average']}; timings "
        "on a shared machine are noisy.",
        "",
        "## Command",
        "",
        "```bash",
        config.command or "(called from Python: vitzoo.compare.run_compare)",
        "```",
        "",
        "## Versions",
        "",
        *(f"- {key}: {value}" for key, value in versions.items() if key != "load_average"),
        "",
        "![accuracy vs throughput](accuracy_vs_throughput.png)",
        "![accuracy vs params](accuracy_vs_params.png)",
        "",
    ]
    atomic_write_text(paths["report.md"], "\n".join(lines))
    return paths
