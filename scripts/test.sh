#!/usr/bin/env bash
# The test command (README "Test"): installs what the suite needs on a fresh Debian machine, then runs every
# test of the workspace. Safe to re-run; installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# The skip switches (README "Test"): only `1` skips, so any other value is dropped here; under CI a skip
# is refused, since CI runs every test. A skip asked for is said before the run and again after it.
skips=()
for var in RELAY_SKIP_REDIS_TESTS RELAY_SKIP_MOUNT_TESTS; do
  if [ "${!var-}" != 1 ]; then
    unset "$var"
  elif [ -n "${CI:-}" ] && [ "${CI,,}" != false ] && [ "${CI}" != 0 ]; then
    echo "$var=1 asks to skip tests, but CI is set and CI runs every test: unset $var" >&2
    exit 1
  else
    skips+=("$var")
  fi
done
if [ ${#skips[@]} -gt 0 ]; then
  warn_skips() {
    echo "NOTE: $(printf '%s=1 ' "${skips[@]}")- the tests skipped count as passed WITHOUT RUNNING (see SKIPPED lines)" >&2
  }
  warn_skips
  trap warn_skips EXIT
fi

need_apt=()
command -v cc >/dev/null 2>&1 || need_apt+=(build-essential)   # bundled SQLite is compiled from C
[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null 2>&1 || need_apt+=(nginx-light)   # tests/nginx.rs
[ -x "${CHROMIUM:-/usr/bin/chromium}" ] || need_apt+=(chromium)                       # tests/browser.rs
command -v chattr >/dev/null 2>&1 || need_apt+=(e2fsprogs)                           # tests/storage.rs
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)                  # the Redis-bus tests
command -v node >/dev/null 2>&1 || need_apt+=(nodejs)
command -v npm >/dev/null 2>&1 || need_apt+=(npm)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)                            # examples/webhook-receiver
if [ ${#need_apt[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
  # Debian starts the packaged nginx as a service on port 80; the tests run their own.
  if [[ " ${need_apt[*]} " == *" nginx-light "* ]]; then
    service nginx stop >/dev/null 2>&1 || nginx -s stop >/dev/null 2>&1 || true
  fi
  # Likewise the packaged redis-server on 6379: each Redis test starts its own on a free loopback port.
  if [[ " ${need_apt[*]} " == *" redis-server "* ]]; then
    service redis-server stop >/dev/null 2>&1 || true
  fi
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is required (https://rustup.rs); this machine has none" >&2
  exit 1
fi

# playwright-core drives the Debian Chromium above; it downloads no browser of its own.
if [ ! -d tests/browser/node_modules/playwright-core ] || [ tests/browser/package-lock.json -nt tests/browser/node_modules ]; then
  npm ci --prefix tests/browser --no-audit --no-fund
fi
# The JS client's dev dependencies (ws for Node, typescript for the type check); tests/js_client.rs runs
# its suite against this build.
if [ ! -d clients/js/node_modules/ws ] || [ clients/js/package-lock.json -nt clients/js/node_modules ]; then
  npm ci --prefix clients/js --no-audit --no-fund
fi

# The code is kept formatted (rustfmt.toml) and free of clippy warnings; both are checked before the tests.
for component in fmt clippy; do
  if ! cargo "$component" --version >/dev/null 2>&1; then
    rustup component add "$([ "$component" = fmt ] && echo rustfmt || echo clippy)" >&2 || {
      echo "cargo $component is required (rustup component add rustfmt clippy)" >&2
      exit 1
    }
  fi
done
cargo fmt --all --check
cargo clippy --workspace --locked --all-targets -- -D warnings

# The example webhook receiver's own tests (standard library only); tests/example_receiver.rs runs it
# beside real relays.
python3 -m unittest discover -s examples/webhook-receiver

cargo build --workspace --locked --all-targets
cargo test --workspace --locked
