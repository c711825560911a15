#!/usr/bin/env bash
# Every benchmark, one after the other, printing the figures quoted in the README:
# script generation overhead and footprint, the pipeline against its lower bound with
# 500 polling dashboards, and the queue beside apalis and graphile-worker.
#   scripts/bench.sh [generate|pipeline|queue ...]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export CREVID_TEST_POSTGRES_URL="${CREVID_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
benches=("$@")
[ ${#benches[@]} -gt 0 ] || benches=(generate pipeline queue render)
for bench in "${benches[@]}"; do
  if [ "$bench" = queue ]; then
    # The apalis comparator is its own binary, outside the default workspace members.
    cargo build --release --locked -p crevid-apalis-bench
  fi
  echo "== $bench"
  cargo bench --locked -p crevid-server --bench "$bench"
done
