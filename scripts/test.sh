#!/usr/bin/env bash
# The test command (README "Test"): installs what the suite needs on a fresh Debian machine, then runs every
# test of the workspace. Safe to re-run; installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v cc >/dev/null 2>&1 || need_apt+=(build-essential)   # bundled SQLite is compiled from C
if [ ${#need_apt[@]} -gt 0 ]; then
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}"
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is required (https://rustup.rs); this machine has none" >&2
  exit 1
fi

cargo build --workspace --locked --all-targets
cargo test --workspace --locked
