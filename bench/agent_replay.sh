#!/usr/bin/env bash
# The sensor's CPU per JVM exchange over the real agent socket, without a
# JVM: bench/agent_frames.py writes EXCHANGES request/response exchanges as
# an agent's frames into `nettap capture --agent-socket` (records to
# /dev/null) as fast as the sensor reads them, and the sensor's user +
# system time (/proc/PID/stat) until it has read them all is divided by
# EXCHANGES. With a second binary the two alternate round by round (A/B of
# two builds on one host; medians printed). Frame reading, the HTTP parser,
# the record writer, the socket reads and the runtime's wake-ups are all in
# it; the JVM and the kernel capture are not.
#   bash bench/agent_replay.sh [EXCHANGES] [ROUNDS] [BIN] [OTHER_BIN]
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-200000}" rounds="${2:-5}" a="${3:-}" b="${4:-}"
if [ -z "$a" ]; then
  source ci/install.sh >&2
  cargo build --release --locked -p nettap-sensor >&2
  a=target/release/nettap
fi
work="$(mktemp -d)"
sensor=
cleanup() { [ -n "$sensor" ] && kill "$sensor" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz="$(getconf CLK_TCK)"
one() { # binary -> µs of the sensor's CPU per exchange
  rm -f "$work/ready" "$work/agent.sock"
  # --port 1: the kernel side captures (almost) nothing of its own.
  "$1" capture --out /dev/null --port 1 --agent-socket "$work/agent.sock" --ready-file "$work/ready" 2>"$work/log" &
  sensor=$!
  for _ in $(seq 300); do [ -f "$work/ready" ] && break; sleep 0.1; done
  [ -f "$work/ready" ] || { cat "$work/log" >&2; echo "agent_replay: the sensor did not start" >&2; exit 1; }
  sleep 1
  local t0 t1 prev=-1 t
  t0="$(ticks "$sensor")"
  python3 bench/agent_frames.py "$work/agent.sock" "$n"
  # Done when its CPU time stops moving: it has read and written everything.
  while :; do sleep 0.5; t="$(ticks "$sensor")"; [ "$t" = "$prev" ] && break; prev="$t"; done
  t1="$(ticks "$sensor")"
  kill "$sensor"; wait "$sensor" 2>/dev/null || true; sensor=
  if grep -q "bad frame" "$work/log"; then echo "agent_replay: the sensor refused a frame" >&2; exit 1; fi
  awk -v d=$((t1 - t0)) -v hz="$hz" -v n="$n" 'BEGIN { printf "%.2f", d / hz * 1e6 / n }'
}
echo "| round | binary | sensor CPU µs per exchange ($n exchanges, 1 KiB bodies each way) |"
echo "|---|---|---:|"
declare -a ra rb
for r in $(seq "$rounds"); do
  x="$(one "$a")"; ra+=("$x"); echo "| $r | $a | $x |"
  if [ -n "$b" ]; then y="$(one "$b")"; rb+=("$y"); echo "| $r | $b | $y |"; fi
done
median() { printf '%s\n' "$@" | sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
ma="$(median "${ra[@]}")"
echo
if [ -n "$b" ]; then
  mb="$(median "${rb[@]}")"
  echo "medians: $a $ma µs, $b $mb µs ($(awk -v x="$mb" -v y="$ma" 'BEGIN { printf "%.2f", x / y }') of the first)"
else
  echo "median: $ma µs per exchange"
fi
