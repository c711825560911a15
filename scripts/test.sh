#!/usr/bin/env bash
# Sets up what is missing, then runs every test: Rust unit and integration tests on SQLite
# and Postgres, and the browser tests in headless Chromium.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test

# Postgres: CREVID_TEST_POSTGRES_URL, default the local server. Without one the Postgres
# tests are skipped (said once, here), except under CI=true where that is a failure.
export CREVID_TEST_POSTGRES_URL="${CREVID_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
postgres_ok() {
  if command -v psql >/dev/null; then
    timeout 5 psql "$CREVID_TEST_POSTGRES_URL" -Atqc 'select 1' >/dev/null 2>&1
  else
    # Without a client, at least check that something listens there.
    local hostport host port
    hostport=$(printf '%s' "$CREVID_TEST_POSTGRES_URL" | sed -E 's#^[a-z]+://([^@/]*@)?([^/:?]+)(:([0-9]+))?.*#\2 \4#')
    read -r host port <<<"$hostport"
    timeout 3 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$host" "${port:-5432}" 2>/dev/null
  fi
}
if ! postgres_ok; then
  if [ "${CI:-}" = "true" ]; then
    echo "Postgres is required under CI=true, but $CREVID_TEST_POSTGRES_URL does not answer" >&2
    exit 1
  fi
  echo "Postgres does not answer at $CREVID_TEST_POSTGRES_URL: skipping the Postgres tests (SQLite tests still run)"
  export CREVID_TEST_SKIP_POSTGRES=1
fi

# The WASM and CSS the browser tests load; the server is built by cargo test below.
scripts/build.sh --frontend-only
cargo test --locked
cargo build --locked --bins
# The benchmarks are not run here, but they must keep compiling against the code they measure.
cargo build --locked -p crevid-server --benches
node --test end2end/tests/
