#!/usr/bin/env bash
# Installs whatever CREVID needs and is missing; safe to run again (each step checks first).
#   scripts/setup.sh         what running the app needs
#   scripts/setup.sh --test  plus what the tests need (Chromium for the browser tests)
# Everything comes from Debian's packages, crates.io, the Rust toolchain's own targets and
# the npm registry; nothing else is downloaded.
set -euo pipefail
cd "$(dirname "$0")/.."

for_tests=0
[ "${1:-}" = "--test" ] && for_tests=1

step() { printf '\033[1;34m[setup]\033[0m %s\n' "$*"; }

# Debian packages: ffmpeg (video render, status check), espeak-ng (offline narration),
# fonts for cards and subtitles in any script (DejaVu for Latin, Greek and Cyrillic; Noto
# for Arabic, Hebrew, Indic scripts and Thai; Noto CJK; Symbola's monochrome emoji, which
# libass can draw), Node.js + npm (wasm-opt, browser tests),
# a C compiler for -sys crates, Chromium for the browser tests.
apt_missing=()
command -v ffmpeg >/dev/null || apt_missing+=(ffmpeg)
command -v espeak-ng >/dev/null || apt_missing+=(espeak-ng)
[ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || apt_missing+=(fonts-dejavu-core)
[ -e /usr/share/fonts/truetype/noto/NotoSansArabic-Bold.ttf ] || apt_missing+=(fonts-noto-core)
[ -e /usr/share/fonts/opentype/noto/NotoSansCJK-Bold.ttc ] || apt_missing+=(fonts-noto-cjk)
[ -e /usr/share/fonts/truetype/ancient-scripts/Symbola_hint.ttf ] || apt_missing+=(fonts-symbola)
command -v node >/dev/null || apt_missing+=(nodejs)
command -v npm >/dev/null || apt_missing+=(npm)
command -v cc >/dev/null || apt_missing+=(gcc libc6-dev)
command -v pkg-config >/dev/null || apt_missing+=(pkg-config)
if [ "$for_tests" = 1 ]; then
  command -v chromium >/dev/null || apt_missing+=(chromium)
  # Python with venv for the test tools from PyPI (scripts/test-requirements.txt).
  command -v python3 >/dev/null || apt_missing+=(python3)
  python3 -c 'import venv, ensurepip' 2>/dev/null || apt_missing+=(python3-venv)
fi
if [ ${#apt_missing[@]} -gt 0 ]; then
  step "apt-get install ${apt_missing[*]}"
  sudo_cmd=()
  [ "$(id -u)" = 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${apt_missing[@]}"
fi

# The WASM target for the hydrated front end.
if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  step "rustup target add wasm32-unknown-unknown"
  rustup target add wasm32-unknown-unknown
fi

# scripts/build.sh does what `cargo leptos build` does, so cargo-leptos (~25 minutes to
# compile) is not needed; install it by hand for `cargo leptos watch` (see the README).
# The wasm-bindgen CLI must be exactly the locked version of the crate.
# No --locked: the CLI's own lock file names a crate version the registry lacks.
wbg_version=$(awk '$0 == "name = \"wasm-bindgen\"" { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)
if [ -z "$wbg_version" ]; then
  echo "setup: no wasm-bindgen version found in Cargo.lock" >&2
  exit 1
fi
if ! wasm-bindgen --version 2>/dev/null | grep -q " ${wbg_version}$"; then
  step "cargo install wasm-bindgen-cli ${wbg_version}"
  cargo install wasm-bindgen-cli --version "$wbg_version"
fi

# npm: binaryen's wasm-opt for release WASM (Debian's is too old) and playwright-core.
if [ ! -x node_modules/.bin/wasm-opt ] || [ ! -d node_modules/playwright-core ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  step "npm ci"
  npm ci --no-audit --no-fund --loglevel=error
fi

# PyPI, for the tests only (scripts/test-requirements.txt: the Prometheus text parser,
# schemathesis, standardwebhooks, moto's S3 server), in a virtual environment of the
# project's own (target/pytools), never the system's Python.
if [ "$for_tests" = 1 ]; then
  stamp=target/pytools/.requirements
  if [ ! -x target/pytools/bin/python ] || ! cmp -s scripts/test-requirements.txt "$stamp"; then
    step "python3 -m venv target/pytools; pip install -r scripts/test-requirements.txt"
    mkdir -p target
    python3 -m venv target/pytools
    target/pytools/bin/python -m pip install --quiet --disable-pip-version-check -r scripts/test-requirements.txt
    cp scripts/test-requirements.txt "$stamp"
  fi
fi
