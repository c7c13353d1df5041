#!/usr/bin/env bash
# Drill: the database goes away for maintenance under steady write load.
#
# A release levee node on PostgreSQL takes steady POSTs (bench/drills/steady_post.py, every
# accepted id recorded); the real PostgreSQL is stopped with pg_ctlcluster for the given
# time, then started again; load goes on until the backlog is gone (and at least AFTER
# seconds), then stops; once the queue is empty the table is checked against the accepted
# ids. Prints one line:
#
#   accepted=N lost=0 duplicates=0 non_202=0 extra_rows=0 down_seconds=60 backlog=B catch_up_seconds=S drained_seconds=D
#
#   lost             accepted ids with no row (must be 0)
#   duplicates       rows minus distinct ids (must be 0)
#   non_202          requests not answered 202: refusals and transport errors (should be 0)
#   extra_rows       rows of ids the load generator never saw accepted (a request cut off
#                    after levee queued it); not an error
#   backlog          messages waiting when PostgreSQL is started again
#   catch_up_seconds from the PostgreSQL restart to the first moment no message waits
#                    (depth 0) while the load still runs: the backlog is worked off
#   drained_seconds  from the restart to an empty queue (depth and in_flight 0) after the
#                    load stopped
# Exits 1 if lost or duplicates is not 0.
#
#   bench/drills/db-maintenance.sh                 # 60 s outage, 500 req/s
#   bench/drills/db-maintenance.sh --minutes 8     # the full drill
#   bench/drills/db-maintenance.sh --seconds 20 --rate 1000
#
# PostgreSQL is shared with other tests on this machine: it is always started again on exit,
# even on failure or Ctrl-C. Needs root (pg_ctlcluster), psql, curl, jq, python3.
set -euo pipefail
cd "$(dirname "$0")/../.."
. bench/lib/wrk.sh

DOWN=60 RATE=500 WARMUP=5 AFTER=10
DATABASE=${LEVEE_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}
while [ $# -gt 0 ]; do
  case $1 in
    --seconds) DOWN=$2; shift 2 ;;
    --minutes) DOWN=$(($2 * 60)); shift 2 ;;
    --rate) RATE=$2; shift 2 ;;
    --database) DATABASE=$2; shift 2 ;;
    *) echo "usage: $0 [--seconds N | --minutes N] [--rate R] [--database URL]" >&2; exit 2 ;;
  esac
