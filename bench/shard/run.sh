#!/usr/bin/env bash
# bench/shard: the 41,749-row ZIP code CSV into one JSON file per ZIP code in a local
# store with `levee shard`: the first run, a no-change re-run and a run with one changed
# row, in files per second. For scale, the same files written by a plain Python loop
# (csv → json.dump, no headers, no hashing, no atomic replace).
#
#   bench/shard/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release -q -p levee
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

rows=$(($(wc -l <data/us-zipcodes.csv) - 1))
timed() { local start end; start=$(date +%s.%N); "$@" >"$work/out.log" 2>&1 || { cat "$work/out.log"; exit 1; }; end=$(date +%s.%N); awk -v s="$start" -v e="$end" 'BEGIN { printf "%.2f", e - s }'; }
shard() { ./target/release/levee shard "$1" --key zip --out 'zip/{key}.json' --fields zip,city,state,county,lat,lng --to "file://$work/public"; }

sed 's/^37415,STANDARD,Chattanooga/37415,STANDARD,Red Bank/' data/us-zipcodes.csv >"$work/changed.csv"
t1=$(timed shard data/us-zipcodes.csv); s1=$(tail -1 "$work/out.log")
t2=$(timed shard data/us-zipcodes.csv); s2=$(tail -1 "$work/out.log")
t3=$(timed shard "$work/changed.csv"); s3=$(tail -1 "$work/out.log")
tp=$(timed python3 - data/us-zipcodes.csv "$work/python" <<'PY'
import csv, json, os, sys
out = os.path.join(sys.argv[2], "zip")
os.makedirs(out)
for row in csv.DictReader(open(sys.argv[1])):
    keep = {k: row[k] for k in ("zip", "city", "state", "county", "lat", "lng")}
    with open(os.path.join(out, row["zip"] + ".json"), "w") as f:
        json.dump(keep, f)
PY
)
rate() { awk -v n="$rows" -v t="$1" 'BEGIN { printf "%.0f", n / t }'; }
printf '%-32s %8s s %10s files/s\n' "levee shard, first run" "$t1" "$(rate "$t1")"
echo "  $s1"
printf '%-32s %8s s %10s rows/s\n' "levee shard, no change" "$t2" "$(rate "$t2")"
echo "  $s2"
printf '%-32s %8s s %10s rows/s\n' "levee shard, one row changed" "$t3" "$(rate "$t3")"
echo "  $s3"
printf '%-32s %8s s %10s files/s\n' "python csv → json files" "$tp" "$(rate "$tp")"
