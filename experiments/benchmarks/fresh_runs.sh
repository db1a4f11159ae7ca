#!/usr/bin/env bash
# `make test` run after run from a fresh clone of this repository's main, with ../shared beside
# it, as CI runs it (a PostgreSQL server on loopback, CI=true): stops at the first failure.
# Prints one line a run (exit status, seconds, pytest's summary); each run's log and JUnit XML
# (per-test durations) go to OUT.
#   bash experiments/benchmarks/fresh_runs.sh [RUNS=5] [OUT=/tmp/fresh_runs]
set -u
RUNS=${1:-5}
OUT=${2:-/tmp/fresh_runs}
SRC=$(cd "$(dirname "$0")/../.." && pwd)
WORK=$(mktemp -d)
mkdir -p "$OUT"
ln -s "$(cd "$SRC/../shared" && pwd)" "$WORK/shared"
git clone -q "$SRC" "$WORK/main"
cd "$WORK/main" || exit 1
echo "commit $(git rev-parse --short HEAD) · $(lscpu | sed -n 's/^Model name: *//p') · $(nproc) cores · $(date -u '+%F %H:%M UTC')"
eval "$(bash .ci/postgres.sh)"
export CI=true
for i in $(seq 1 "$RUNS"); do
  start=$(date +%s)
  make test PYTEST_ARGS="--junitxml=$OUT/junit_$i.xml" > "$OUT/run_$i.log" 2>&1
  rc=$?
  echo "run $i: exit $rc, $(( $(date +%s) - start )) s, $(tail -n 1 "$OUT/run_$i.log")"
  [ "$rc" -ne 0 ] && exit "$rc"
done
