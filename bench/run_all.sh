#!/usr/bin/env bash
# Run every benchmark one after another on a quiet machine; outputs land in bench/out/ (figures for docs/benchmarks.md).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
mkdir -p bench/out
run() { local name=$1; shift; echo "== $name: $*"; "$@" > "bench/out/$name.txt" 2>&1; echo "   exit $? ($(tail -n 1 "bench/out/$name.txt"))"; }
run digits $PY -m bench.bench_digits --requests 3000
run batching $PY -m bench.bench_batching --requests 800
run backends $PY -m bench.bench_backends --threads 2
run minilm_int8 $PY -m bench.bench_minilm_int8
run llm $PY -m bench.bench_llm --big --tokens 128 --streams 4 --threads 2
bash build/build_binary.sh > bench/out/build_binary.txt 2>&1
run startup $PY -m bench.bench_startup --runs 5
