#!/usr/bin/env bash
# Run the GPU side of the project on a machine with an H100/H200. Wheels of mamba_ssm (and optionally causal_conv1d)
# are read from .gpu-wheels/ (see ../shared/gpu-wheels/README.md); outputs go to ${OUT:-out/gpu}.
#
# Usage: bash tools/gpu_session.sh STEP [STEP ...]; a STEP of the form "A+B+C" runs A, B and C in parallel.
#   Each step's output goes to OUT/<step>.log.
#   Every step is cut at ${BUDGET:-540} s after the start (sweeps stop themselves 45 s before), then BUNDLE=1 packs
#   all outputs into one archive (in 15 MiB parts; pack checkpoints, smallest first, up to CKPT_MB = 10 MiB).
#   tests            pytest -m cuda over ${TESTS:-tests/}
#   tests@FILE       the same over one test file
#   bench            benchmarks/mqar_throughput.py                    (mqar_throughput.json)
#   selbench         benchmarks/selectivity_throughput.py             (selectivity_throughput.json)
#   profile[@ARGS]   benchmarks/tools/profile_harness.py ARGS (commas become spaces)
#   ablation         benchmarks/tools/harness_ablation.py            (harness_ablation.json)
#   trainbench       python -m verify.train.bench                     (train_bench.json)
#   grid             python -m experiments.recall_grid_gpu            (recall_grid_gpu/)
#   calibrate[@ARM]  python -m verify.train.calibrate [--only ARM] ${CALIB_ARGS} into OUT/calib/ (resuming from
#                    results/train/calibration.jsonl and .sweep-ckpt/calibration.jsonl.ckpt; merge OUT/calib/calibration.jsonl)
#   mps              start the CUDA MPS daemon (parallel sweep processes share the GPU without time-slicing)
#   sweep@GRID[@MIXERS[@KAPPAS[@I/N[@PACK]]]]  a training sweep (shard I of N of its packs, at most PACK models a pack;
#                    fields may be empty: sweep@GRID@@@0/2); in place of I/N, xW runs W processes on one store, each
#                    claiming the next pack, largest first (--claim; verify/train/claims.py): sweep@fig2-loss@@@x12 (at most ${SWEEP_MINUTES} minutes) into OUT/GRID[__MIXERS][__kKAPPAS].jsonl,
#                    resuming from results/train/GRID.jsonl and from .sweep-ckpt/ (the pack a deadline cut; carry it)
#                    (the stores are merged back, and checkpoints kept in .sweep-ckpt/, by tools/merge_stores.py)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out/gpu}; mkdir -p "$OUT"
[ -n "${SKIP_INSTALL:-}" ] || python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu-wheels/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
python3 -c "import torch, mamba_ssm; print('torch', torch.__version__, 'mamba_ssm', mamba_ssm.__version__, torch.cuda.get_device_name())" | tee "$OUT/env.txt"

DEADLINE=$((SECONDS + ${BUDGET:-540}))  # every step ends by then, so the bundle below is always written

