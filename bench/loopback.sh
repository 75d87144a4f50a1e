#!/usr/bin/env bash
# Live capture throughput on loopback: for each load, starts `nettap capture`
# (release build) on one port, runs the bounded load, stops the sensor and
# prints one Markdown row from the sensor's closing log line.
#   bash bench/loopback.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source ci/install.sh >&2
cargo build --release --locked -p nettap-sensor --bin nettap >&2
bin=target/release/nettap
port=19999
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
echo "| load | records handled | payload bytes | drop records (count, bytes) | pipeline per busy second |"
echo "|---|---:|---:|---|---|"
for spec in "100 200000 /dev/null" "100 200000 $work/out.jsonl" "16384 20000 /dev/null" "65536 3000 /dev/null"; do
  set -- $spec
  rm -f "$work/ready"
  "$bin" capture --out "$3" --port "$port" --ring-buffer-bytes 67108864 --max-bytes-per-call 16777216 \
    --ready-file "$work/ready" 2>"$work/log" &
  pid=$!
  for _ in $(seq 300); do [ -f "$work/ready" ] && break; sleep 0.1; done
  python3 bench/loopback_load.py "$port" "$1" "$2"
  sleep 1
  kill -INT "$pid"
  wait "$pid"
  line="$(grep "capture finished" "$work/log")"
  field() { sed -E "s/.*$1=\"?([0-9.]+).*/\\1/" <<<"$line"; }
  lost="$(grep -E 'capture lost data' "$work/log" | sed -E 's/.*count=([0-9]+) bytes=([0-9]+).*/\1, \2/' | paste -sd';' || true)"
  echo "| $2 × $1 B → $(basename "$3") | $(field events) | $(field payload_bytes) | ${lost:-0} | $(field pipeline_events_per_busy_sec) records/s, $(field pipeline_mb_per_busy_sec) MB/s |"
done
