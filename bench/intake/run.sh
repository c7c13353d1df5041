#!/usr/bin/env bash
# bench/intake: durable POST /v1/streams/signups against the no-op POST route of the same
# binary, with wrk, 64 connections, a ~150-byte payload. Alternates the two routes ROUNDS
# times so drift on a shared machine hits both alike, and reports the mean of each, the
# ratio and the p99 latency. Goal: ratio >= 0.5 and p99 <= 20 ms.
#
#   bench/intake/run.sh            # DURATION=10s ROUNDS=3 CONNECTIONS=64
set -euo pipefail
cd "$(dirname "$0")/../.."
. bench/lib/wrk.sh

DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-64}

command -v wrk >/dev/null || { echo "wrk is missing: apt-get install -y wrk" >&2; exit 1; }
cargo build --release -q -p levee
work=$(mktemp -d)
trap 'kill $LEVEE_PID 2>/dev/null; wait $LEVEE_PID 2>/dev/null; rm -rf "$work"' EXIT

./target/release/levee init --dir "$work" >/dev/null
sed -i 's/^listen = .*/listen = "127.0.0.1:0"\nnoop_route = true/' "$work/levee.toml"
# Intake alone: no workers draining the queue while it is measured.
LEVEE_ROLES=intake start_levee ./target/release/levee "$work/levee.toml" "$work/levee.log"

noop_rps=() noop_p99=() durable_rps=() durable_p99=()
for round in $(seq "$ROUNDS"); do
  read -r rps p99 < <(wrk_rate_p99 "$LEVEE_URL/v1/noop" "$DURATION" "$CONNECTIONS" -s bench/intake/post.lua)
  noop_rps+=("$rps") noop_p99+=("$p99")
  read -r rps p99 < <(wrk_rate_p99 "$LEVEE_URL/v1/streams/signups" "$DURATION" "$CONNECTIONS" -s bench/intake/post.lua)
  durable_rps+=("$rps") durable_p99+=("$p99")
  echo "round $round: no-op ${noop_rps[-1]} req/s p99 ${noop_p99[-1]} ms; durable ${durable_rps[-1]} req/s p99 ${durable_p99[-1]} ms"
done

depth=$(python3 -c 'import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute("select count(*) from messages").fetchone()[0])' "$work/levee-data/queue/queue.db")
mean() { printf '%s\n' "$@" | awk '{ s += $1 } END { printf "%.2f", s / NR }'; }
max() { printf '%s\n' "$@" | sort -g | tail -1; }
nr=$(mean "${noop_rps[@]}") dr=$(mean "${durable_rps[@]}")
echo
printf '%-34s %12s %10s\n' "route ($CONNECTIONS connections)" "req/s" "p99 ms"
printf '%-34s %12.0f %10s\n' "POST /v1/noop" "$nr" "$(max "${noop_p99[@]}")"
printf '%-34s %12.0f %10s\n' "POST /v1/streams/signups (fsync)" "$dr" "$(max "${durable_p99[@]}")"
awk -v d="$dr" -v n="$nr" 'BEGIN { printf "ratio durable / no-op: %.2f (goal >= 0.5)\n", d / n }'
echo "messages durable in the queue afterwards: $depth"
