#!/usr/bin/env bash
# The exec gate's cost to new programs (issue 26): N never-seen programs
# (copies of /bin/true) at RATE a second, first with no sensor, then right
# after `nettap capture` is ready; before the loop, one timed run of FIRST
# (default `python3 -c pass`: through a version manager's shim that is a
# chain of new scripts and programs). Prints the programs' wall times and,
# from the sensor's debug lines, how long the gate held each program.
#   bash bench/exec_gate.sh [N] [RATE] [NETTAP]     (defaults 200 50 target/debug/nettap)
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-200}" rate="${2:-50}" bin="${3:-target/debug/nettap}"
[ -x "$bin" ] || { echo "no $bin: cargo build -p nettap-sensor" >&2; exit 1; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "no sensor: $(python3 bench/exec_load.py "$n" "$rate" python3 -c pass)"
NETTAP_LOG=info,nettap_sensor::probes::exec_gate=debug \
  "$bin" capture --out /dev/null --port 1 --ready-file "$work/ready" 2>"$work/log" &
pid=$!
for _ in $(seq 600); do [ -f "$work/ready" ] && break; sleep 0.05; done
[ -f "$work/ready" ] || { kill "$pid"; cat "$work/log" >&2; exit 1; }
echo "sensor on: $(python3 bench/exec_load.py "$n" "$rate" python3 -c pass)"
kill -INT "$pid"
wait "$pid"
grep -o 'held_us=[0-9]*' "$work/log" | cut -d= -f2 | sort -n | awk '
  { a[NR] = $1 }
  END { if (NR == 0) { print "no holds logged"; exit 1 }
        printf "gate holds: %d, p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, max %.2f ms\n",
          NR, a[int(NR*0.5)+1]/1e3, a[int(NR*0.9)+1]/1e3, a[int(NR*0.99)+1]/1e3, a[NR]/1e3 }'
echo "released at the limit: $(grep -c 'let go before the sensor had examined it' "$work/log" || true)"
