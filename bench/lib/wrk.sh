# Helpers for benchmarks that drive HTTP load with wrk. Source this file.

# Run wrk and print "requests_per_second p99_ms" for its run.
#   wrk_rate_p99 URL DURATION CONNECTIONS [wrk args...]
wrk_rate_p99() {
  local url=$1 duration=$2 connections=$3
  shift 3
  wrk -t2 -c"$connections" -d"$duration" --latency "$@" "$url" | awk '
    /Requests\/sec:/ { rps = $2 }
    /^ +99%/ {
      v = $2
      if (v ~ /us$/) { sub(/us$/, "", v); p99 = v / 1000 }
      else if (v ~ /ms$/) { sub(/ms$/, "", v); p99 = v }
      else if (v ~ /s$/) { sub(/s$/, "", v); p99 = v * 1000 }
    }
    /Non-2xx or 3xx responses:/ { bad = $5 }
    END {
      if (bad > 0) { print "wrk saw " bad " non-2xx responses" > "/dev/stderr"; exit 1 }
      printf "%.0f %.2f\n", rps, p99
    }'
}

# Start a levee with CONFIG in the background, wait until it listens, set LEVEE_URL and
# LEVEE_PID.   start_levee BINARY CONFIG LOGFILE
start_levee() {
  local bin=$1 config=$2 log=$3 fifo
  fifo=$(mktemp -u)
  mkfifo "$fifo"
  "$bin" serve --config "$config" >"$fifo" 2>"$log" &
  LEVEE_PID=$!
  exec {LEVEE_OUT}<"$fifo"
  rm "$fifo"
  local line
  while read -r -t 30 line <&"$LEVEE_OUT"; do
    case $line in
      "levee listening on "*) LEVEE_URL=${line#levee listening on }; return 0 ;;
    esac
  done
  echo "levee did not start; see $log" >&2
  return 1
}