done
PG_VERSION=$(ls /etc/postgresql | sort -V | tail -1)
PG_CLUSTER=main
pg() { pg_ctlcluster --skip-systemctl-redirect "$PG_VERSION" "$PG_CLUSTER" "$@"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
log() { echo "[$(date +%T)] $*" >&2; }

cargo build --release -q -p levee
work=$(mktemp -d)
table="drill_$(head -c6 /dev/urandom | od -An -tx1 | tr -d ' \n')"
LEVEE_PID= LOAD_PID=
cleanup() {
  # PostgreSQL first: other tests on this machine need it.
  if ! pg status >/dev/null 2>&1; then
    log "starting PostgreSQL again"
    pg start || log "could not start PostgreSQL: start it by hand (pg_ctlcluster $PG_VERSION $PG_CLUSTER start)"
  fi
  [ -n "$LOAD_PID" ] && kill "$LOAD_PID" 2>/dev/null && wait "$LOAD_PID" 2>/dev/null
  [ -n "$LEVEE_PID" ] && kill "$LEVEE_PID" 2>/dev/null && wait "$LEVEE_PID" 2>/dev/null
  psql "$DATABASE" -qc "DROP TABLE IF EXISTS \"$table\"" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

pg_isready -q -d "$DATABASE" || { echo "PostgreSQL is not running at $DATABASE" >&2; exit 1; }
./target/release/levee init --dir "$work" >/dev/null
sed -i "s/^table = .*/table = \"$table\"/" "$work/levee.toml"
export LEVEE_DATABASE__URL=$DATABASE LEVEE_SERVER__LISTEN=127.0.0.1:0 \
  LEVEE_QUEUE__EMBEDDED__MIN_FREE_DISK_BYTES=0 LEVEE_LOG=warn \
  LEVEE_ADMIN_TOKEN=drill-$RANDOM$RANDOM
./target/release/levee --config "$work/levee.toml" migrate >/dev/null
start_levee ./target/release/levee "$work/levee.toml" "$work/levee.log"

# "depth in_flight" of the signups stream.
queue_status() {
  curl -sf -H "Authorization: Bearer $LEVEE_ADMIN_TOKEN" "$LEVEE_URL/v1/admin/status" |
    jq -r '.streams.signups | "\(.depth) \(.in_flight)"'
}

python3 bench/drills/steady_post.py "$LEVEE_URL/v1/streams/signups" --rate "$RATE" \
  --ids "$work/ids" >"$work/outcomes.json" &
LOAD_PID=$!
log "levee at $LEVEE_URL, table $table, $RATE POST/s; warming up ${WARMUP}s"
sleep "$WARMUP"

log "stopping PostgreSQL $PG_VERSION/$PG_CLUSTER for ${DOWN}s"
pg stop
sleep "$DOWN"
read -r backlog _ < <(queue_status)
log "starting PostgreSQL; backlog: depth=$backlog"
# Catch-up counts from here: levee reconnects as soon as the server accepts connections,
# which is before pg_ctlcluster returns.
restarted=$(now)
pg start
log "PostgreSQL accepts connections again after $(since "$restarted")s"

# Under load until the backlog is worked off (at most 10 minutes) and AFTER seconds passed.
catch_up=
while :; do
  read -r depth in_flight < <(queue_status)
  if [ -z "$catch_up" ] && [ "$depth" -eq 0 ]; then
    catch_up=$(since "$restarted")
    log "caught up after ${catch_up}s (in_flight=$in_flight)"
  fi
  elapsed=$(since "$restarted")
  if [ -n "$catch_up" ] && awk -v e="$elapsed" -v a="$AFTER" 'BEGIN { exit !(e >= a) }'; then break; fi
  if awk -v e="$elapsed" 'BEGIN { exit !(e >= 600) }'; then log "no catch-up within 600s"; break; fi
  sleep 0.2
done

kill "$LOAD_PID"
wait "$LOAD_PID"
LOAD_PID=
log "load stopped: $(cat "$work/outcomes.json")"
drained=
for _ in $(seq 3000); do
  read -r depth in_flight < <(queue_status)
  if [ "$depth" -eq 0 ] && [ "$in_flight" -eq 0 ]; then
    drained=$(since "$restarted")
    break
  fi
  sleep 0.2
done
[ -n "$drained" ] || log "the queue did not drain within 600s: depth=$depth in_flight=$in_flight"

IFS='|' read -r accepted lost duplicates extra < <(psql "$DATABASE" -v ON_ERROR_STOP=1 -qAt <<SQL
CREATE TEMP TABLE accepted (id text);
\copy accepted FROM '$work/ids'
SELECT (SELECT count(*) FROM accepted),
       (SELECT count(*) FROM accepted a WHERE NOT EXISTS (SELECT 1 FROM "$table" t WHERE t.id = a.id)),
       (SELECT count(*) - count(DISTINCT id) FROM "$table"),
       (SELECT count(*) FROM "$table" t WHERE NOT EXISTS (SELECT 1 FROM accepted a WHERE a.id = t.id));
SQL
)
non_202=$(jq '[to_entries[] | select(.key != "202") | .value] | add // 0' "$work/outcomes.json")
echo "accepted=$accepted lost=$lost duplicates=$duplicates non_202=$non_202 extra_rows=$extra" \
  "down_seconds=$DOWN backlog=$backlog catch_up_seconds=${catch_up:-none} drained_seconds=${drained:-none}"
[ "$lost" -eq 0 ] && [ "$duplicates" -eq 0 ]
