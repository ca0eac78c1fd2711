#!/usr/bin/env bash
# What keeping history costs (issue 29): one release instance on a fresh store, --clients clients updating
# objects flat out on one canvas (`load-test contention`) for DURATION, with --history-retention 7d and 0 in
# turn, ROUNDS times. Prints, per run: object ops acked per second, and once the log has expired
# (--message-ttl 2s, cleanup every 500 ms) the bytes the store holds per op acked (the SQLite file's pages in
# use after a checkpoint; Redis's used_memory less an empty server's).
#   scripts/history-cost.sh                 (SQLite file)
#   BUS=redis scripts/history-cost.sh       (a fresh redis-server, AOF off: memory is what is measured)
#   ROUNDS=3 DURATION=20s CLIENTS=4 scripts/history-cost.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --workspace --locked >&2
relay=${RELAY_BIN:-./target/release/canvas-relay}
rounds=${ROUNDS:-3}
duration=${DURATION:-20s}
clients=${CLIENTS:-4}
bus=${BUS:-sqlite}

# One run: prints "retention ops_per_second bytes_per_op".
run() {
  local retention=$1 dir storage baseline=0 used
  dir=$(mktemp -d)
  storage=(--db "$dir/relay.db")
  if [ "$bus" = redis ]; then
    redis-server --port 9119 --bind 127.0.0.1 --dir "$dir" --save "" --appendonly no >"$dir/redis.log" 2>&1 &
    for _ in $(seq 50); do redis-cli -p 9119 ping >/dev/null 2>&1 && break; sleep 0.1; done
    baseline=$(redis-cli -p 9119 info memory | awk -F: '/^used_memory:/ {print $2+0}')
    storage=(--bus redis://127.0.0.1:9119/0)
  fi
  RELAY_WORKER_THREADS=1 "$relay" serve --listen 127.0.0.1:9111 "${storage[@]}" --rate-limit 0 \
    --message-ttl 2s --cleanup-interval 500ms --history-retention "$retention" 2>"$dir/relay.log" &
  local relay_pid=$!
  for _ in $(seq 50); do grep -q "listening on" "$dir/relay.log" && break; sleep 0.1; done
  local report acked rate
  report=$(./target/release/load-test contention --targets 127.0.0.1:9111 --clients "$clients" \
    --duration "$duration" --prefix "cost-$retention" --json)
  acked=$(echo "$report" | sed -n 's/.*"acked": \([0-9]*\),.*/\1/p' | head -1)
  rate=$(echo "$report" | sed -n 's/.*"acked_per_second": \([0-9.]*\),.*/\1/p' | head -1)
  sleep 5 # past the TTL, and several cleanup rounds
  if [ "$bus" = redis ]; then
    used=$(redis-cli -p 9119 info memory | awk -F: '/^used_memory:/ {print $2+0}')
    used=$((used - baseline))
  else
    used=$(sqlite3 "$dir/relay.db" "PRAGMA wal_checkpoint(TRUNCATE);" \
      "SELECT (page_count - freelist_count) * page_size FROM pragma_page_count(), pragma_freelist_count(), pragma_page_size();" | tail -1)
  fi
  kill "$relay_pid"; wait "$relay_pid" 2>/dev/null || true
  if [ "$bus" = redis ]; then redis-cli -p 9119 shutdown nosave >/dev/null 2>&1 || true; fi
  rm -rf "$dir"
  printf '%s %.0f %.1f\n' "$retention" "$rate" "$(echo "$used / $acked" | bc -l)"
}

echo "retention ops/s bytes/op   ($bus, $clients clients, $duration each)"
for _ in $(seq "$rounds"); do
  run 7d
  run 0
done
