#!/usr/bin/env bash
# Prints nginx.conf for one cluster: the lines between its "# BEGIN instances" / "# BEGIN listen" markers and
# the next "# END" are replaced by the given instances and listen address. Used by scripts/cluster.sh,
# scripts/bench-pair.sh (VIA_NGINX=1) and tests/nginx.rs.
#   scripts/nginx-conf.sh LISTEN_ADDR INSTANCE_ADDR...     e.g. 127.0.0.1:8080 127.0.0.1:9001 127.0.0.1:9002
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 LISTEN_ADDR INSTANCE_ADDR..." >&2; exit 2; }
listen=$1; shift
servers=""
for addr in "$@"; do
  servers+="        server $addr max_fails=1 fail_timeout=5s;\n"
done
awk -v servers="$servers" -v listen="        listen $listen backlog=4096;" '
  /# BEGIN instances/ { print; printf "%s", servers; skip = 1; next }
  /# BEGIN listen/    { print; print listen; skip = 1; next }
  /# END /            { skip = 0 }
  !skip
' "$(dirname "$0")/../nginx.conf"