one() {
  IFS=@ read -r name a b c d e <<< "$1"
  local log="$OUT/${1//[^A-Za-z0-9_.-]/_}.log" left=$((DEADLINE - SECONDS))
  [ "$left" -gt 30 ] || { echo "skipped: no time left" > "$log"; return; }
  local start; start=$(date +%s.%N)
  local sweep_minutes; sweep_minutes=$(awk -v l="$left" -v m="${SWEEP_MINUTES:-1000}" 'BEGIN { x = (l - 45) / 60; print (x < m ? x : m) }')
  case $name in
    tests) timeout "$left" python3 -m pytest -m cuda -q -p no:cacheprovider ${a:-${TESTS:-tests/}} ;;
    bench) timeout "$left" python3 benchmarks/mqar_throughput.py ${BENCH_ARGS:-} --out "$OUT/mqar_throughput.json" ;;
    selbench) timeout "$(( left < ${SELBENCH_TIMEOUT:-100000} ? left : ${SELBENCH_TIMEOUT:-100000} ))" python3 benchmarks/selectivity_throughput.py --out "$OUT/selectivity_throughput.json" ;;
    profile) python3 benchmarks/tools/profile_harness.py ${a//,/ } ;;
    ablation) timeout "$left" python3 benchmarks/tools/harness_ablation.py --out "$OUT/harness_ablation.json" ;;
    trainbench) timeout "$(( left < ${TRAINBENCH_TIMEOUT:-100000} ? left : ${TRAINBENCH_TIMEOUT:-100000} ))" python3 -m verify.train.bench --device cuda ${TRAINBENCH_ARGS:-} --out "$OUT/train_bench.json" ;;
    grid) python3 -m experiments.recall_grid_gpu "$OUT/recall_grid_gpu" --max-minutes "${GRID_MINUTES:-4}" ;;
    calibrate) mkdir -p "$OUT/calib" && cp results/train/calibration.jsonl results/train/fig2.jsonl "$OUT/calib/"
           [ -d .sweep-ckpt/calibration.jsonl.ckpt ] && cp -r .sweep-ckpt/calibration.jsonl.ckpt "$OUT/calib/"
           python3 -m verify.train.calibrate --device cuda ${a:+--only $a} --minutes "$sweep_minutes" \
             --out "$OUT/calib" ${CALIB_ARGS:-} ;;
    mps) # CUDA MPS lets the sweep processes' small kernels run side by side instead of time-sliced
         if pgrep -x nvidia-cuda-mps >/dev/null; then echo "MPS already running"
         elif nvidia-cuda-mps-control -d && python3 -c "import torch; torch.zeros(1).cuda()"; then echo "MPS on"
         else echo quit | nvidia-cuda-mps-control; echo "MPS could not start: processes stay time-sliced"; fi ;;
    sweep) local workers=1; [[ $d == x* ]] && { workers=${d#x}; d=""; }  # xW: W processes claiming packs
           local store="$OUT/$a${b:+__${b//,/_}}${c:+__k${c//,/_}}${d:+__s${d//\//of}}.jsonl"
           [ -f "results/train/$a.jsonl" ] && cp "results/train/$a.jsonl" "$store"
           # the checkpoint of a pack cut at the last call's deadline (carried in .sweep-ckpt/, see merge_stores.py)
           [ -d ".sweep-ckpt/$(basename "$store").ckpt" ] && cp -r ".sweep-ckpt/$(basename "$store").ckpt" "$store.ckpt"
           for _ in $(seq "$workers"); do
             python3 -m verify_constructions sweep --grid "$a" ${b:+--mixers $b} ${c:+--kappas $c} ${d:+--shard $d} \
               ${e:+--pack-size $e} $([ "$workers" -gt 1 ] && echo --claim) --device cuda --minutes "$sweep_minutes" \
               --store "$store" ${SWEEP_ARGS:-} &
           done; wait ;;
    *) echo "unknown step $name"; return 2 ;;
  esac > "$log" 2>&1
  local rc=$?  # one line per step: the timing of a grid measured across calls (tools/grid_gpu_minutes.py)
  echo "{\"step\": \"$1\", \"start\": $start, \"end\": $(date +%s.%N), \"rc\": $rc}" >> "$OUT/steps.jsonl"
}

for step in "${@:-tests bench}"; do
  IFS=+ read -ra parts <<< "$step"
  for p in "${parts[@]}"; do one "$p" & done
  wait
done
# BUNDLE=1: everything in one archive (the device tool returns at most 8 files), pack checkpoints included
# (they travel back to the device in the next call's carry, 64 MiB with the wheels and the tree: the smallest are kept
#  up to CKPT_MB = 10 MiB in all, the rest stay behind, listed in dropped_checkpoints.txt, and their packs restart;
#  the archive comes back in 15 MiB parts all.tgz.part-aa, -ab, ...: cat all.tgz.part-* | tar xz)
if [ "${BUNDLE:-0}" = 1 ]; then
  find "$OUT" -name '*.pt' -printf '%s %p\n' | sort -n | awk -v cap=$(( ${CKPT_MB:-10} * 1048576 )) \
    '{ if (kept + $1 <= cap) kept += $1; else print $2 }' | tee "$OUT/dropped_checkpoints.txt" | xargs -r rm -f
  tar czf /tmp/all.tgz -C "$OUT" . && find "$OUT" -mindepth 1 -delete && split -b 15M /tmp/all.tgz "$OUT/all.tgz.part-"
  ls -la "$OUT"
fi
