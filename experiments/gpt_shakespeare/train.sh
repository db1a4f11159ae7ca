#!/usr/bin/env bash
# Train (or resume) the Shakespeare language-model supernet, then ship it in float16.
#   nohup bash experiments/gpt_shakespeare/train.sh > runs/gpt_shakespeare.log 2>&1 &
# Environment: CONFIG (default experiments/gpt_shakespeare/config.yaml), BUDGET (minutes,
# default the config's budget_minutes), THREADS (torch threads, default 2).
set -euo pipefail
cd "$(dirname "$0")/../.."
CONFIG=${CONFIG:-experiments/gpt_shakespeare/config.yaml}
args=(train --config "$CONFIG" --resume --no-progress --threads "${THREADS:-2}")
if [[ -n "${BUDGET:-}" ]]; then args+=(--budget-minutes "$BUDGET"); fi
mkdir -p runs
exec .venv/bin/nas "${args[@]}"
