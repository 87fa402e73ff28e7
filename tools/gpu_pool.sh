#!/usr/bin/env bash
# A pool of sweep processes that outlives a device call: started once (setsid), it trains on while the device machine
# stays warm (it keeps ignored files and daemon processes between calls, until it goes back), so a grid longer than one
# call's 10 minutes runs without a deadline that cuts packs (whose checkpoints were too large to carry back).
#
#   bash tools/gpu_pool.sh start W GRID[@MIXERS[@SEEDS[@VOCABS]]] [...]   W processes (CUDA MPS on), each working
#                                                          through the grids in order, claiming packs largest first
#                                                          (sweep --claim; SEEDS: only the first this many seeds;
#                                                          VOCABS: comma-separated |V| subset)
#   bash tools/gpu_pool.sh wait SECONDS                  until the pool ends or SECONDS pass, then write the stores,
#                                                          the timings and the logs to OUT/pool.tgz; meanwhile
#                                                          watch.log (in the archive) gets GPU use, stored runs and
#                                                          CPU use every 30 s, and after a minute of 0% GPU every
#                                                          sweep dumps its stacks to its log
#
# State in .pool/ (git-ignored): GRID.jsonl stores (seeded from results/train/GRID.jsonl; FRESH=1: empty, for a
# timing run), their claims and checkpoints, logs/, and steps.jsonl (one line per process and grid: start, end, exit
# code; `python3 tools/grid_gpu_minutes.py GRID steps.jsonl --store ...` sums it). SWEEP_ARGS go to every sweep;
# DEVICE=cpu SKIP_INSTALL=1 runs the pool on the CPU (a local try of the script).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out/gpu}; mkdir -p "$OUT" .pool/logs
[ -n "${SKIP_INSTALL:-}" ] || python3 -c "import sys; sys.path.insert(0, '/tmp/site'); import mamba_ssm" 2>/dev/null \
  || python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu-wheels/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
SWEEPS='verify_constructions sweep --grid [^"]'  # the sweep processes (not their bash loops)

case ${1:-} in
  start)
    workers=$2; shift 2
    # CPU threads per process: a pack's Figure 1 decay histograms run on the CPU in float64, and W processes of
    # nproc OpenMP threads each left the GPU idle for minutes at a time (the seventh session's stacks: 38 of 40 there)
    export OMP_NUM_THREADS=$(( $(nproc) / workers > 0 ? $(nproc) / workers : 1 ))
    pgrep -x nvidia-cuda-mps >/dev/null || nvidia-cuda-mps-control -d || echo "MPS could not start"
    for g in "$@"; do
      name=${g%%@*}
      [ -f ".pool/$name.jsonl" ] || { [ -z "${FRESH:-}" ] && [ -f "results/train/$name.jsonl" ] \
        && cp "results/train/$name.jsonl" ".pool/$name.jsonl"; }
    done
    for i in $(seq "$workers"); do
      setsid nohup bash -c '
        for g in "$@"; do
          IFS=@ read -r name mixers seeds vocabs <<< "$g"
          start=$(date +%s.%N)
          python3 -m verify_constructions sweep --grid "$name" ${mixers:+--mixers $mixers} ${seeds:+--seeds $seeds} \
            ${vocabs:+--vocabs $vocabs} --claim --device "${DEVICE:-cuda}" --store ".pool/$name.jsonl" $SWEEP_ARGS
          rc=$?
          echo "{\"step\": \"sweep@$g@@pool\", \"start\": $start, \"end\": $(date +%s.%N), \"rc\": $rc}" >> .pool/steps.jsonl
        done' pool "$@" > ".pool/logs/p$i.log" 2>&1 < /dev/null &
    done
    sleep 2; echo "pool: $(pgrep -fc "$SWEEPS") sweep processes" ;;
  wait)
    end=$((SECONDS + $2)); idle=0
    while pgrep -f "$SWEEPS" >/dev/null && [ $SECONDS -lt $end ]; do
      util=$(timeout 10 nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits 2>/dev/null \
        | head -1)
      cpu=$(ps -o pcpu= -p "$(pgrep -d, -f "$SWEEPS")" | tr -s ' \n' ' ')
      runs=$(ls .pool/*.jsonl 2>/dev/null | grep -v steps | xargs cat 2>/dev/null | wc -l)
      echo "$(date +%T) gpu% MiB: ${util:-none} | runs: $runs | cpu%: $cpu" >> .pool/watch.log
      # a GPU idle for a minute while sweeps run: each sweep prints where it waits (faulthandler, SIGUSR1) to its log
      [ "${util%%,*}" = 0 ] && idle=$((idle + 1)) || idle=0
      [ $idle = 2 ] && pkill -USR1 -f "$SWEEPS" && echo "stalled: stacks in logs" >> .pool/watch.log
      sleep $(( end - SECONDS < 30 ? (end - SECONDS > 0 ? end - SECONDS : 0) : 30 ))
    done
    echo "pool: $(pgrep -fc "$SWEEPS") sweep processes still running"
    # one archive (a call returns at most 8 files): the stores, steps.jsonl, watch.log and the logs
    tar czf "$OUT/pool.tgz" -C .pool logs $(cd .pool && ls ./*.jsonl watch.log 2>/dev/null)
    tail -n 3 .pool/watch.log 2>/dev/null
    for f in .pool/*.jsonl; do echo "$f: $(wc -l < "$f") lines"; done
    tail -n 3 .pool/logs/*.log ;;
  *) echo "usage: gpu_pool.sh start W GRID[@MIXERS[@SEEDS[@VOCABS]]] ... | wait SECONDS"; exit 2 ;;
esac
