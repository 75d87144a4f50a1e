#!/usr/bin/env bash
# nettap's cost against no sensor, in one run, written to docs/benchmarks.md:
#   1. saturation: nginx (1 worker, keep-alive, 1 KiB responses) under wrk at
#      fixed concurrency on loopback, HTTPS (libssl.so.3 at both ends) and
#      plain HTTP; sensor off, on, and "hooks" (attached, keeping nothing:
#      --pid 1) alternated; throughput and p50/p99 ratios;
#   2. fixed rates: bench/goload (Go crypto/tls client, open loop) against the
#      same nginx over HTTPS at each rate, off then on: the sensor's CPU
#      (user + system from /proc/PID/stat, plus the run time of its BPF
#      programs from the kernel's BPF statistics) and memory (RSS, and the
#      memlock of its BPF maps);
#   3. loss: at each rate, the http records of each end / the requests sent,
#      and the drop records by reason;
#   4. soak: 1000 requests/s for --soak-secs, RSS sampled every 5 s;
#   5. pipeline: `cargo bench -p nettap-core --bench pipeline`.
# The sensor is a release build capturing the whole host with its defaults
# (JSON Lines to a file, or /dev/null at saturation), so both ends of every
# exchange are captured.
#
#   bash bench/run.sh [--sat-secs N] [--rounds N] [--conns N] [--rate-secs N]
#                     [--rates "100 500 1000 5000"] [--soak-secs N]
#                     [--sensor-args "ARGS"] [--bin PATH]
#                     [--parts "sat rates soak pipeline"] [--output FILE|-]
#
# Defaults are the full run (~25 minutes). --output - prints the section
# instead of replacing the marked one in docs/benchmarks.md. --sensor-args
# adds options to `nettap capture` (e.g. "--port 19443 --port 19080" keeps
# other traffic of a busy host out); --bin measures another nettap binary
# (no build); --parts runs only those workloads (a quick check: --output -).
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
cmdline="bash bench/run.sh"
for a in "$@"; do [[ "$a" == *" "* ]] && cmdline+=" \"$a\"" || cmdline+=" $a"; done

sat_secs=20 rounds=3 conns=16 rate_secs=30 rates="100 500 1000 5000" soak_secs=600
parts="sat rates soak pipeline" output=docs/benchmarks.md sensor_args="" bin=""
while (($#)); do
  case "$1" in
    --sat-secs) sat_secs="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    --conns) conns="$2"; shift 2 ;;
    --rate-secs) rate_secs="$2"; shift 2 ;;
    --rates) rates="$2"; shift 2 ;;
    --soak-secs) soak_secs="$2"; shift 2 ;;
    --sensor-args) sensor_args="$2"; shift 2 ;;
    --bin) bin="$2"; shift 2 ;;
    --parts) parts="$2"; shift 2 ;;
    --output) output="$2"; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench/run.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
soak_rate=1000
part() { [[ " $parts " == *" $1 "* ]]; }
https_port=19443 http_port=19080

source ci/install.sh >&2
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq --no-install-recommends wrk >/dev/null; }
command -v go >/dev/null || [ ! -x /usr/local/go/bin/go ] || export PATH="/usr/local/go/bin:$PATH"
command -v go >/dev/null || { echo "bench/run.sh: go is required for bench/goload" >&2; exit 1; }
log() { echo "bench/run.sh: $*" >&2; }
load_start="$(cut -d' ' -f1-3 /proc/loadavg)"

