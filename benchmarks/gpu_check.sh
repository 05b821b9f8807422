#!/usr/bin/env bash
# One device-machine session (<= 8 minutes on an H100/H200): the GPU tests and the speed-path tests on the GPU
# machine's own stack (torch 2.11, transformers 5.17, no `datasets`), then every benchmark of benchmarks/run_all.py
# in fp32 and bf16 with the torch.compile and CUDA-graph variants. Each step has its own time limit, so one slow
# step cannot eat the session; results land in $OUT (tests.txt, detr.json/.txt, vilt.json/.txt, other.json/.txt).
# The package is put on PYTHONPATH in the installed layout (detrvilt/ + detrvilt/modeling/), since that machine
# cannot pip-install from a registry.
set -uo pipefail
site=/tmp/site
mkdir -p "$site/detrvilt" && cp -r src/detrvilt/. "$site/detrvilt/" && cp -r modeling "$site/detrvilt/modeling"
export PYTHONPATH="$site" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
out=${OUT:-/tmp/out}
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$out/device.txt"
python3 -c "import torch, transformers, timm; print(torch.__version__, transformers.__version__, timm.__version__)" \
  | tee -a "$out/device.txt"
# GPU-marked tests, the speed-path tests and both parity suites (CPU ones too: they check this stack's versions).
timeout 150 python3 -m pytest -q -p no:cacheprovider -m "not slow and not multigpu" \
  tests/test_detr_gpu.py tests/test_vilt_gpu.py tests/test_speed.py tests/test_detr_parity.py \
  tests/test_vilt_parity.py 2>&1 | tail -15 | tee "$out/tests.txt"
cd benchmarks
timeout 170 python3 run_all.py --only detr flops --compile --cuda-graphs --output "$out/detr.json" 2>&1 \
  | grep -v Loading | tee "$out/detr.txt"
timeout 130 python3 run_all.py --only vilt flops --compile --cuda-graphs --output "$out/vilt.json" 2>&1 \
  | grep -v Loading | tee "$out/vilt.txt"
timeout 50 python3 run_all.py --only preprocessing --output "$out/other.json" 2>&1 \
  | grep -v Loading | tee "$out/other.txt"
