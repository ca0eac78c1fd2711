#!/usr/bin/env bash
# Each instance's RSS every 10 s while two release instances on one fresh file take a flat-out `load-test
# throughput` run, with /metrics never scraped: memory that grows with traffic rather than with connections
# shows here.
#   scripts/rss-under-load.sh [SECONDS]      (default 60)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --workspace --locked >&2
seconds=${1:-60}
dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"' EXIT
pids=()
for port in 9101 9102; do
  RELAY_WORKER_THREADS=1 ./target/release/canvas-relay serve --listen "127.0.0.1:$port" --db "$dir/relay.db" \
    --rate-limit 0 2>"$dir/$port.log" &
  pids+=($!)
done
for port in 9101 9102; do
  for _ in $(seq 50); do grep -q "listening on" "$dir/$port.log" && break; sleep 0.1; done
done
rss() { echo "$(ps -o rss= -p "${pids[0]}") $(ps -o rss= -p "${pids[1]}")"; }
echo "RSS KiB (9101 9102) at start: $(rss)"
env TOKIO_WORKER_THREADS=2 ./target/release/load-test throughput --targets 127.0.0.1:9101,127.0.0.1:9102 \
  --senders 10 --window 64 --duration "${seconds}s" >"$dir/load.txt" 2>&1 &
load=$!
for at in $(seq 10 10 "$seconds"); do
  sleep 10
  echo "RSS KiB (9101 9102) at ${at} s: $(rss)"
done
wait "$load"
grep -E 'sent' "$dir/load.txt"
