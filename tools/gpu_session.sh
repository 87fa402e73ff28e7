#!/usr/bin/env bash
# Run the GPU side of the project (CUDA tests, benchmarks, training sweeps) on a machine with a CUDA GPU, and collect
# everything it writes in one folder.
#
# Usage: bash tools/gpu_session.sh [--out DIR] [--budget SECONDS] [--bundle PART_MB] [--checkpoint-mb MB] STEP ...
#   --out DIR         where every output goes (default out/gpu): DIR/<step>.log per step, and DIR/steps.jsonl with
#                     one line per step (start, end, exit code; tools/grid_gpu_minutes.py sums a grid's steps)
#   --budget SECONDS  a time budget for all the steps (default: none): each step is stopped when it runs out, and
#                     sweeps get --minutes to end 45 s before it, checkpointing their packs in flight
#   --bundle PART_MB  afterwards, pack DIR into one archive split in parts of PART_MB MiB (DIR/all.tgz.part-aa, -ab,
#                     ...; unpack with cat all.tgz.part-* | tar xz), keeping pack checkpoints, smallest first, up to
#                     --checkpoint-mb MiB in all (default 10); the others are listed in dropped_checkpoints.txt
#   Steps run in order; a STEP of the form "A+B" runs A and B side by side.
#   Wheels in .gpu-wheels/ (mamba_ssm and causal_conv1d built for this machine's torch and Python, ray for sweeps)
#   are installed into /tmp/site first, unless SKIP_INSTALL=1.
#
# Steps:
#   tests[@FILE]     pytest -m cuda over FILE (default: ${TESTS:-tests/})
#   bench            benchmarks/mqar_throughput.py                    (mqar_throughput.json)
#   selbench         benchmarks/selectivity_throughput.py             (selectivity_throughput.json)
#   profile@ARGS     benchmarks/tools/profile_harness.py ARGS (commas become spaces)
#   ablation         benchmarks/tools/harness_ablation.py             (harness_ablation.json)
#   trainbench       python -m experiments.train_bench                (train_bench.json)
#   grid             python -m experiments.recall_grid_gpu            (recall_grid_gpu/)
#   calibrate[@ARM]  python -m experiments.calibrate [--only ARM] ${CALIB_ARGS} into DIR/calib/, resuming from
#                    results/train/calibration.jsonl and its checkpoints
#   sweep@GRID[@MIXERS[@SEEDS]]  verify-constructions sweep --device cuda ${SWEEP_ARGS} into DIR/GRID.jsonl, which
#                    starts as a copy of results/train/GRID.jsonl and its checkpoint folder GRID.jsonl.ckpt/, so
#                    the sweep trains only the missing runs and resumes cut packs; python3 tools/merge_stores.py
#                    DIR/GRID.jsonl brings the new runs and checkpoints back into results/train/
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=out/gpu BUDGET="" BUNDLE_MB="" CKPT_MB=10
while [ $# -gt 0 ]; do
  case $1 in
    --out) OUT=$2; shift 2 ;;
    --budget) BUDGET=$2; shift 2 ;;
    --bundle) BUNDLE_MB=$2; shift 2 ;;
    --checkpoint-mb) CKPT_MB=$2; shift 2 ;;
    --*) echo "unknown option $1" >&2; exit 2 ;;
    *) break ;;
  esac
done
[ $# -gt 0 ] || { echo "usage: bash tools/gpu_session.sh [--out DIR] [--budget S] [--bundle MB] STEP ..." >&2; exit 2; }
mkdir -p "$OUT"
[ -n "${SKIP_INSTALL:-}" ] || python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu-wheels/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
python3 -c "import torch, mamba_ssm; print('torch', torch.__version__, 'mamba_ssm', mamba_ssm.__version__, torch.cuda.get_device_name())" | tee "$OUT/env.txt"

DEADLINE=$((SECONDS + ${BUDGET:-1000000000}))  # every step ends by then, so the bundle below is always written

one() {
  IFS=@ read -r name a b c <<< "$1"
  local log="$OUT/${1//[^A-Za-z0-9_.-]/_}.log" left=$((DEADLINE - SECONDS))
  [ "$left" -gt 30 ] || { echo "skipped: no time left" > "$log"; return; }
  local start; start=$(date +%s.%N)
  local minutes=""; [ -n "$BUDGET" ] && minutes="--minutes $(awk -v l="$left" 'BEGIN { print (l - 45) / 60 }')"
  case $name in
    tests) timeout "$left" env MC_REQUIRE_CUDA=1 python3 -m pytest -m cuda -q -p no:cacheprovider ${a:-${TESTS:-tests/}} ;;
    bench) timeout "$left" python3 benchmarks/mqar_throughput.py ${BENCH_ARGS:-} --out "$OUT/mqar_throughput.json" ;;
    selbench) timeout "$left" python3 benchmarks/selectivity_throughput.py --out "$OUT/selectivity_throughput.json" ;;
    profile) timeout "$left" python3 benchmarks/tools/profile_harness.py ${a//,/ } ;;
    ablation) timeout "$left" python3 benchmarks/tools/harness_ablation.py --out "$OUT/harness_ablation.json" ;;
    trainbench) timeout "$left" python3 -m experiments.train_bench --device cuda ${TRAINBENCH_ARGS:-} --out "$OUT/train_bench.json" ;;
    grid) timeout "$left" python3 -m experiments.recall_grid_gpu "$OUT/recall_grid_gpu" --max-minutes "${GRID_MINUTES:-4}" ;;
    calibrate) mkdir -p "$OUT/calib" && cp results/train/calibration.jsonl results/train/fig2.jsonl "$OUT/calib/"
           [ -d results/train/calibration.jsonl.ckpt ] && cp -r results/train/calibration.jsonl.ckpt "$OUT/calib/"
           timeout "$left" python3 -m experiments.calibrate --device cuda ${a:+--only $a} $minutes \
             --out "$OUT/calib" ${CALIB_ARGS:-} ;;
    sweep) local store="$OUT/$a.jsonl"
           [ -f "$store" ] || { [ -f "results/train/$a.jsonl" ] && cp "results/train/$a.jsonl" "$store"; }
           [ -d "results/train/$a.jsonl.ckpt" ] && [ ! -d "$store.ckpt" ] && cp -r "results/train/$a.jsonl.ckpt" "$store.ckpt"
           timeout "$left" python3 -m verify_constructions sweep --grid "$a" ${b:+--mixers $b} ${c:+--seeds $c} \
             --device cuda $minutes --store "$store" ${SWEEP_ARGS:-} ;;
    *) echo "unknown step $name"; return 2 ;;
  esac > "$log" 2>&1
  local rc=$?
  echo "{\"step\": \"$1\", \"start\": $start, \"end\": $(date +%s.%N), \"rc\": $rc}" >> "$OUT/steps.jsonl"
}

for step in "$@"; do
  IFS=+ read -ra parts <<< "$step"
  for p in "${parts[@]}"; do one "$p" & done
  wait
done
if [ -n "$BUNDLE_MB" ]; then
  find "$OUT" -name '*.pt' -printf '%s %p\n' | sort -n | awk -v cap=$(( CKPT_MB * 1048576 )) \
    '{ if (kept + $1 <= cap) kept += $1; else print $2 }' | tee "$OUT/dropped_checkpoints.txt" | xargs -r rm -f
  tar czf /tmp/all.tgz -C "$OUT" . && find "$OUT" -mindepth 1 -delete && split -b "${BUNDLE_MB}M" /tmp/all.tgz "$OUT/all.tgz.part-"
  ls -la "$OUT"
fi
