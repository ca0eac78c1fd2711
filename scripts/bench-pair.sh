#!/usr/bin/env bash
# Reproduces a recorded figure: builds release binaries, starts two canvas-relay instances on one fresh
# SQLite file (loopback ports 9101 and 9102), runs `load-test <args>` against both, and stops them.
#   scripts/bench-pair.sh latency --duration 30s
#   scripts/bench-pair.sh throughput --senders 10 --window 64 --duration 10s
#   scripts/bench-pair.sh fanout --duration 10s
#   scripts/bench-pair.sh idle --canvases 1000 --duration 30s   (CPU and polls/s of both instances)
#   scripts/bench-pair.sh connections --count 10000     (idle sockets on the first instance; RSS per socket)
#   scripts/bench-pair.sh join --objects 100000 --storm 50   (fill a canvas, time lone joins and a join storm;
#                                                             each instance's RSS peak; latency load alongside)
#   scripts/bench-pair.sh flood --duration 10s --reader-on second   (cursor flood vs a slow reader: are
#                                                             logged notes delayed, is the latest cursor delivered)
#   scripts/bench-pair.sh events --clients 100 --rate 10   (ephemeral events: deliveries/s, end-to-end latency)
#   INSTANCES=4 scripts/bench-pair.sh contention --clients 8 --duration 10s   (four instances, object ops on one
#                                                             canvas: ops/s and the commits staged again)
#   RELAY_WEBHOOK_URL=http://127.0.0.1:9300/hook RELAY_WEBHOOK_SECRET=bench \
#     scripts/bench-pair.sh webhook --rate 1000 --canvases 100   (load-test is the receiver: commit-to-receipt lag)
#   RELAY_API_KEY=bench scripts/bench-pair.sh stream --api-key bench --readers 4 --rate 5000   (the event stream;
#                                                             --backlog 200000 for a catch-up from since=0)
# Set VIA_NGINX=1 to put nginx (nginx.conf) in front and aim the load at it instead. RELAY_* variables reach
# both instances (e.g. RELAY_WORKER_THREADS=2, RELAY_PEER_WAKEUP=false).
# ALONGSIDE="SCENARIO ARGS" [ALONGSIDE_DELAY=S] runs a second scenario in its own process meanwhile (below).
# INSTANCES=N (default 2) starts N instances on ports 9101.. (e.g. INSTANCES=4 for `contention`); the
# scenarios that name two instances (connections, idle, join) use the first two.
# Set BUS=redis to run both instances on a fresh redis-server (port 9109, AOF on, appendfsync REDIS_FSYNC,
# default everysec) instead of the SQLite file.
set -euo pipefail
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
cd "$(dirname "$0")/.."
# RELAY_BIN=path runs another build of the relay (e.g. an older commit's, for a before/after in one session)
# with this tree's load-test.
cargo build --release --workspace --locked >&2
relay=${RELAY_BIN:-./target/release/canvas-relay}
# Two instances share the host's cores, as scripts/cluster.sh sets them up: cores ÷ 2 workers each. The
# generator gets GEN_WORKERS tokio workers (default 2).
instances=${INSTANCES:-2}
ports=$(seq 9101 $(( 9100 + instances )))
per_instance=$(( $(nproc) / instances ))
export RELAY_WORKER_THREADS=${RELAY_WORKER_THREADS:-$(( per_instance > 0 ? per_instance : 1 ))}
dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"' EXIT
pids=()
storage=(--db "$dir/relay.db")
if [ "${BUS:-sqlite}" = redis ]; then
  redis-server --port 9109 --bind 127.0.0.1 --dir "$dir" --save "" --appendonly yes \
    --appendfsync "${REDIS_FSYNC:-everysec}" >"$dir/redis.log" 2>&1 &
  for _ in $(seq 50); do redis-cli -p 9109 ping >/dev/null 2>&1 && break; sleep 0.1; done
  storage=(--bus redis://127.0.0.1:9109/0)
fi
for port in $ports; do
  # --rate-limit 0: the load generator's senders exceed a browser's rate on purpose; this measures the relay.
  "$relay" serve --listen "127.0.0.1:$port" "${storage[@]}" --rate-limit 0 \
    2>"$dir/$port.log" &
  pids+=($!)
done
for port in $ports; do
  for _ in $(seq 50); do grep -q "listening on" "$dir/$port.log" && break; sleep 0.1; done
done
targets=$(for port in $ports; do printf '127.0.0.1:%s,' "$port"; done | sed 's/,$//')
if [ "${VIA_NGINX:-0}" = 1 ]; then
  mkdir -p "$dir/nginx/tmp"
  scripts/nginx-conf.sh 127.0.0.1:9100 127.0.0.1:9101 127.0.0.1:9102 > "$dir/nginx/nginx.conf"
  nginx -p "$dir/nginx" -c "$dir/nginx/nginx.conf" -g 'daemon off;' &
  sleep 0.5
  targets=127.0.0.1:9100
fi
# ALONGSIDE="latency --duration 20s" runs a second load-test scenario in its own process at the same time
# (prefix "side"; ALONGSIDE_DELAY seconds after the main one starts, default 0), e.g. latency on another
# canvas while a join storm runs, so that the figure of the one is not the other's generator competing
# inside one process. Its report follows the main one's.
if [ -n "${ALONGSIDE:-}" ]; then
  # shellcheck disable=SC2086 # ALONGSIDE is a list of arguments
  (sleep "${ALONGSIDE_DELAY:-0}"; exec env TOKIO_WORKER_THREADS=1 ./target/release/load-test $ALONGSIDE \
    --targets "$targets" --prefix side) >"$dir/alongside.txt" 2>&1 &
  alongside=$!
fi
scenario=$1; shift
case "$scenario" in
  # Always direct: they measure each instance's own process (RSS per socket opened to it; CPU and the
  # polls its /metrics counts).
  connections) ./target/release/load-test connections --target 127.0.0.1:9101 --pid "${pids[0]}" "$@" ;;
  idle) ./target/release/load-test idle --targets 127.0.0.1:9101,127.0.0.1:9102 --pids "${pids[0]},${pids[1]}" "$@" ;;
  # Direct too: each instance's RSS is sampled by pid, in --targets order.
  join) env TOKIO_WORKER_THREADS="${GEN_WORKERS:-2}" ./target/release/load-test join \
          --targets 127.0.0.1:9101,127.0.0.1:9102 --pids "${pids[0]},${pids[1]}" "$@" ;;
  *) env TOKIO_WORKER_THREADS="${GEN_WORKERS:-2}" ./target/release/load-test "$scenario" --targets "$targets" "$@" ;;
esac
if [ -n "${ALONGSIDE:-}" ]; then
  wait "$alongside" || true
  echo "--- alongside: $ALONGSIDE"
  cat "$dir/alongside.txt"
fi
