#!/usr/bin/env bash
# Issue 15's GPU run, prepared for a session that is lent the `device` machine (one H100/H200). NOT yet run: no
# session so far had a device; the first one to run it should expect to fix small things.
#
# That machine's image has torch (CUDA), typer, rich, matplotlib, safetensors and tokenizers, but transformers 5.17
# (longvid needs >= 5.23) and no PyAV, and it cannot download. So, here first (48 MB of wheels, within the 64 MiB
# the working tree may carry):
#
#   pip download --no-deps -d .device-wheels transformers==5.24.0 av --python-version 3.12 \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --only-binary=:all:
#
# then the device tool's run with carry [".device-wheels"], command "bash benchmarks/device_bench.sh", timeout 600.
# It writes table.md, results.json and the plots under $OUT/bench_<gpu>; copy them to results/ with the device name.
# Budget: about 8 minutes of the session's 15 (Qwen2.5-VL-7B shape, random bf16 weights, 2 timed runs per case).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --no-index --no-deps .device-wheels/*.whl
python3 -m pip install -q --no-deps --no-build-isolation -e .
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | tr -c 'A-Za-z0-9\n' '_' | tr -s '_')
out="${OUT:-/tmp}/bench_${gpu}"
python3 -m longvid bench --config benchmarks/configs/qwen2_5_vl_7b.json --device cuda --dtype bfloat16 \
    --vs-generate --tokens 16384,65536,131072 --methods full,evs,uniform,knorm,pivotkv --keep 0.25 \
    --runs 2 --warmup 1 --new-tokens 16 --out "$out"
