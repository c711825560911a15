#!/usr/bin/env bash
# Builds the site and the server as `cargo leptos build` does, without cargo-leptos (which
# takes ~25 minutes to compile on a fresh machine):
#   1. the hydrate entry (root package) to WASM with cargo,
#   2. the pinned wasm-bindgen CLI → target/site/pkg/crevid.{js,wasm},
#   3. release only: npm's wasm-opt -Oz (binaryen; Debian's is too old),
#   4. style/main.css → target/site/pkg/crevid.css, public/ → target/site/, and a brotli
#      (.br) and gzip (.gz) copy of the WASM, JS and CSS for the server to send, each
#      named after its content (crevid.<hash>.wasm, listed in pkg/hash.txt),
#   5. the `crevid` server binary (unless --frontend-only).
#   scripts/build.sh [--release] [--frontend-only]
# The server finds target/site beside target/{debug,release}/crevid on its own.
# `cargo leptos watch` still works for development, with live reload.
set -euo pipefail
cd "$(dirname "$0")/.."

release=0
frontend_only=0
for arg in "$@"; do
  case "$arg" in
    --release) release=1 ;;
    --frontend-only) frontend_only=1 ;;
    *)
      echo "usage: scripts/build.sh [--release] [--frontend-only]" >&2
      exit 2
      ;;
  esac
done

# The same names as [[workspace.metadata.leptos]] in Cargo.toml (output-name, site-root,
# site-pkg-dir, style-file, assets-dir, lib-profile-release).
name=crevid
site=target/site
pkg="$site/pkg"
if [ "$release" = 1 ]; then
  wasm_profile=wasm-release
  wasm_dir=wasm-release
  server_flags=(--release)
else
  wasm_profile=dev
  wasm_dir=debug
  server_flags=()
fi

step() { printf '\033[1;34m[build]\033[0m %s\n' "$*"; }

step "WASM (crevid-frontend, profile $wasm_profile)"
cargo build --locked --package crevid-frontend --lib --target wasm32-unknown-unknown \
  --no-default-features --features hydrate --profile "$wasm_profile"

# Built beside the site and moved in at the end, so a server that is running never serves
# a JS file from one build with the WASM of another.
mkdir -p target
staging=$(mktemp -d target/site-pkg.XXXXXX)
chmod 755 "$staging"
trap 'rm -rf "$staging"' EXIT
step "wasm-bindgen"
wasm-bindgen --target web --no-typescript --out-name "$name" --out-dir "$staging" \
  "target/wasm32-unknown-unknown/$wasm_dir/crevid_frontend.wasm"
# leptos's HydrationScripts loads `{output-name}.wasm`, as cargo-leptos names it.
mv "$staging/${name}_bg.wasm" "$staging/$name.wasm"
if [ "$release" = 1 ]; then
  step "wasm-opt -Oz"
  node_modules/.bin/wasm-opt -Oz --enable-bulk-memory --enable-nontrapping-float-to-int \
    "$staging/$name.wasm" -o "$staging/$name.wasm"
fi
cp style/main.css "$staging/$name.css"
# Precompressed copies, sent to browsers that accept them (the server picks .br, then .gz):
# brotli's best setting for release builds (slow, once), a quick one while developing.
quality=5
[ "$release" = 1 ] && quality=11
step "brotli (quality $quality) and gzip -9"
for file in "$staging/$name.wasm" "$staging/$name.js" "$staging/$name.css"; do
  gzip -9 --keep --no-name --force "$file"
done
node -e '
  const zlib = require("zlib"), fs = require("fs");
  const [quality, ...files] = process.argv.slice(1);
  for (const file of files) {
    const data = fs.readFileSync(file);
    fs.writeFileSync(file + ".br", zlib.brotliCompressSync(data, { params: {
      [zlib.constants.BROTLI_PARAM_QUALITY]: Number(quality),
      [zlib.constants.BROTLI_PARAM_SIZE_HINT]: data.length,
    } }));
  }' "$quality" "$staging/$name.wasm" "$staging/$name.js" "$staging/$name.css"

# Each file named after its content (16 hex digits of its SHA-256) and listed in hash.txt
# as cargo-leptos's hash-files option does: Leptos's HydrationScripts and HashedStylesheet
# then name these files in the page, and the server lets browsers keep them for a year.
: > "$staging/hash.txt"
for ext in js wasm css; do
  hash=$(sha256sum "$staging/$name.$ext" | cut -c1-16)
  for suffix in "" .br .gz; do
    mv "$staging/$name.$ext$suffix" "$staging/$name.$hash.$ext$suffix"
  done
  echo "$ext: $hash" >> "$staging/hash.txt"
done

mkdir -p "$site"
cp -R public/. "$site/"
rm -rf "$pkg.old"
[ -d "$pkg" ] && mv "$pkg" "$pkg.old"
mv "$staging" "$pkg"
rm -rf "$pkg.old"
trap - EXIT

if [ "$frontend_only" = 0 ]; then
  step "server (crevid)"
  cargo build --locked --package crevid-server --bin crevid "${server_flags[@]}"
fi
step "done: $site"
