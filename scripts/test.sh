#!/usr/bin/env bash
# Sets up what is missing, then runs every test: Rust unit and integration tests on SQLite
# and Postgres, and the browser tests in headless Chromium.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test

# Postgres: CREVID_TEST_POSTGRES_URL, default the local server. Without one the Postgres
# tests are skipped (said once, here), except under CI=true where that is a failure.
export CREVID_TEST_POSTGRES_URL="${CREVID_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
pg_hostport=$(printf '%s' "$CREVID_TEST_POSTGRES_URL" | sed -E 's#^[a-z]+://([^@/]*@)?([^/:?]+)(:([0-9]+))?.*#\2 \4#')
read -r pg_host pg_port <<<"$pg_hostport"
if ! timeout 3 bash -c "exec 3<>/dev/tcp/${pg_host}/${pg_port:-5432}" 2>/dev/null; then
  if [ "${CI:-}" = "true" ]; then
    echo "Postgres is required under CI=true, but ${pg_host}:${pg_port:-5432} is unreachable" >&2
    exit 1
  fi
  echo "Postgres unreachable at ${pg_host}:${pg_port:-5432}: skipping the Postgres tests (SQLite tests still run)"
  export CREVID_TEST_SKIP_POSTGRES=1
fi

# The WASM and CSS the browser tests load; the server is built by cargo test below.
cargo leptos build --frontend-only
cargo test --locked
cargo build --locked --bins
node --test end2end/tests/
