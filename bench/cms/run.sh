#!/usr/bin/env bash
# bench/cms: a CMS save until the new post is visible in the local store. One release levee
# (roles admin,static) on a temp dir; blog "small" gets 10 posts, blog "large" 10,000
# (preloaded with concurrent saves, not measured). Then SAVES sequential saves to each,
# alternating between the blogs, each timed from sending the POST until the post's id is in
# <store>/blogs/<slug>/latest.json on disk (polled every 1 ms after the 201). Reports p50,
# p99 and max per blog, and how many files and bytes a save rewrites.
# Goal: p50 <= 100 ms at 10 and at 10,000 posts.
#
#   bench/cms/run.sh            # SAVES=500 SMALL=10 LARGE=10000 CONCURRENCY=16 SCAN_EVERY=10
set -euo pipefail
cd "$(dirname "$0")/../.."
. bench/lib/wrk.sh

command -v python3 >/dev/null || { echo "python3 is missing" >&2; exit 1; }
cargo build --release -q -p levee
work=$(mktemp -d)
LEVEE_PID=
trap '[ -n "$LEVEE_PID" ] && { kill $LEVEE_PID 2>/dev/null; wait $LEVEE_PID 2>/dev/null; }; rm -rf "$work"' EXIT

./target/release/levee init --dir "$work" >/dev/null
sed -i 's/^listen = .*/listen = "127.0.0.1:0"/' "$work/levee.toml"
LEVEE_ADMIN_TOKEN=$(python3 -c 'import secrets; print(secrets.token_hex(24))')
export LEVEE_ADMIN_TOKEN
LEVEE_ROLES=admin,static start_levee ./target/release/levee "$work/levee.toml" "$work/levee.log"

echo "levee $(git rev-parse --short HEAD) at $LEVEE_URL, store $work/levee-data/public, $(nproc) cores"
python3 bench/cms/saves.py "$LEVEE_URL" "$LEVEE_ADMIN_TOKEN" "$work/levee-data/public"
if grep -q ' WARN .*publish\| ERROR ' "$work/levee.log"; then
  echo "levee logged publish warnings or errors:"
  grep ' WARN .*publish\| ERROR ' "$work/levee.log" | tail -5
fi
