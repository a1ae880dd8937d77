#!/usr/bin/env bash
# The full pgqueue benchmark, results kept in benchmarks/results/latest.json.
#
# Runs against $PGQUEUE_DATABASE_URL, or the embedded development database when
# it is unset; it only writes to its own schemas (pgqueue_bench, pgqueue_bench_1m).
# Extra arguments go to `pgqueue bench`, e.g. ./benchmarks/run.sh --runs 5 --skip-1m
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p benchmarks/results
exec python3 -m pgqueue bench --json benchmarks/results/latest.json "$@"
