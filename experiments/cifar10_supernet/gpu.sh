#!/usr/bin/env bash
# The CIFAR-10 experiment on one GPU machine, in calls of at most 10 minutes (the `device`
# tool's H200: its own python3 with PyTorch, nothing to install; the dataset travels in
# .data/, which .git/info/exclude ignores, named in the call's `carry`).
#
#   experiments/cifar10_supernet/gpu.sh start        # decode the data once, then start, each in
#                                                    # its own process session so that it runs
#                                                    # on between calls while the machine is held:
#                                                    #   training -> analyze.py -> scratch table
#                                                    #   scratch.py, one process per subnet
#   experiments/cifar10_supernet/gpu.sh watch SECS   # follow them for SECS (or until done),
#                                                    # then copy logs, tables and the latest
#                                                    # checkpoint (in <16 MB parts) to $OUT
#
# Everything is resumable (per-epoch checkpoints, cached proxy scores), so `start` again on a
# machine that holds the run folder continues where it stopped. Here (no GPU):
#   cat OUT/ckpt.part-* > supernet.safetensors
# Environment: CONFIG (default config_gpu.yaml here), PYTHON (default python3),
# SCRATCH_ARCHS (default smallest middle random:0), DEVICE (default cuda), ANALYZE_ARGS.
set -uo pipefail
cd "$(dirname "$0")/../.."
HERE=experiments/cifar10_supernet
CONFIG=${CONFIG:-$HERE/config_gpu.yaml}
PY=${PYTHON:-python3}
SCRATCH_ARCHS=${SCRATCH_ARCHS:-smallest middle random:0}
DEVICE=${DEVICE:-cuda}
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 NAS_CACHE_DIR=${NAS_CACHE_DIR:-/tmp/nas-cache}
[[ -f $CONFIG ]] || { echo "error: CONFIG $CONFIG: no such file" >&2; exit 2; }
RUN=$("$PY" -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1])).get("out") or "")' "$CONFIG" 2>/dev/null) \
  && [[ -n $RUN ]] || { echo "error: CONFIG $CONFIG has no 'out' folder" >&2; exit 2; }
LOGS=$RUN/logs
mkdir -p "$LOGS"

say() { echo "[$(date +%H:%M:%S)] $*"; }

pipeline() {  # training, then the analysis, then the scratch table with the inherited side
  say "training ($CONFIG)"
  OMP_NUM_THREADS=6 "$PY" -c "
import sys
from nas.train import load_config, train_supernet
train_supernet(load_config(sys.argv[1]), resume=True, device=sys.argv[2], progress=False)
" "$CONFIG" "$DEVICE" || { say "training failed"; return 1; }
  if [[ ! -f $RUN/analysis/results.json ]]; then
    say "analysis"
    OMP_NUM_THREADS=6 "$PY" "$HERE/analyze.py" --run "$RUN" --device "$DEVICE" ${ANALYZE_ARGS:-} \
      || { say "analysis failed"; return 1; }
  fi
  say "waiting for the from-scratch runs"
  while pgrep -f "$HERE/scratch.py" > /dev/null; do sleep 10; done
  # shellcheck disable=SC2086
  "$PY" "$HERE/scratch.py" --config "$CONFIG" --device "$DEVICE" \
    --archs "$(echo $SCRATCH_ARCHS | tr ' ' ',')"
  say "all done"
  touch "$RUN/DONE"
}

collect() {
  [[ -n ${OUT:-} ]] || { say "OUT is not set: nothing copied"; return 0; }
  tar czf "$OUT/results.tar.gz" --ignore-failed-read "$LOGS" "$RUN/metrics.csv" \
    "$RUN/config.yaml" "$RUN/analysis" "$RUN/scratch"/*.json "$RUN/scratch/summary.md" \
    2>/dev/null
  local ck=$RUN/supernet.safetensors
  if [[ ! -f $ck && -f $RUN/checkpoints/latest.json ]]; then
    ck=$RUN/checkpoints/$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["supernet"])' \
      "$RUN/checkpoints/latest.json")
  fi
  if [[ -f $ck ]]; then
    split -b 15M -d "$ck" "$OUT/ckpt.part-"
    say "copied $ck ($(du -h "$ck" | cut -f1)) in parts"
  fi
}

case "${1:-}" in
  start)
    if [[ ! -e ../shared/data/cifar10-jpeg.tar.gz && -f .data/cifar10-jpeg.tar.gz ]]; then
      mkdir -p ../shared/data && ln -sf "$PWD/.data/cifar10-jpeg.tar.gz" ../shared/data/
    fi
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    "$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())'
    say "decoding the data once (cached in $NAS_CACHE_DIR)"
    "$PY" -c "
import sys
from nas.train import load_config, load_data
print(load_data(load_config(sys.argv[1])).describe())
" "$CONFIG" || exit 1
    if pgrep -f "$HERE/gpu.sh _pipeline" > /dev/null; then
      say "the pipeline is running already"
    else
      setsid nohup "$0" _pipeline >> "$LOGS/pipeline.log" 2>&1 < /dev/null &
      say "pipeline started (log $LOGS/pipeline.log)"
    fi
    for a in $SCRATCH_ARCHS; do
      if ! pgrep -f "scratch.py --config $CONFIG --device $DEVICE --archs $a\$" > /dev/null; then
        OMP_NUM_THREADS=3 setsid nohup "$PY" "$HERE/scratch.py" --config "$CONFIG" \
          --device "$DEVICE" --archs "$a" >> "$LOGS/scratch-${a/:/}.log" 2>&1 < /dev/null &
      fi
    done
    say "scratch runs started: $SCRATCH_ARCHS" ;;
  _pipeline) pipeline ;;
  watch)
    end=$((SECONDS + ${2:-300}))
    # until done, or until the pipeline has stopped (a failure: its log says which step)
    while ((SECONDS < end)) && [[ ! -f $RUN/DONE ]] \
        && pgrep -f "$HERE/gpu.sh _pipeline" > /dev/null; do sleep 10; done
    for f in "$LOGS"/*.log; do echo "--- $f"; tail -n 6 "$f"; done
    nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader
    collect ;;
  *) echo "usage: $0 start | watch SECONDS" >&2; exit 2 ;;
esac
