#!/usr/bin/env bash
# Issue 24's CLI reproductions, run as written (RESULTS.md, "The issue's reproductions"): each
# command's exit status, its first stderr line and its count of stderr lines, and whether the
# file it used to destroy is unchanged.
#   bash experiments/benchmarks/cli_reproductions.sh
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
NAS=${NAS:-$ROOT/.venv/bin/nas}
SHARED=${SHARED:-$ROOT/../shared}
T=$(mktemp -d); cd "$T"

run() { "$@" > "$T"/r.out 2> "$T"/r.err; local c=$?; echo "exit $c :: $*"; echo "    $(head -n1 "$T"/r.err | cut -c1-220)"; echo "    stderr lines: $(wc -l < "$T"/r.err)"; }
$NAS search --space tiny -O macs -O params --engine predictor --n-trials 5 --study S --storage X.journal --no-progress > /dev/null 2>&1
cp X.journal X.journal.bak
run $NAS report --study S --storage X.journal --out X.journal
cmp -s X.journal X.journal.bak && echo "    journal unchanged"
$NAS supernet init --space tiny --out trained.safetensors > /dev/null 2>&1; sha256sum trained.safetensors > t.sum
run $NAS supernet init --space tiny --out trained.safetensors
sha256sum -c --quiet t.sum && echo "    checkpoint unchanged"
cp $SHARED/ofa/*.pth . 2>/dev/null; P=$(ls *.pth 2>/dev/null | head -1)
if [ -n "$P" ]; then sha256sum "$P" > p.sum; run $NAS accuracy import-ofa "$P" --out "$P"; sha256sum -c --quiet p.sum && echo "    input unchanged"; fi
$NAS export --space tiny --checkpoint trained.safetensors --arch '{"ks":[3,3,3,3],"e":[2,2,2,2],"d":[2,2],"r":16}' --out EXP > /dev/null 2>&1 || echo "    (export for finetune failed)"
mkdir D; run $NAS finetune EXP --out D --work D --epochs 1
run $NAS finetune EXP --out EXP/sub --epochs 1
$NAS latency measure --help > /dev/null 2>&1
python3 -c "import sqlite3; c=sqlite3.connect('opt.sqlite'); c.close()"
$NAS search --space tiny -O macs -O params --engine predictor --n-trials 5 --study S2 --storage sqlite:///opt.sqlite --no-progress > /dev/null 2>&1
sha256sum opt.sqlite > o.sum
run $NAS latency export --out m.csv --db sqlite:///opt.sqlite
sha256sum -c --quiet o.sum && echo "    optuna db unchanged"
echo '{"arch": {"ks": [3, 3, 3, 3], "e": [2, 2, 2, 2], "d": [2, 2], "r": 16}, "latency_ms": 0.05}' > m.jsonl
$NAS latency import m.jsonl --device cpu-1t --space tiny --db sqlite:///latency.sqlite > /dev/null 2>&1; sha256sum latency.sqlite > l.sum
run $NAS results --storage sqlite:///latency.sqlite
sha256sum -c --quiet l.sum && echo "    latency db unchanged"
head -c 300 X.journal > cut.journal
run $NAS results --storage cut.journal
printf 'arch,latency_ms\n' > /dev/null
run $NAS latency predict -d cpu-1t -s tiny --arch @/dev/zero
run $NAS search --config /dev/zero
run $NAS latency predict -d cpu-1t -s tiny --arch-file /dev/zero
run $NAS spaces sample ofa_mbv3 --n 1000000000
printf 'space: tiny\nspace: tiny\n' > dup.yaml
run $NAS search --config dup.yaml
run $NAS search --nope
run $NAS export
run $NAS spaces sample
echo "dir $T"
