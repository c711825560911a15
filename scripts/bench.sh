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
    # The apalis comparator is a workspace of its own (apalis 1.0 is on sqlx 0.9); its binary
    # goes to this target/release/, where server/benches/queue.rs runs it.
    cargo build --release --locked --manifest-path bench/apalis/Cargo.toml --target-dir target
  fi
  echo "== $bench"
  cargo bench --locked -p crevid-server --bench "$bench"
done