work="$(mktemp -d /tmp/nettap-bench.XXXXXX)"
chmod 755 "$work" # nginx's workers (not root) read www/ from it
nginx_pid="" sensor="" load_pid=""
bpf_stats_was="$(sysctl -n kernel.bpf_stats_enabled)"
cleanup() {
  [ -z "$load_pid" ] || kill "$load_pid" 2>/dev/null || true
  [ -z "$sensor" ] || kill -KILL "$sensor" 2>/dev/null || true
  [ -z "$nginx_pid" ] || kill -QUIT "$nginx_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  sysctl -q -w kernel.bpf_stats_enabled="$bpf_stats_was" || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ -z "$bin" ]; then
  log "building (release)"
  cargo build --release --locked -p nettap-sensor --bin nettap >&2
  bin="${CARGO_TARGET_DIR:-$root/target}/release/nettap"
fi
(cd bench/goload && go build -trimpath -o "$work/goload" .)
goload="$work/goload"

# One nginx serves every workload: HTTPS and HTTP, a 1 KiB file.
mkdir -p "$work/www"
head -c 1024 /dev/urandom | base64 -w0 | head -c 1024 >"$work/www/1k"
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost \
  -addext subjectAltName=IP:127.0.0.1 -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
cat >"$work/nginx.conf" <<CONF
worker_processes 1;
error_log $work/error.log;
pid $work/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$https_port ssl;
    listen 127.0.0.1:$http_port;
    ssl_certificate $work/cert.pem;
    ssl_certificate_key $work/key.pem;
    location / { root $work/www; }
  }
}
CONF
for port in $https_port $http_port; do # an nginx of a run just ended may still be closing
  for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null || continue 2; sleep 0.2; done
  log "port $port is in use: stop what listens there"; exit 1
done
nginx -p "$work" -c "$work/nginx.conf" -g "daemon off;" &
nginx_pid=$!
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$https_port) 2>/dev/null && break; sleep 0.1; done
sleep 0.2
kill -0 "$nginx_pid" 2>/dev/null || { log "nginx did not start (ports $https_port, $http_port in use?)"; exit 1; }

# ---- helpers ---------------------------------------------------------------
calc() { awk "BEGIN { printf \"$1\", $2 }"; }

