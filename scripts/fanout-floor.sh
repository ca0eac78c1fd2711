#!/usr/bin/env bash
# The relay's fan-out against its floor: one relay instance (on a fresh SQLite file) and the bare warp
# broadcast process (load-test/src/bin/fanout-floor.rs) take turns under the same `load-test fanout` client, ROUNDS
# times, and each pair's ratio (relay ÷ floor deliveries per second) is printed as it completes.
#   scripts/fanout-floor.sh [LOAD-TEST FANOUT ARGS]        e.g. --receivers 2000 --duration 10s
# Defaults: 2,000 receivers, 2 senders with 32 in flight each, 10 s; ROUNDS=3, WORKERS=2 worker threads for
# both servers, GEN_WORKERS=2 for the client. RELAY_BIN, FLOOR_BIN and LOAD_BIN name other builds of the three
# (e.g. a release build of an older commit as RELAY_BIN) instead of building this tree's. PERF_STAT=1 also
# counts each server's sendto and futex calls over that window (perf stat; needs perf and root).
# The window needs a --duration of 6 s or more.
set -euo pipefail
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
cd "$(dirname "$0")/.."
if [ -z "${RELAY_BIN:-}" ] || [ -z "${FLOOR_BIN:-}" ] || [ -z "${LOAD_BIN:-}" ]; then
  cargo build --release --workspace --locked >&2
fi
target_dir=${CARGO_TARGET_DIR:-target}
relay=${RELAY_BIN:-$target_dir/release/canvas-relay}
floor=${FLOOR_BIN:-$target_dir/release/fanout-floor}
load=${LOAD_BIN:-$target_dir/release/load-test}
rounds=${ROUNDS:-3}
workers=${WORKERS:-2}
args=("$@")
[ ${#args[@]} -gt 0 ] || args=(--receivers 2000 --duration 10s)
dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"' EXIT

# Starts one server (the rest of the line), waits for its "listening on", runs the client against it, stops
# it; prints its deliveries per second, the client's gaps, lost and errors, and the server's CPU time per
# delivery (µs, over a 3 s window once the client's sockets are all open: their count holds for a second).
measure() {
  local port=$1 name=$2; shift 2
  "$@" >"$dir/$name.log" 2>&1 &
  local pid=$!
  for _ in $(seq 600); do grep -q "listening on" "$dir/$name.log" && break; sleep 0.1; done
  grep -q "listening on" "$dir/$name.log" || { echo "$name did not start:" >&2; cat "$dir/$name.log" >&2; exit 1; }
  (prev=-1; while n=$(ss -Htn state established "( sport = :$port )" | wc -l); [ "$n" -ne "$prev" ] || [ "$n" -lt 2 ]; do
     prev=$n; sleep 1; done; sleep 2
   ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
   before=$(ticks)
   if [ "${PERF_STAT:-0}" = 1 ]; then
     perf stat -e 'syscalls:sys_enter_sendto,syscalls:sys_enter_futex' -p "$pid" -- sleep 3 2>"$dir/$name.perf"
   else
     sleep 3
   fi
   echo $(( $(ticks) - before )) >"$dir/$name.ticks") &
  env TOKIO_WORKER_THREADS="${GEN_WORKERS:-2}" "$load" fanout --targets "127.0.0.1:$port" --json "${args[@]}" \
    >"$dir/$name.json"
  wait $! 2>/dev/null || true
  kill "$pid"; wait "$pid" 2>/dev/null || true
  python3 - "$dir/$name.json" "$(cat "$dir/$name.ticks" 2>/dev/null || echo 0)" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
rate = r["deliveries_per_second"]
# USER_HZ ticks (100 a second) over the 3 s window, per delivery at the run's mean rate
cpu_us = int(sys.argv[2]) * 10_000 / max(rate * 3, 1)
print(round(rate), r["gaps"], r["lost"], r["errors"], f"{cpu_us:.2f}")
PY
  if [ "${PERF_STAT:-0}" = 1 ]; then
    grep -E 'sys_enter_(sendto|futex)' "$dir/$name.perf" | awk -v n="$name" '{printf "  %s %s %s\n", n, $2, $1}' >&2
  fi
}

echo "round  floor deliveries/s  relay deliveries/s  relay/floor  CPU µs per delivery (floor, relay)  gaps lost errors (floor | relay)"
for round in $(seq "$rounds"); do
  read -r floor_rate floor_gaps floor_lost floor_errors floor_cpu < <(measure 9201 floor "$floor" 127.0.0.1:9201 "$workers")
  rm -f "$dir/relay.db"*
  read -r relay_rate relay_gaps relay_lost relay_errors relay_cpu < <(measure 9202 relay "$relay" serve \
    --listen 127.0.0.1:9202 --db "$dir/relay.db" --rate-limit 0 --worker-threads "$workers")
  ratio=$(python3 -c "print(f'{$relay_rate / max($floor_rate, 1):.2f}')")
  printf '%5s  %18s  %18s  %11s  %34s  %s %s %s | %s %s %s\n' "$round" "$floor_rate" "$relay_rate" "$ratio" \
    "$floor_cpu, $relay_cpu" "$floor_gaps" "$floor_lost" "$floor_errors" "$relay_gaps" "$relay_lost" "$relay_errors"
done
