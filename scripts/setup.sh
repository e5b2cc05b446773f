#!/usr/bin/env bash
# Installs what building the project needs, skipping each step whose result is already there:
# the wasm32 target, and wasm-bindgen-cli (the exact version the crate pins) and wasm-pack.
# With --test it also installs what the tests need: Chromium and its driver, Firefox ESR (the
# second browser of the end-to-end tests), iproute2 for the test network namespace, ffmpeg for
# test media, and the end-to-end test packages from e2e/package-lock.json.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  say "adding the wasm32-unknown-unknown target"
  rustup target add wasm32-unknown-unknown
fi

bindgen_version=$(sed -n 's/^wasm-bindgen = "=\([0-9.]*\)".*/\1/p' Cargo.toml)
if [ -z "$bindgen_version" ]; then
  echo "setup: cannot read the pinned wasm-bindgen version from Cargo.toml" >&2
  exit 1
fi
if [ "$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')" != "$bindgen_version" ]; then
  say "installing wasm-bindgen-cli $bindgen_version (a few minutes, once)"
  # Not --locked: its lock file names a webpki-roots version the registry may not carry.
  cargo install wasm-bindgen-cli --version "$bindgen_version" --force
fi
if ! command -v wasm-pack >/dev/null; then
  say "installing wasm-pack (a few minutes, once)"
  cargo install --locked wasm-pack
fi

if [ "${1:-}" = "--test" ]; then
  missing=()
  [ -x /usr/bin/chromium ] || missing+=(chromium)
  [ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
  [ -x /usr/bin/firefox-esr ] || missing+=(firefox-esr)
  command -v ip >/dev/null || missing+=(iproute2)
  command -v ffmpeg >/dev/null || missing+=(ffmpeg)
  command -v turnserver >/dev/null || missing+=(coturn)
  command -v redis-server >/dev/null || missing+=(redis-server)
  if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q "${missing[@]}"
  fi
  if ! rustup component list --installed | grep -q '^clippy'; then
    rustup component add clippy
  fi
  if ! rustup component list --installed | grep -q '^rustfmt'; then
    rustup component add rustfmt
  fi
  if [ ! -d e2e/node_modules/@playwright/test ] || [ ! -d e2e/node_modules/puppeteer-core ] || [ e2e/package-lock.json -nt e2e/node_modules/.package-lock.json ]; then
    say "installing the end-to-end test packages"
    # puppeteer-core drives Debian's firefox-esr: it must not try to download a browser.
    (cd e2e && PUPPETEER_SKIP_DOWNLOAD=1 npm ci --no-audit --no-fund)
  fi
fi