# sensor_start OUT: `nettap capture` on the whole host, waits for its probes.
sensor_start() {
  rm -f "$work/ready"
  # shellcheck disable=SC2086 # word splitting of --sensor-args is meant
  "$bin" capture --out "$1" --agent-socket none --ready-file "$work/ready" $sensor_args 2>"$work/sensor.log" &
  sensor=$!
  for _ in $(seq 600); do
    [ -f "$work/ready" ] && return 0
    kill -0 "$sensor" 2>/dev/null || break
    sleep 0.1
  done
  log "the sensor did not get ready:"; tail -5 "$work/sensor.log" >&2; exit 1
}
# sensor_stop: SIGINT (flush, detach), SIGKILL after 60 s.
sensor_stop() {
  kill -INT "$sensor"
  for _ in $(seq 600); do kill -0 "$sensor" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$sensor" 2>/dev/null || true
  wait "$sensor" || log "the sensor exited with $?"
  sensor=""
}
# Lost data the sensor logged: "reason count; …" or "none".
logged_drops() {
  { grep -F 'capture lost data' "$work/sensor.log" || true; } |
    sed -E 's/.*count=([0-9]+).*reason="?([a-z0-9_]+).*/\2 \1/' |
    awk '{ n[$1] += $2 } END { for (r in n) printf "%s%s %d", (s++ ? "; " : ""), r, n[r]; if (!s) printf "none" }'
}
# CPU ticks (user + system) of PID.
cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'; }
# CPU ticks of nginx, master and workers.
nginx_ticks() {
  local t=0 p
  for p in $nginx_pid $(pgrep -P "$nginx_pid"); do t=$((t + $(cpu_ticks "$p"))); done
  echo "$t"
}
hz="$(getconf CLK_TCK)"
# Summed run_time_ns of the BPF programs PID holds (each program once).
bpf_ns() {
  awk 'FNR == 1 { id = "" } /^prog_id:/ { id = $2 } /^run_time_ns:/ && id != "" && !(id in seen) { seen[id]; s += $2 } END { printf "%d", s }' \
    /proc/"$1"/fdinfo/* 2>/dev/null
}
# The BPF programs PID holds, as JSON {id: [name, run_time_ns, run_cnt]}.
bpf_progs() {
  bpftool -j prog show | python3 -c '
import glob, json, sys
ids = set()
for f in glob.glob(f"/proc/{sys.argv[1]}/fdinfo/*"):
    try:
        lines = open(f).read().splitlines()
    except OSError:
        continue
    ids |= {int(l.split()[1]) for l in lines if l.startswith("prog_id:")}
progs = {p["id"]: [p.get("name", "?"), p.get("run_time_ns", 0), p.get("run_cnt", 0)] for p in json.load(sys.stdin) if p["id"] in ids}
json.dump(progs, sys.stdout)' "$1"
}
# bpf_breakdown BEFORE AFTER SECONDS: a Markdown table of the programs that ran.
bpf_breakdown() {
  python3 - "$1" "$2" "$3" <<'PY'
import json, sys
a, b, secs = json.load(open(sys.argv[1])), json.load(open(sys.argv[2])), float(sys.argv[3])
rows = {}
for i, (name, ns, cnt) in b.items():
    _, ns0, cnt0 = a.get(i, [name, 0, 0])
    r = rows.setdefault(name, [0, 0])
    r[0] += ns - ns0
    r[1] += cnt - cnt0
print("| program | runs/s | ns per run | millicores |")
print("|---|---:|---:|---:|")
for name, (ns, cnt) in sorted(rows.items(), key=lambda kv: -kv[1][0]):
    if cnt:
        print(f"| `{name}` | {cnt / secs:.0f} | {ns / cnt:.0f} | {ns / secs / 1e6:.1f} |")
PY
}
# Summed memlock bytes of the BPF maps PID holds (each map once).
map_bytes() {
  awk 'FNR == 1 { m = 0 } /^map_type:/ { m = 1 } /^memlock:/ && m { b = $2 } /^map_id:/ && m && !($2 in seen) { seen[$2]; s += b } END { printf "%d", s }' \
    /proc/"$1"/fdinfo/* 2>/dev/null
}
# Voluntary context switches (wake-ups) of all PID's threads.
wakeups() { cat /proc/"$1"/task/*/status 2>/dev/null | awk '$1 == "voluntary_ctxt_switches:" { s += $2 } END { print s + 0 }'; }
# RSS (kB) of PID's mappings of BPF maps: the ring buffer, whose data pages
# are mapped twice (for reads across the wrap), so they count twice in VmRSS.
map_rss_kb() { awk '/^[0-9a-f]+-[0-9a-f]+ / { m = ($6 == "anon_inode:bpf-map") } /^Rss:/ && m { s += $2 } END { print s + 0 }' "/proc/$1/smaps"; }
status_kb() { awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"; }
mib() { calc "%.1f" "$1 / 1024"; }
jget() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }
# http records of one end of the HTTPS workload in a JSON Lines file.
count_http() { grep -F '"kind":"http"' "$1" | grep -F "\"comm\":\"$2\"" | grep -cF "$3" || true; }
# drop records in a JSON Lines file: "reason count; …" or "none".
file_drops() {
  { grep -F '"kind":"drop"' "$1" || true; } | python3 -c '
import json, sys
n = {}
for line in sys.stdin:
    r = json.loads(line)
    n[r["reason"]] = n.get(r["reason"], 0) + r["count"]
print("; ".join(f"{k} {v}" for k, v in sorted(n.items())) or "none")'
}
met() { awk "BEGIN { exit !($1) }" && echo met || echo "**missed**"; }
# Each part appends its rows to the targets table and writes its section.
targets="$work/targets.md"
: >"$targets"
target() { echo "| $1 | $2 | $(met "$3") |" >>"$targets"; }

