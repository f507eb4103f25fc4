#!/usr/bin/env bash
# Wheels for benchmarks/gpu_check.sh on a GPU machine that has torch but no network: vitzoo itself
# (built from this checkout) and the dependencies such an image may lack or have in other versions.
# Run it where pip can reach a package index; carry the folder along (default .whl/, git-ignored).
#
#   bash benchmarks/gpu_wheels.sh [FOLDER] [PYTHON_VERSION]      # defaults: .whl 3.12
set -euo pipefail
FOLDER="${1:-.whl}"
PY="${2:-3.12}"
mkdir -p "$FOLDER"
rm -f "$FOLDER"/vitzoo-*.whl
python3 -m pip wheel -q --no-deps --no-build-isolation -w "$FOLDER" .
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PY" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 -d "$FOLDER" \
    transformers==5.24.0 timm==1.0.31 datasets==5.2.0 evaluate==0.4.6 dill==0.4.1 \
    "multiprocess==0.70.19"
ls -la "$FOLDER"
