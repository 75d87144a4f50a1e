#!/usr/bin/env bash
# TLS capture overhead on loopback: nginx (HTTPS, libssl.so.3, keep-alive)
# under wrk (also libssl.so.3) at fixed concurrency, with the sensor off and
# on (release build, JSON Lines to /dev/null), alternated twice in one run.
# Prints a Markdown table: requests/s and latency percentiles per run, and
# the on/off ratios of the means. Both ends are probed when the sensor is on.
#   bash bench/tls_overhead.sh [SECONDS_PER_RUN] [CONNECTIONS]
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-10}"
conns="${2:-16}"
source ci/install.sh >&2
command -v wrk >/dev/null || { apt-get install -y -qq --no-install-recommends wrk >/dev/null; }
cargo build --release --locked -p nettap-sensor --bin nettap >&2
bin=target/release/nettap
port=19443
work="$(mktemp -d)"
chmod 755 "$work" # nginx's workers (not root) must read www/: with 0700 every answer was a 403
mkdir -p "$work/www"
head -c 1024 /dev/urandom | base64 -w0 | head -c 1024 >"$work/www/1k"
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost \
  -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
cat >"$work/nginx.conf" <<CONF
worker_processes 1;
error_log $work/error.log;
pid $work/nginx.pid;
events { worker_connections 1024; }
http {
  access_log off;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$port ssl;
    ssl_certificate $work/cert.pem;
    ssl_certificate_key $work/key.pem;
    location / { root $work/www; }
  }
}
CONF
nginx -p "$work" -c "$work/nginx.conf" -g "daemon off;" &
nginx_pid=$!
trap 'kill -QUIT $nginx_pid 2>/dev/null; wait $nginx_pid 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done

# One wrk run: "requests/s p50_ms p99_ms".
load() {
  wrk -t1 -c"$conns" -d"${secs}s" --latency "https://127.0.0.1:$port/1k" >"$work/wrk.out"
  ! grep -q 'Non-2xx\|Socket errors' "$work/wrk.out" || { cat "$work/wrk.out" >&2; exit 1; }
  ms() { awk -v p="$1" '$1 == p { v = $2; if (v ~ /us$/) { sub(/us/, "", v); v /= 1000 } else if (v ~ /ms$/) { sub(/ms/, "", v) } else if (v ~ /s$/) { sub(/s/, "", v); v *= 1000 } print v }' "$work/wrk.out"; }
  echo "$(awk '/Requests\/sec/ { print $2 }' "$work/wrk.out") $(ms 50%) $(ms 99%)"
}

echo "| run | sensor | requests/s | p50 ms | p99 ms |"
echo "|---|---|---:|---:|---:|"
declare -A sum_rps sum_p50 sum_p99
for round in 1 2; do
  for mode in off on; do
    if [ "$mode" = on ]; then
      rm -f "$work/ready"
      "$bin" capture --out /dev/null --port "$port" --ready-file "$work/ready" 2>"$work/log" &
      sensor=$!
      for _ in $(seq 300); do [ -f "$work/ready" ] && break; sleep 0.1; done
    fi
    read -r rps p50 p99 < <(load)
    if [ "$mode" = on ]; then
      kill -INT "$sensor"
      wait "$sensor"
      lost="$(grep -c 'capture lost data' "$work/log" || true)"
      [ "$lost" = 0 ] || echo "warning: the sensor reported losses: $(grep 'capture lost data' "$work/log")" >&2
    fi
    echo "| $round | $mode | $rps | $p50 | $p99 |"
    add() { awk -v a="${1:-0}" -v b="$2" 'BEGIN { print a + b }'; }
    sum_rps[$mode]=$(add "${sum_rps[$mode]:-0}" "$rps")
    sum_p50[$mode]=$(add "${sum_p50[$mode]:-0}" "$p50")
    sum_p99[$mode]=$(add "${sum_p99[$mode]:-0}" "$p99")
  done
done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }
echo
echo "on/off: throughput $(ratio "${sum_rps[on]}" "${sum_rps[off]}"), p50 latency $(ratio "${sum_p50[on]}" "${sum_p50[off]}"), p99 latency $(ratio "${sum_p99[on]}" "${sum_p99[off]}") (wrk -t1 -c$conns, ${secs}s per run, 1 KiB responses, nginx 1 worker, $(nproc) CPUs)"
