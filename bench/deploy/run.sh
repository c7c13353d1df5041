#!/usr/bin/env bash
# bench/deploy: the 41,749 ZIP code files (one small JSON each) to an S3-compatible server
# (moto) with `levee deploy`, `aws s3 sync` and `rclone sync`: the first upload and a
# no-change re-run, wall time and requests by kind, each tool into its own fresh bucket.
# Requests are counted from the log of a moto started for this run.
# Goals: first upload >= 2x faster than aws s3 sync; a no-change re-run makes no PUT and
# one listing pass.
#
#   bench/deploy/run.sh      # PORT=5055; needs moto_server, aws (awscli) and rclone
set -euo pipefail
cd "$(dirname "$0")/../.."

PORT=${PORT:-5055}
CONCURRENCY=${CONCURRENCY:-16}
FILES=${FILES:-0}     # 0: all 41,749; else only the first FILES rows
ENDPOINT="http://127.0.0.1:$PORT"
for tool in moto_server aws rclone; do
  command -v "$tool" >/dev/null || { echo "$tool is missing (pip install 'moto[server]' awscli; apt-get install -y rclone)" >&2; exit 1; }
done
cargo build --release -q -p levee
work=$(mktemp -d)
trap 'kill $MOTO_PID 2>/dev/null; rm -rf "$work"' EXIT

moto_server -p "$PORT" >"$work/moto.log" 2>&1 &
MOTO_PID=$!
for _ in $(seq 60); do curl -fs -o /dev/null "$ENDPOINT/moto-api/data.json" && break; sleep 0.5; done

export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_DEFAULT_REGION=us-east-1
export RCLONE_CONFIG_MOTO_TYPE=s3 RCLONE_CONFIG_MOTO_PROVIDER=Other RCLONE_CONFIG_MOTO_ENDPOINT="$ENDPOINT" \
  RCLONE_CONFIG_MOTO_ACCESS_KEY_ID=bench RCLONE_CONFIG_MOTO_SECRET_ACCESS_KEY=bench RCLONE_CONFIG_MOTO_REGION=us-east-1

# The site: one JSON file per ZIP code.
python3 - data/us-zipcodes.csv "$work/site" "$FILES" <<'PY'
import csv, json, os, sys
out = os.path.join(sys.argv[2], "zip")
os.makedirs(out)
limit = int(sys.argv[3])
for i, row in enumerate(csv.DictReader(open(sys.argv[1]))):
    if limit and i >= limit:
        break
    with open(os.path.join(out, row["zip"] + ".json"), "w") as f:
        json.dump({"zip": row["zip"], "city": row["city"], "state": row["state"]}, f)
PY
files=$(find "$work/site" -type f | wc -l)
echo "$files files"

# Requests moto logged since the last mark, by kind.
mark() { wc -l <"$work/moto.log"; }
requests() {
  tail -n +"$(( $1 + 1 ))" "$work/moto.log" | awk '
    /"PUT /    { put++ }
    /"GET [^"]*list-type=2|"GET \/[^\/?"]*\/?(\?[^"]*)? HTTP/ { list++; next }
    /"GET /    { get++ }
    /"HEAD /   { head++ }
    /"DELETE / { del++ }
    /"POST /   { post++ }
    END { printf "list=%d get=%d head=%d put=%d post=%d delete=%d", list, get, head, put, post, del }'
}
timed() { local start end; start=$(date +%s.%N); "$@" >"$work/out.log" 2>&1 || { cat "$work/out.log" >&2; return 1; }; end=$(date +%s.%N); awk -v s="$start" -v e="$end" 'BEGIN { printf "%.1f", e - s }'; }

declare -A first again
run_tool() {
  local name=$1 bucket=$2; shift 2
  curl -fs -X PUT -H "Authorization: AWS4-HMAC-SHA256 Credential=bench/20260101/us-east-1/s3/aws4_request" "$ENDPOINT/$bucket" >/dev/null
  local m t
  m=$(mark); t=$(timed "$@"); first[$name]="$t s, $(requests "$m")"
  echo "$name first upload: ${first[$name]}"
  m=$(mark); t=$(timed "$@"); again[$name]="$t s, $(requests "$m")"
  echo "$name no-change re-run: ${again[$name]}"
}

run_tool "levee deploy" bench-levee ./target/release/levee deploy "$work/site" --to s3://bench-levee/site --endpoint "$ENDPOINT" --concurrency "$CONCURRENCY"
[ "${ONLY_LEVEE:-}" ] || run_tool "aws s3 sync" bench-aws aws --endpoint-url "$ENDPOINT" s3 sync --only-show-errors "$work/site" s3://bench-aws/site
# rclone 1.60 cannot load AWS_CA_BUNDLE into its own HTTP transport (and needs no CA for http).
[ "${ONLY_LEVEE:-}" ] || run_tool "rclone sync" bench-rclone env -u AWS_CA_BUNDLE rclone sync --transfers 32 --checkers 32 "$work/site" moto:bench-rclone/site

echo
printf '%-14s | %-58s | %s\n' tool "first upload" "no-change re-run"
for name in "levee deploy" "aws s3 sync" "rclone sync"; do
  printf '%-14s | %-58s | %s\n' "$name" "${first[$name]}" "${again[$name]}"
done
lt=${first["levee deploy"]%% s*} at=${first["aws s3 sync"]%% s*}
awk -v l="$lt" -v a="$at" 'BEGIN { printf "first upload: levee is %.2fx as fast as aws s3 sync (goal >= 2)\n", a / l }'
