#!/usr/bin/env bash
# A local cluster: N canvas-relay instances on one SQLite file, with nginx (nginx.conf) in front.
#   scripts/cluster.sh                      2 instances, clients use ws://127.0.0.1:8080/ws/{canvas}?user=...
#   scripts/cluster.sh --instances 3 --port 8000 --db /tmp/relay.db -- --api-key secret
# Flags after `--` go to every instance. Ctrl-C stops nginx and sends SIGTERM to every instance (which
# commits and acks what it accepted, then exits). Instance logs and the nginx prefix are in a temp dir.
set -euo pipefail
cd "$(dirname "$0")/.."

instances=2 port=8080 first=9001 db=./relay.db
while [ $# -gt 0 ]; do
  case "$1" in
    --instances) instances=$2; shift 2 ;;
    --port) port=$2; shift 2 ;;
    --first-instance-port) first=$2; shift 2 ;;
    --db) db=$2; shift 2 ;;
    --) shift; break ;;
    *) echo "unknown flag $1 (see the comment at the top of $0)" >&2; exit 2 ;;
  esac
done
command -v nginx >/dev/null || { echo "nginx is required: apt-get install nginx" >&2; exit 1; }

# The instances share the host's cores: each gets cores ÷ instances worker threads unless told otherwise.
per_instance=$(( $(nproc) / instances ))
export RELAY_WORKER_THREADS=${RELAY_WORKER_THREADS:-$(( per_instance > 0 ? per_instance : 1 ))}
cargo build --release --workspace --locked >&2   # as bench-pair.sh: the same feature set, no rebuild between them
dir=$(mktemp -d /tmp/canvas-relay-cluster.XXXXXX)
mkdir -p "$dir/nginx/tmp"
pids=()
stop() {
  trap - INT TERM EXIT
  echo "stopping..." >&2
  [ -f "$dir/nginx/nginx.pid" ] && kill -QUIT "$(cat "$dir/nginx/nginx.pid")" 2>/dev/null || true
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  echo "stopped; logs were in $dir" >&2
}
trap stop INT TERM EXIT

addrs=()
for i in $(seq 0 $((instances - 1))); do
  p=$((first + i))
  ./target/release/canvas-relay serve --listen "127.0.0.1:$p" --db "$db" "$@" 2>"$dir/instance-$p.log" &
  pids+=($!)
  addrs+=("127.0.0.1:$p")
done
for i in $(seq 0 $((instances - 1))); do
  log="$dir/instance-$((first + i)).log"
  for _ in $(seq 100); do grep -q "listening on" "$log" && break; sleep 0.1; done
  grep -q "listening on" "$log" || { cat "$log" >&2; exit 1; }
done

scripts/nginx-conf.sh "127.0.0.1:$port" "${addrs[@]}" > "$dir/nginx/nginx.conf"
nginx -p "$dir/nginx" -c "$dir/nginx/nginx.conf" -g 'daemon off;' &
pids+=($!)
sleep 0.3
echo "canvas-relay cluster: $instances instances on $db behind nginx" >&2
echo "  canvas app: http://127.0.0.1:$port/?canvas=team-1&name=Ann" >&2
echo "  clients: ws://127.0.0.1:$port/ws/{canvas}?user={user}   (API and /health through the same address)" >&2
echo "  Ctrl-C to stop" >&2
wait
