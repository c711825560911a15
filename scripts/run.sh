#!/usr/bin/env bash
# Sets up what is missing, builds (release) and serves CREVID at http://127.0.0.1:3000 with
# SQLite under ./data and the offline providers. The first visit asks for the first admin.
# Extra arguments go to `crevid serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh --release
exec target/release/crevid serve "$@"
