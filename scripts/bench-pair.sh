#!/usr/bin/env bash
# Reproduces a recorded figure: builds release binaries, starts two canvas-relay instances on one fresh
# SQLite file (loopback ports 9101 and 9102), runs `load-test <args>` against both, and stops them.
#   scripts/bench-pair.sh latency --duration 30s
#   scripts/bench-pair.sh throughput --senders 10 --window 64 --duration 10s
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --workspace --locked >&2
dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"' EXIT
for port in 9101 9102; do
  ./target/release/canvas-relay serve --listen "127.0.0.1:$port" --db "$dir/relay.db" 2>"$dir/$port.log" &
done
for port in 9101 9102; do
  for _ in $(seq 50); do grep -q "listening on" "$dir/$port.log" && break; sleep 0.1; done
done
scenario=$1; shift
./target/release/load-test "$scenario" --targets 127.0.0.1:9101,127.0.0.1:9102 "$@"
