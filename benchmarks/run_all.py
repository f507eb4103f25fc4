"""Every benchmark behind the speed tables of docs/speed.md, in one run on one machine.

    python benchmarks/run_all.py                      # CPU: deit-tiny and deit-small at 224
    python benchmarks/run_all.py --output-dir benchmarks/results

Runs `vitzoo bench` (inference vs raw transformers / timm / pipeline, training step, data
pipeline, MFU against the measured matmul peak) and benchmarks/finetune_throughput.py (the
fine-tuning recipe against a transformers.Trainer set up as the docs show), then prints the
markdown tables. Run it on an otherwise idle machine: every figure is a timing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="deit-tiny,deit-small", help="models for vitzoo bench")
    parser.add_argument("--batch-sizes", default="32", help="batch sizes for vitzoo bench")
    parser.add_argument("--image-sizes", default="224", help="image sizes for vitzoo bench")
    parser.add_argument("--output-dir", default=os.path.join(HERE, "results"), help="where the JSON and markdown go")
    parser.add_argument("--skip-trainer", action="store_true", help="skip the recipe-vs-Trainer benchmark")
    args = parser.parse_args()
    os.makedirs(args.output_dir, exist_ok=True)
    bench_json = os.path.join(args.output_dir, "bench.json")
    subprocess.run([sys.executable, "-m", "vitzoo.cli", "bench", "--models", args.models, "--batch-sizes", args.batch_sizes,
                    "--image-sizes", args.image_sizes, "--output", bench_json,
                    "--markdown", os.path.join(args.output_dir, "bench.md")], check=True)
    if not args.skip_trainer:
        trainer_json = os.path.join(args.output_dir, "finetune_throughput.json")
        subprocess.run([sys.executable, os.path.join(HERE, "finetune_throughput.py"), "--output", trainer_json], check=True)
        with open(trainer_json) as handle:
            print(json.dumps(json.load(handle), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