# ---- 1. saturation ---------------------------------------------------------
# One wrk run: "requests/s p50_ms p99_ms".
wrk_run() {
  timeout $((sat_secs + 60)) wrk -t1 -c"$conns" -d"${sat_secs}s" --latency "$1" >"$work/wrk.out"
  ! grep -q 'Non-2xx\|Socket errors' "$work/wrk.out" || { log "wrk: failed requests:"; cat "$work/wrk.out" >&2; exit 1; }
  ms() { awk -v p="$1" '$1 == p { v = $2; if (v ~ /us$/) { sub(/us/, "", v); v /= 1000 } else if (v ~ /ms$/) { sub(/ms/, "", v) } else if (v ~ /s$/) { sub(/s/, "", v); v *= 1000 } print v }' "$work/wrk.out"; }
  echo "$(awk '/Requests\/sec/ { print $2 }' "$work/wrk.out") $(ms 50%) $(ms 99%)"
}
saturation() {
  local proto port round mode cpu drops rps p50 p99 t0 w0 rows="" ratios="" k sensor_args_was
  declare -A sum r
  for proto in https http; do
    port=$https_port; [ "$proto" = http ] && port=$http_port
    for round in $(seq "$rounds"); do
      for mode in off hooks on; do
        cpu="–" drops="–"
        if [ "$mode" != off ]; then
          if [ "$mode" = hooks ]; then sensor_args_was=$sensor_args sensor_args+=" --pid 1"; fi
          sensor_start /dev/null
          [ "$mode" != hooks ] || sensor_args=$sensor_args_was
          t0=$(cpu_ticks "$sensor") w0=$(date +%s.%N)
        fi
        log "saturation $proto round $round sensor $mode"
        read -r rps p50 p99 < <(wrk_run "$proto://127.0.0.1:$port/1k")
        [ -n "${p99:-}" ] || exit 1
        if [ "$mode" != off ]; then
          cpu="$(calc "%.0f%%" "($(cpu_ticks "$sensor") - $t0) / $hz / ($(date +%s.%N) - $w0) * 100")"
          sensor_stop
          drops="$(logged_drops)"
        fi
        rows+="| ${proto^^} | $round | $mode | $rps | $p50 | $p99 | $cpu | $drops |"$'\n'
        sum[$mode,rps]=$(calc "%f" "${sum[$mode,rps]:-0} + $rps")
        sum[$mode,p50]=$(calc "%f" "${sum[$mode,p50]:-0} + $p50")
        sum[$mode,p99]=$(calc "%f" "${sum[$mode,p99]:-0} + $p99")
      done
    done
    for k in rps p50 p99; do
      r[$k]=$(calc "%.3f" "${sum[on,$k]} / ${sum[off,$k]}")
      r[hooks,$k]=$(calc "%.3f" "${sum[hooks,$k]} / ${sum[off,$k]}")
    done
    unset sum; declare -A sum
    ratios+="| ${proto^^} | ${r[rps]} | ${r[p50]} | ${r[p99]} | ${r[hooks,rps]} | ${r[hooks,p50]} | ${r[hooks,p99]} |"$'\n'
    # Issue 26's targets: HTTPS 0.70 of no sensor and 0.90 of the hooks that
    # keep nothing (the floor any uprobe sensor pays); HTTP 0.80.
    if [ "$proto" = https ]; then
      target "HTTPS saturation: throughput on/off ≥ 0.70" "${r[rps]}" "${r[rps]} >= 0.70"
      local on_hooks; on_hooks=$(calc "%.3f" "${r[rps]} / ${r[hooks,rps]}")
      target "HTTPS saturation: throughput on/hooks ≥ 0.90" "$on_hooks" "$on_hooks >= 0.90"
    else
      target "${proto^^} saturation: throughput on/off ≥ 0.80" "${r[rps]}" "${r[rps]} >= 0.80"
    fi
    target "${proto^^} saturation: p99 latency on/off ≤ 1.5" "${r[p99]}" "${r[p99]} <= 1.5"
  done
  cat <<MD
### 1. Saturation

nginx (1 worker, keep-alive, 1 KiB file) under \`wrk -t1 -c$conns\` for $sat_secs s per
run; in each of $rounds round(s) without the sensor (off), with it keeping nothing
(hooks: \`--pid 1\`, so every probe and tracepoint fires and its program returns
at the filter) and capturing (on, records to /dev/null). Sensor CPU is its
user + system time over the run (100 % = one CPU); losses are those the sensor
logged (\`capture lost data\`). Ratios are of the means over the rounds.

| workload | round | sensor | requests/s | p50 ms | p99 ms | sensor CPU | lost (reason count) |
|---|---:|---|---:|---:|---:|---:|---|
${rows}
| workload | throughput on/off | p50 on/off | p99 on/off | throughput hooks/off | p50 hooks/off | p99 hooks/off |
|---|---:|---:|---:|---:|---:|---:|
${ratios}
MD
}

# ---- 2 and 3. fixed rates --------------------------------------------------
url="https://127.0.0.1:$https_port/1k"
# goload_run RATE SECS OUTFILE: adds "goload_m" and "nginx_m", their CPU
# over the run in millicores, to goload's JSON.
goload_run() {
  local n0 w0 n1 w1
  n0=$(nginx_ticks) w0=$(date +%s.%N)
  timeout $(($2 + 60)) "$goload" -url "$url" -cacert "$work/cert.pem" -rate "$1" -duration "${2}s" >"$3"
  n1=$(nginx_ticks) w1=$(date +%s.%N)
  [ "$(jget "$3" errors)" = 0 ] || log "goload: $(cat "$3")"
  python3 - "$3" "$(calc "%f" "$w1 - $w0")" "$(calc "%f" "($n1 - $n0) / $hz")" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
wall, nginx = float(sys.argv[2]), float(sys.argv[3])
r["goload_m"] = round(r["cpu_ms"] / wall)
r["nginx_m"] = round(nginx * 1000 / wall)
json.dump(r, open(sys.argv[1], "w"))
PY
}
rates_part() {
  local rate t0 b0 c0 w0 t1 b1 c1 w1 rss hwm ring_rss maps wall user_m bpf_m total_m wake_s maps_kb total_kb
  local sent client server drops lost rows="" loss_rows="" no_loss=1 upto=0
  sysctl -q -w kernel.bpf_stats_enabled=1
  for rate in $rates; do
    log "rate $rate/s sensor off"
    goload_run "$rate" "$rate_secs" "$work/off.json"
    log "rate $rate/s sensor on"
    sensor_start "$work/out.jsonl"
    bpf_progs "$sensor" >"$work/progs0.json"
    t0=$(cpu_ticks "$sensor") b0=$(bpf_ns "$sensor") c0=$(wakeups "$sensor") w0=$(date +%s.%N)
    goload_run "$rate" "$rate_secs" "$work/on.json"
    sleep 1 # what the load left in the ring buffer
    t1=$(cpu_ticks "$sensor") b1=$(bpf_ns "$sensor") c1=$(wakeups "$sensor") w1=$(date +%s.%N)
    bpf_progs "$sensor" >"$work/progs1.json"
    rss=$(status_kb "$sensor" VmRSS) hwm=$(status_kb "$sensor" VmHWM) ring_rss=$(map_rss_kb "$sensor")
    maps=$(map_bytes "$sensor")
    sensor_stop
    wall=$(calc "%f" "$w1 - $w0")
    user_m=$(calc "%.0f" "($t1 - $t0) / $hz / $wall * 1000")
    bpf_m=$(calc "%.0f" "($b1 - $b0) / 1e9 / $wall * 1000")
    total_m=$((user_m + bpf_m))
    wake_s=$(calc "%.0f" "($c1 - $c0) / $wall")
    maps_kb=$((maps / 1024))
    total_kb=$((rss - ring_rss + maps_kb))
    sent=$(jget "$work/on.json" sent)
    client=$(count_http "$work/out.jsonl" goload "\"remote\":\"127.0.0.1:$https_port\"")
    server=$(count_http "$work/out.jsonl" nginx "\"local\":\"127.0.0.1:$https_port\"")
    drops=$(file_drops "$work/out.jsonl")
    rm -f "$work/out.jsonl"
    rows+="| $rate | $(jget "$work/off.json" ok) / $(jget "$work/off.json" sent) | $(jget "$work/on.json" ok) / $sent | $(jget "$work/off.json" p50_ms) → $(jget "$work/on.json" p50_ms) | $(jget "$work/off.json" p99_ms) → $(jget "$work/on.json" p99_ms) | $(jget "$work/off.json" goload_m) → $(jget "$work/on.json" goload_m) | $(jget "$work/off.json" nginx_m) → $(jget "$work/on.json" nginx_m) | $user_m | $wake_s | $bpf_m | **$total_m** | $(mib "$rss") | $(mib "$ring_rss") | $(mib "$hwm") | $(mib "$maps_kb") | **$(mib "$total_kb")** |"$'\n'
    loss_rows+="| $rate | $sent | $client ($(calc "%.4f" "$client / $sent")) | $server ($(calc "%.4f" "$server / $sent")) | $drops |"$'\n'
    if [ "$rate" = 1000 ]; then
      bpf_breakdown "$work/progs0.json" "$work/progs1.json" "$wall" >"$work/progs1000.md"
      target "1000 req/s: sensor CPU ≤ 10 millicores (user + system + BPF)" "$total_m m" "$total_m <= 10"
      target "1000 req/s: sensor memory ≤ 24 MiB (RSS + BPF maps, ring counted once)" "$(mib "$total_kb") MiB" "$total_kb <= 24576"
    fi
    if [ "$rate" = 5000 ]; then
      local go_ratio; go_ratio=$(calc "%.2f" "$(jget "$work/on.json" goload_m) / $(jget "$work/off.json" goload_m)")
      target "Go HTTPS client at 5000 req/s: its CPU on/off ≤ 1.10" "$go_ratio" "$go_ratio <= 1.10"
    fi
    if awk "BEGIN { exit !($rate <= 5000) }"; then
      upto=$rate
      lost=$(((sent - client) + (sent - server)))
      [ "$lost" = 0 ] && [ "$drops" = none ] || no_loss=0
    fi
  done
  sysctl -q -w kernel.bpf_stats_enabled="$bpf_stats_was"
  local progs_md=""
  if [ -s "$work/progs1000.md" ]; then
    progs_md="The BPF programs at 1000 req/s (\`bpftool prog show\` before and after; every"$'\n'
    progs_md+="process's calls, not only the load's):"$'\n\n'"$(cat "$work/progs1000.md")"$'\n'
  fi
  if ((upto)); then
    target "no loss up to 5000 req/s (both ends, no drop record; measured to $upto)" \
      "$( ((no_loss)) && echo none lost || echo 'losses: see 3')" "$no_loss == 1"
  fi
  cat <<MD
### 2. Resource use at fixed rates

\`bench/goload\` (Go net/http + crypto/tls, HTTP/1.1 keep-alive, open loop:
latency from each request's due time) GETs the 1 KiB file from the same nginx
over HTTPS for $rate_secs s per rate, first without the sensor, then with it
(records to a JSON Lines file). CPU in millicores over the load (+1 s): the
sensor's user + system time from \`/proc/PID/stat\`, and the run time of its
BPF programs (\`run_time_ns\` in their fdinfo, \`kernel.bpf_stats_enabled=1\`),
which the kernel spends in the traced processes, all of them on the host.
Wake-ups are the sensor's voluntary context switches. Memory at the end of
the load: VmRSS, the part of it that is the sensor's mapping of the ring
buffer (the kernel maps its data pages twice, so a ring read all round counts
twice its size), VmHWM, and the \`memlock\` of the BPF maps (the 8 MiB ring
buffer is most of it); memory is RSS without the ring mapping plus the maps,
so each page is counted once. The CPU of goload and nginx
themselves (their user + system time over the run) shows what the probes cost
the traced programs: the BPF run time and the uprobe traps (a probe on an
instruction the kernel does not emulate is single-stepped, a debug trap more;
see below), which no sensor process is charged for.

| req/s | ok / sent, off | ok / sent, on | p50 ms off → on | p99 ms off → on | goload CPU m, off → on | nginx CPU m, off → on | sensor user+sys m | sensor wake-ups/s | BPF m | CPU m | RSS MiB | of it, ring mapping | HWM MiB | BPF maps MiB | memory MiB |
|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|
${rows}
${progs_md}
### 3. Loss at fixed rates

\`http\` records of each end (goload through the Go TLS probes, nginx through
the OpenSSL probes) against the requests goload sent, and the \`drop\` records.

| req/s | sent | client records (ratio) | server records (ratio) | drop records (reason count) |
|---:|---:|---:|---:|---|
${loss_rows}
MD
}

# ---- 4. soak ---------------------------------------------------------------
soak() {
  local t0 b0 w0 t1 b1 w1 rss_load warm series="" elapsed=0 rss_warm="" r rss_end hwm maps wall
  local cpu sent client server drops growth series_mib
  log "soak: $soak_rate/s for $soak_secs s"
  sysctl -q -w kernel.bpf_stats_enabled=1
  sensor_start "$work/out.jsonl"
  t0=$(cpu_ticks "$sensor") b0=$(bpf_ns "$sensor") w0=$(date +%s.%N)
  rss_load=$(status_kb "$sensor" VmRSS)
  "$goload" -url "$url" -cacert "$work/cert.pem" -rate "$soak_rate" -duration "${soak_secs}s" >"$work/soak.json" &
  load_pid=$!
  warm=$((soak_secs / 10 > 5 ? soak_secs / 10 : 5))
  while kill -0 "$load_pid" 2>/dev/null; do
    sleep 5
    elapsed=$((elapsed + 5))
    kill -0 "$load_pid" 2>/dev/null || break
    r=$(status_kb "$sensor" VmRSS)
    series+="$r "
    [ -n "$rss_warm" ] || [ "$elapsed" -lt "$warm" ] || rss_warm=$r
    [ "$elapsed" -lt $((soak_secs + 120)) ] || { log "soak load overran"; exit 1; }
  done
  wait "$load_pid"
  load_pid=""
  rss_end=$(status_kb "$sensor" VmRSS)
  [ -n "$rss_warm" ] || rss_warm=$rss_end
  sleep 1
  t1=$(cpu_ticks "$sensor") b1=$(bpf_ns "$sensor") w1=$(date +%s.%N)
  hwm=$(status_kb "$sensor" VmHWM) maps=$(map_bytes "$sensor")
  sensor_stop
  sysctl -q -w kernel.bpf_stats_enabled="$bpf_stats_was"
  wall=$(calc "%f" "$w1 - $w0")
  cpu=$(calc "%.0f" "($t1 - $t0) / $hz / $wall * 1000 + ($b1 - $b0) / 1e9 / $wall * 1000")
  sent=$(jget "$work/soak.json" sent)
  client=$(count_http "$work/out.jsonl" goload "\"remote\":\"127.0.0.1:$https_port\"")
  server=$(count_http "$work/out.jsonl" nginx "\"local\":\"127.0.0.1:$https_port\"")
  drops=$(file_drops "$work/out.jsonl")
  rm -f "$work/out.jsonl"
  growth=$(calc "%.1f" "($rss_end - $rss_warm) / $rss_warm * 100")
  # At most 12 points of the series, in MiB.
  series_mib=$(tr ' ' '\n' <<<"$series" | awk 'NF { v[n++] = $1 } END { step = n > 12 ? n / 12 : 1; for (i = 0; i < n; i += step) printf "%s%.1f", (i ? ", " : ""), v[int(i)] / 1024 }')
  target "soak ($soak_secs s at $soak_rate req/s): RSS growth ≤ 5 %" "$growth %" "$growth <= 5"
  cat <<MD
### 4. Soak

goload at $soak_rate req/s for $soak_secs s with the sensor on; RSS sampled
every 5 s, growth from the sample at $warm s (after warm-up) to the end.

| RSS at load start | at $warm s | at end | growth | VmHWM | BPF maps | CPU m (user + system + BPF) | client / server records / sent | drop records |
|---:|---:|---:|---:|---:|---:|---:|---|---|
| $(mib "$rss_load") MiB | $(mib "$rss_warm") MiB | $(mib "$rss_end") MiB | $growth % | $(mib "$hwm") MiB | $(mib $((maps / 1024))) MiB | $cpu | $client / $server / $sent | $drops |

RSS (MiB) over the soak: $series_mib.

MD
}

# ---- 5. pipeline -----------------------------------------------------------
pipeline() {
  log "cargo bench -p nettap-core --bench pipeline"
  cat <<MD
### 5. User-space pipeline on one core

\`cargo bench -p nettap-core --bench pipeline\` (replayed input, no kernel,
per second of the bench thread's CPU time; what the rows are: see the
section on it below).

$(cargo bench --locked -p nettap-core --bench pipeline 2>/dev/null | grep '^|')

MD
}

# ---- the section -----------------------------------------------------------
: >"$work/parts.md"
! part sat || saturation >>"$work/parts.md"
! part rates || rates_part >>"$work/parts.md"
! part soak || soak >>"$work/parts.md"
! part pipeline || pipeline >>"$work/parts.md"
{
  echo "<!-- bench/run.sh: begin (generated; edit bench/run.sh instead) -->"
  echo "## Overhead against no sensor"
  echo
  echo "    $cmdline"
  echo
  echo "$(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- sensor sensor-ebpf || echo ' (modified)'),"
  echo "Linux $(uname -r) $(uname -m), $(nproc) × $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo),"
  echo "load average $load_start at the start and $(cut -d' ' -f1-3 /proc/loadavg) at the end."
  echo "The sensor is $([ "$bin" = "${CARGO_TARGET_DIR:-$root/target}/release/nettap" ] && echo "the release build" || echo "\`$bin\`"),"
  echo "run as \`nettap capture --out FILE --agent-socket none${sensor_args:+ $sensor_args}\`"
  echo "(defaults otherwise$([ -n "$sensor_args" ] || echo ": the whole host")); both ends of every exchange are on this host, so it"
  echo "captures each exchange twice (client and server). nginx, the load and the"
  echo "sensor share the $(nproc) CPUs."
  echo
  if [ -s "$targets" ]; then
    echo "### Targets"
    echo
    echo "| target | measured | |"
    echo "|---|---:|---|"
    cat "$targets"
    echo
  fi
  cat "$work/parts.md"
  echo "<!-- bench/run.sh: end -->"
} | cat -s >"$work/section.md"

if [ "$output" = - ]; then
  cat "$work/section.md"
else
  python3 - "$output" "$work/section.md" <<'PY'
import re, sys
path, section = sys.argv[1], open(sys.argv[2]).read()
doc = open(path).read()
pat = re.compile(r"<!-- bench/run.sh: begin.*?<!-- bench/run.sh: end -->\n", re.S)
if pat.search(doc):
    doc = pat.sub(lambda _: section, doc)
else:  # first run: after the introduction, before the first section
    i = doc.find("\n## ")
    doc = doc[: i + 1] + section + "\n" + doc[i + 1 :] if i >= 0 else doc + "\n" + section
open(path, "w").write(doc)
PY
  log "wrote $output"
fi
