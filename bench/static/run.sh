#!/usr/bin/env bash
# bench/static: levee's static server against nginx (sendfile, open_file_cache) on the
# same files: a 1 KB JSON and a 40 KB file, wrk with 64 connections, no compression asked.
# Alternates levee and nginx ROUNDS times so drift hits both alike and reports the means
# and the ratio. Goal: levee >= 1.0x nginx's rate on the 1 KB file.
#
#   bench/static/run.sh            # DURATION=10s ROUNDS=3 CONNECTIONS=64
set -euo pipefail
cd "$(dirname "$0")/../.."
. bench/lib/wrk.sh

DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-64}
NGINX_PORT=${NGINX_PORT:-18081}

command -v wrk >/dev/null || { echo "wrk is missing: apt-get install -y wrk" >&2; exit 1; }
command -v nginx >/dev/null || { echo "nginx is missing: apt-get install -y nginx-light" >&2; exit 1; }
cargo build --release -q -p levee
work=$(mktemp -d)
chmod 755 "$work"   # nginx workers run as another user
trap 'kill $LEVEE_PID 2>/dev/null; wait $LEVEE_PID 2>/dev/null; [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")"; rm -rf "$work"' EXIT

# The files, published into levee's local store the way users publish them.
mkdir -p "$work/site/data"
python3 - "$work/site/data" <<'PY'
import json, sys
out = sys.argv[1]
def rows(n):
    return [{"zip": f"{i:05d}", "city": "Chattanooga", "state": "TN"} for i in range(n)]
one_kb = json.dumps(rows(20))[:1024]
one_kb = json.dumps({"pad": "x" * (1024 - len(json.dumps({"pad": ""})))})
open(f"{out}/1k.json", "w").write(one_kb)
open(f"{out}/40k.json", "w").write(json.dumps(rows(900))[:40 * 1024].ljust(40 * 1024))
PY
./target/release/levee init --dir "$work" >/dev/null
sed -i 's/^listen = .*/listen = "127.0.0.1:0"/' "$work/levee.toml"
./target/release/levee deploy "$work/site" --to "file://$work/levee-data/public" >/dev/null
LEVEE_ROLES=static start_levee ./target/release/levee "$work/levee.toml" "$work/levee.log"

cat >"$work/nginx.conf" <<CONF
worker_processes auto;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  open_file_cache max=1000 inactive=60s;
  open_file_cache_valid 60s;
  types { application/json json; }
  client_body_temp_path $work/nginx-tmp;
  proxy_temp_path $work/nginx-tmp;
  fastcgi_temp_path $work/nginx-tmp;
  uwsgi_temp_path $work/nginx-tmp;
  scgi_temp_path $work/nginx-tmp;
  server {
    listen 127.0.0.1:$NGINX_PORT;
    root $work/levee-data/public;
    etag on;
  }
}
CONF
mkdir -p "$work/nginx-tmp"
nginx -c "$work/nginx.conf"
NGINX_URL="http://127.0.0.1:$NGINX_PORT"
for url in "$LEVEE_URL" "$NGINX_URL"; do
  [ "$(curl -fs "$url/data/1k.json" | wc -c)" = 1024 ] || { echo "$url does not serve the 1 KB file" >&2; exit 1; }
done

mean() { printf '%s\n' "$@" | awk '{ s += $1 } END { printf "%.0f", s / NR }'; }
max() { printf '%s\n' "$@" | sort -g | tail -1; }
for file in 1k.json 40k.json; do
  levee_rps=() levee_p99=() nginx_rps=() nginx_p99=()
  for round in $(seq "$ROUNDS"); do
    read -r rps p99 < <(wrk_rate_p99 "$LEVEE_URL/data/$file" "$DURATION" "$CONNECTIONS")
    levee_rps+=("$rps") levee_p99+=("$p99")
    read -r rps p99 < <(wrk_rate_p99 "$NGINX_URL/data/$file" "$DURATION" "$CONNECTIONS")
    nginx_rps+=("$rps") nginx_p99+=("$p99")
    echo "$file round $round: levee ${levee_rps[-1]} req/s p99 ${levee_p99[-1]} ms; nginx ${nginx_rps[-1]} req/s p99 ${nginx_p99[-1]} ms"
  done
  lr=$(mean "${levee_rps[@]}") nr=$(mean "${nginx_rps[@]}")
  printf '%-10s levee %8s req/s (p99 %s ms)  nginx %8s req/s (p99 %s ms)  ratio %s\n' "$file" \
    "$lr" "$(max "${levee_p99[@]}")" "$nr" "$(max "${nginx_p99[@]}")" \
    "$(awk -v l="$lr" -v n="$nr" 'BEGIN { printf "%.2f", l / n }')"
done
echo "goal: ratio >= 1.0 on 1k.json"
