#!/usr/bin/env bash
# One device-machine session: the whole test suite (default + gpu markers) on the GPU machine's own stack, then
# the DETR benchmark in fp32 and bf16. The package is put on PYTHONPATH in the installed layout
# (detrvilt/ + detrvilt/modeling/), since that machine cannot pip-install from a registry.
set -uo pipefail
site=/tmp/site
mkdir -p "$site/detrvilt" && cp -r src/detrvilt/. "$site/detrvilt/" && cp -r modeling "$site/detrvilt/modeling"
export PYTHONPATH="$site" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
out=${OUT:-/tmp/out}
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
python3 -m pytest -q -p no:cacheprovider -m "not slow and not multigpu" tests 2>&1 | tail -15 | tee "$out/tests.txt"
python3 benchmarks/bench_detr.py --markdown 2>&1 | grep -v Loading | tee "$out/bench_fp32.txt"
python3 benchmarks/bench_detr.py --markdown --dtype bf16 2>&1 | grep -v Loading | tee "$out/bench_bf16.txt"
