#!/usr/bin/env bash
# HTTPS server throughput with and without the JVM agent, in one run: a
# com.sun.net.httpserver.HttpsServer (SSLEngine) of java-testapps on
# loopback, loaded by java-testapps' load-client (java.net.http, HTTP/1.1
# keep-alive) for SECONDS per round, rounds alternating without and with the
# agent, while `nettap capture` (release) runs and takes the agent's
# plaintext: `with` on the agent's default route (it hands its socket to the
# sensor), `path` told the sensor's socket path (`socket=PATH`); a fourth
# mode has the agent with no sensor to send to (what the agent costs inside
# the JVM alone). Prints one Markdown row per round (throughput, and the CPU
# time the server, the client and the sensor spent per request, the context
# switches per request of the machine, the server and the sensor) and the
# ratios of the medians. Each round first loads the server for WARMUP
# seconds, not counted: the JIT compiles the server's (and the agent's) hot
# code, and the agent's early window (chunks kept for a first sensor) is
# over; the CPU columns cover the measured window only.
#   bash bench/jvm_agent.sh [SECONDS] [ROUNDS] [SIZE] [THREADS] [WARMUP]
set -euo pipefail
cd "$(dirname "$0")/.."
source ci/install.sh >&2
secs="${1:-10}" rounds="${2:-3}" size="${3:-1024}" threads="${4:-4}" warmup="${5:-20}"
cargo build --release --locked -p nettap-sensor -p nettap-jvm-agent >&2
(cd java-testapps && mvn -q -B -o -Dstyle.color=never -Dmaven.repo.local="$NETTAP_M2" package >&2)
java=/usr/lib/jvm/java-17-openjdk-amd64/bin/java
jar=java-testapps/jdk-peers/target/jdk-peers.jar
agent="$PWD/target/release/libnettap_agent.so"
port=19998
work="$(mktemp -d)"
cleanup() { kill "${server:-}" "${sensor:-}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost \
  -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
target/release/nettap capture --out /dev/null --port "$port" --agent-socket "$work/agent.sock" \
  --ready-file "$work/sensor.ready" 2>"$work/sensor.log" &
sensor=$!
for _ in $(seq 300); do [ -f "$work/sensor.ready" ] && break; sleep 0.1; done
# CPU time (clock ticks) of a process so far: user + system.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# Context switches so far: of a process's live threads (voluntary and not),
# or of the whole machine (no argument). A sensor that wakes often costs
# the JVMs switches on two cores.
switches() {
  if [ -z "${1:-}" ]; then awk '/^ctxt/ { print $2 }' /proc/stat; return; fi
  cat /proc/"$1"/task/*/status 2>/dev/null | awk '/ctxt_switches/ { n += $2 } END { print n + 0 }'
}
hz="$(getconf CLK_TCK)"
echo "| round | agent | requests/s ($threads threads, $size B each way, ${secs} s after ${warmup} s) | CPU µs per request: server + client + sensor | of it, server | client | sensor | sensor RSS MiB after | context switches per request: machine | server | sensor |"
echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
declare -a without with path absent cpu_without cpu_with cpu_path cpu_absent
for round in $(seq "$rounds"); do
  for mode in without with path absent; do
    rm -f "$work/server.ready"
    opts=()
    [ "$mode" = with ] && opts=("-agentpath:$agent")
    [ "$mode" = path ] && opts=("-agentpath:$agent=socket=$work/agent.sock")
    [ "$mode" = absent ] && opts=("-agentpath:$agent=socket=$work/nobody.sock")
    # nodelay: without it, Nagle and delayed ACKs cap each connection near 20 requests/s.
    "$java" "${opts[@]}" -Dsun.net.httpserver.nodelay=true -jar "$jar" https-server --port "$port" --requests 0 --threads "$threads" \
      --cert "$work/cert.pem" --key "$work/key.pem" --ready "$work/server.ready" 2>>"$work/server.log" &
    server=$!
    for _ in $(seq 300); do [ -f "$work/server.ready" ] && break; sleep 0.1; done
    rm -f "$work/measuring"
    "$java" -jar "$jar" load-client --port "$port" --cert "$work/cert.pem" --size "$size" --threads "$threads" \
      --warmup "$warmup" --seconds "$secs" --mark "$work/measuring" >"$work/client.out" 2>&1 &
    client=$!
    while [ ! -f "$work/measuring" ] && kill -0 "$client" 2>/dev/null; do sleep 0.05; done
    s0="$(ticks "$sensor")" j0="$(ticks "$server")"
    w0=("$(switches)" "$(switches "$server")" "$(switches "$sensor")")
    wait "$client"
    s1="$(ticks "$sensor")" j1="$(ticks "$server")"
    w1=("$(switches)" "$(switches "$server")" "$(switches "$sensor")")
    kill "$server"; wait "$server" 2>/dev/null || true
    out="$(cat "$work/client.out")"
    rps="$(sed -nE 's/.*per_second=([0-9]+).*/\1/p' <<<"$out")"
    reqs="$(sed -nE 's/.*requests=([0-9]+).*/\1/p' <<<"$out")"
    client_cpu="$(sed -nE 's/.*cpu_seconds=([0-9.]+).*/\1/p' <<<"$out")"
    cpu="$(awk -v s=$((s1 - s0)) -v j=$((j1 - j0)) -v c="$client_cpu" -v hz="$hz" -v n="$reqs" \
      'BEGIN { printf "%.0f", ((s + j) / hz + c) * 1e6 / n }')"
    # Each process's share, and the sensor's RSS: a cost that grows from
    # round to round (state kept across JVMs) shows in the sensor's column.
    parts="$(awk -v s=$((s1 - s0)) -v j=$((j1 - j0)) -v c="$client_cpu" -v hz="$hz" -v n="$reqs" \
      'BEGIN { printf "%.0f | %.0f | %.0f", j / hz * 1e6 / n, c * 1e6 / n, s / hz * 1e6 / n }')"
    rss="$(awk '/^VmRSS/ { printf "%.1f", $2 / 1024 }' "/proc/$sensor/status")"
    sw="$(awk -v n="$reqs" -v a="${w1[0]} ${w1[1]} ${w1[2]}" -v b="${w0[0]} ${w0[1]} ${w0[2]}" \
      'BEGIN { split(a, x); split(b, y); printf "%.2f | %.2f | %.2f", (x[1] - y[1]) / n, (x[2] - y[2]) / n, (x[3] - y[3]) / n }')"
    echo "| $round | $mode | $rps | $cpu | $parts | $rss | $sw |"
    case "$mode" in
      with) with+=("$rps") cpu_with+=("$cpu") ;;
      path) path+=("$rps") cpu_path+=("$cpu") ;;
      absent) absent+=("$rps") cpu_absent+=("$cpu") ;;
      *) without+=("$rps") cpu_without+=("$cpu") ;;
    esac
  done
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
m0="$(median "${without[@]}")" m1="$(median "${with[@]}")" m2="$(median "${absent[@]}")" m3="$(median "${path[@]}")"
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }
echo
echo "medians: without the agent $m0 requests/s; with it and the sensor $m1 ($(ratio "$m1" "$m0")); the same by a socket path $m3 ($(ratio "$m3" "$m0")); with it and no sensor $m2 ($(ratio "$m2" "$m0"))"
c0="$(median "${cpu_without[@]}")" c1="$(median "${cpu_with[@]}")" c2="$(median "${cpu_absent[@]}")" c3="$(median "${cpu_path[@]}")"
# Each round's modes ran back to back: their ratio to that round's `without`
# is the figure a drifting host's speed moves least.
paired() { local -n xs="$1"; for i in "${!xs[@]}"; do ratio "${xs[$i]}" "${without[$i]}"; echo; done | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "medians of each round's ratio to its own \`without\`: with the sensor $(paired with); by a socket path $(paired path); no sensor $(paired absent)"
echo "CPU per request, medians: without the agent $c0 µs; with it and the sensor $c1 ($(ratio "$c1" "$c0")); by a socket path $c3 ($(ratio "$c3" "$c0")); with it and no sensor $c2 ($(ratio "$c2" "$c0"))"
grep -c "probe attached.*JVMTI" "$work/sensor.log" | xargs -I{} echo "JVMs the sensor saw attach: {}"
