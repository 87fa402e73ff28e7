#!/usr/bin/env bash
# Run the GPU side of the project on a machine with an H100/H200: CUDA tests, the throughput benchmark and the
# real-block recall grid. Wheels of mamba_ssm (and optionally causal_conv1d) are read from .gpu-wheels/ (see
# ../shared/gpu-wheels/README.md); outputs go to ${OUT:-out/gpu}. Usage: bash tools/gpu_session.sh [tests|bench|grid]...
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out/gpu}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu-wheels/mamba_ssm-*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
python3 -c "import torch, mamba_ssm; print('torch', torch.__version__, 'mamba_ssm', mamba_ssm.__version__, torch.cuda.get_device_name())" | tee "$OUT/env.txt"
for step in "${@:-tests bench}"; do
  case $step in
    tests) python3 -m pytest -m cuda -s -q -p no:cacheprovider ${TESTS:-tests/} 2>&1 | tee -a "$OUT/cuda_tests.log" | grep -vE "^\s*$" | tail -300 ;;
    bench) python3 benchmarks/mqar_throughput.py --out "$OUT/mqar_throughput.json" ;;
    grid) python3 -m verify.recall_grid_gpu "$OUT/recall_grid_gpu" --max-minutes "${GRID_MINUTES:-4}" ;;
  esac
done
