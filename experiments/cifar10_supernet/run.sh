#!/usr/bin/env bash
# The CIFAR-10 supernet experiment, in the background, resumable, logging to OUT/run.log.
#
#   experiments/cifar10_supernet/run.sh               # train (~95 min), then analyze (~45 min)
#   experiments/cifar10_supernet/run.sh scratch       # from-scratch baselines (~80 min)
#   experiments/cifar10_supernet/run.sh searchbench   # samplers' hypervolume on this supernet
#                                                     # (experiments/benchmarks/search.py --parts hv)
#   experiments/cifar10_supernet/run.sh all           # train, analyze, searchbench, scratch
#   CONFIG=experiments/cifar10_supernet/smoke.yaml experiments/cifar10_supernet/run.sh all
#                                                     # the smoke version (~5 min)
#
# Stop it with `kill -- -$(cat OUT/run.pid)` (the whole process group).
# Run it again after an interruption (crash, reboot, kill): training continues from its last
# epoch checkpoint (at most the epoch in progress is lost), the analysis reuses its cached
# scores, and from-scratch runs continue from their last epoch. FOREGROUND=1 stays attached.
# Environment: CONFIG (default config.yaml here), NAS (the nas command, default .venv/bin/nas),
# PYTHON (default .venv/bin/python), NICE (default 10), TRAIN_ARGS (extra `nas train` options,
# e.g. "--workers 2" or "--torch-device cuda").
set -euo pipefail
cd "$(dirname "$0")/../.."

STEPS=${1:-default}
case "$STEPS" in
  default) STEPS="train analyze" ;;
  all) STEPS="train analyze searchbench scratch" ;;
  train|analyze|scratch|searchbench) ;;
  *) echo "usage: $0 [train|analyze|scratch|searchbench|all]  (default: train, then analyze)" >&2
     exit 2 ;;
esac

CONFIG=${CONFIG:-experiments/cifar10_supernet/config.yaml}
PYTHON=${PYTHON:-.venv/bin/python}
NAS=${NAS:-.venv/bin/nas}
NICE=${NICE:-10}
HERE=experiments/cifar10_supernet
OUT=$("$PYTHON" -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))["out"])' "$CONFIG")
mkdir -p "$OUT"
LOG="$OUT/run.log"
PIDFILE="$OUT/run.pid"

if [[ -z "${_NAS_RUN_CHILD:-}" ]]; then
  if [[ -f "$PIDFILE" ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    echo "a run is already going on (pid $(cat "$PIDFILE")); follow it with: tail -f $LOG" >&2
    exit 1
  fi
  if [[ -n "${FOREGROUND:-}" ]]; then
    echo $$ > "$PIDFILE"
    _NAS_RUN_CHILD=1 exec "$0" "$@"
  fi
  # its own session, so that one signal to the group stops the script and what it runs
  _NAS_RUN_CHILD=1 setsid nohup "$0" "$@" >> "$LOG" 2>&1 < /dev/null &
  echo $! > "$PIDFILE"
  echo "started (pid $!): steps '$STEPS', config $CONFIG, log $LOG"
  echo "follow: tail -f $LOG    stop: kill -- -$! (then run this again to resume)"
  exit 0
fi

if [[ -n "${FOREGROUND:-}" ]]; then
  exec > >(tee -a "$LOG") 2>&1
fi

echo "=== $(date -Is) run.sh $STEPS ($CONFIG) ==="
for step in $STEPS; do
  case "$step" in
    train)
      if [[ -f "$OUT/supernet.safetensors" ]]; then
        echo "train: done already ($OUT/supernet.safetensors)"
      else
        # shellcheck disable=SC2086
        nice -n "$NICE" "$NAS" train --config "$CONFIG" --resume --no-progress ${TRAIN_ARGS:-}
      fi ;;
    analyze)
      if [[ -f "$OUT/analysis/results.json" ]]; then
        echo "analyze: done already ($OUT/analysis/report.md)"
      else
        nice -n "$NICE" "$PYTHON" "$HERE/analyze.py" --run "$OUT" ${ANALYZE_ARGS:-}
      fi ;;
    scratch)
      nice -n "$NICE" "$PYTHON" "$HERE/scratch.py" --config "$CONFIG" ${SCRATCH_ARGS:-} ;;
    searchbench)
      if [[ -f "$OUT/searchbench.md" ]]; then
        echo "searchbench: done already ($OUT/searchbench.md)"
      else
        # shellcheck disable=SC2086
        nice -n "$NICE" "$PYTHON" experiments/benchmarks/search.py --parts hv \
          --checkpoint "$OUT/supernet.safetensors" \
          --proxy "predictor:path=$OUT/analysis/accuracy_mlp.json" \
          --work "$OUT/searchbench" ${SEARCHBENCH_ARGS:-} > "$OUT/searchbench.tmp" \
          && mv "$OUT/searchbench.tmp" "$OUT/searchbench.md"
      fi ;;
  esac
done
echo "=== $(date -Is) finished: $STEPS ==="
rm -f "$PIDFILE"
