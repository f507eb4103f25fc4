"""Summarise a `benchmarks/gpu_check.sh` folder as markdown: the bench tables (eager and compiled),
the fine-tuning recipe's steady-state speed and MFU, and the issue's GPU target.

    python benchmarks/gpu_summary.py gpu_check/
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics


def steady_rate(metrics_file: str) -> float | None:
    """Median images/s of the recipe's log windows, leaving out the first (start-up, compilation)."""
    if not os.path.exists(metrics_file):
        return None
    with open(metrics_file) as handle:
        rates = [event["images_per_second"] for event in map(json.loads, handle) if "images_per_second" in event]
    return statistics.median(rates[1:]) if len(rates) > 1 else None


def main(argv: list[str] | None = None) -> None:
    from vitzoo.bench import markdown_table

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", help="the folder gpu_check.sh wrote (its $OUT)")
    folder = parser.parse_args(argv).folder

    bench: dict[str, dict] = {}
    for path in sorted(glob.glob(os.path.join(folder, "bench_*.json"))):
        with open(path) as handle:
            data = json.load(handle)
        bench[os.path.basename(path)[len("bench_"):-len(".json")]] = data
        print(f"### {os.path.basename(path)}: {data['device']}, peak bf16 matmul {data['peak_matmul_gflops'] / 1e3:.0f} TFLOP/s\n")
        print(markdown_table(data["results"]) + "\n")

    eager = {row["model"]: row for row in bench.get("eager", {}).get("results", [])}
    peak = bench.get("eager", {}).get("peak_matmul_gflops")
    for name, results in (("finetune", "finetune_metrics.jsonl"), ("finetune_compile", None)):
        summary_file = os.path.join(folder, f"{name}_results.json")
        if not os.path.exists(summary_file):
            print(f"{name}: no results (phase skipped or failed; see gpu_check.log)")
            continue
        with open(summary_file) as handle:
            result = json.load(handle)
        rate = steady_rate(os.path.join(folder, results)) if results else None
        line = (f"{name}: {result['model']}, {result['steps']} steps, {result['train_images_per_second']:.0f} images/s "
                f"over the whole run ({result['wall_time_seconds']:.0f} s, start-up and eval included)")
        row = eager.get(result["model"])
        if rate is not None:
            line += f"; steady state {rate:.0f} images/s"
            if row and peak:
                line += f", MFU {3 * row['gflops_per_image'] * rate / peak:.0%}"
        print(line)

    compiled = bench.get("compile_deit-small", {}).get("results", [])
    for row in compiled:
        figures = {backend: row.get(key) for backend, key in (("transformers", "train_mfu"), ("timm", "timm_train_mfu"))}
        figures = {backend: mfu for backend, mfu in figures.items() if mfu is not None}
        if figures:
            best = max(figures.values())
            listed = ", ".join(f"{mfu:.1%} on {backend}" for backend, mfu in figures.items())
            print(f"target: deit-small bf16 training MFU with --compile >= 30%: {listed} ({'met' if best >= 0.30 else 'not met'})")


if __name__ == "__main__":
    main()
