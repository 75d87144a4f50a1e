#!/usr/bin/env bash
# Per-call probe cost of OpenSSL 1.1.1w and LibreSSL 2.0.0 (issue 24), shared
# and static: tests/programs/ossl_echo_peer.c at both ends on 127.0.0.1, one
# connection, ROUNDS messages of 100 bytes each echoed before the next is
# sent (per round, at each end, one SSL_write and the SSL_read that takes
# the message), with no sensor, then with `nettap capture` on the port.
# Prints µs per round and the added cost per SSL call (4 calls a round).
#   bash bench/oldssl_call_cost.sh [ROUNDS] [NETTAP]   (defaults 5000 target/debug/nettap)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-5000}" bin="${2:-target/debug/nettap}"
[ -x "$bin" ] || { echo "no $bin: cargo build -p nettap-sensor" >&2; exit 1; }
source ci/install-oldssl.sh >&2 # only the two libraries (exports their prefixes)
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost \
  -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
port=19444

build() { # PREFIX shared|static OUT
  local lib="$1/lib" cc=(gcc -O2 -w -I"$1/include" -o "$3" tests/programs/ossl_echo_peer.c)
  if [ "$2" = shared ]; then
    "${cc[@]}" -L"$lib" -Wl,--disable-new-dtags,-rpath,"$lib" -lssl -lcrypto
  else
    "${cc[@]}" "$lib/libssl.a" "$lib/libcrypto.a" -ldl -lpthread
  fi
}

# One exchange: the client's µs for the rounds.
exchange() {
  rm -f "$work/server.out"
  "$1" server "$port" "$work/cert.pem" "$work/key.pem" 1 >"$work/server.out" &
  local server=$! out
  for _ in $(seq 500); do grep -q listening "$work/server.out" 2>/dev/null && break; sleep 0.02; done
  if ! out="$("$1" client "$port" $((rounds * 100)) "$rounds")"; then
    kill "$server" 2>/dev/null
    echo "the client failed" >&2
    exit 1
  fi
  wait "$server"
  sed -n 2p <<<"$out"
}

echo "load average: $(cut -d' ' -f1-3 /proc/loadavg); $rounds rounds of 100 bytes"
echo "| library | linkage | µs/round, no sensor | µs/round, sensor on | added µs per SSL call |"
echo "|---|---|---:|---:|---:|"
for lib in "$NETTAP_OPENSSL111" "$NETTAP_LIBRESSL"; do
  for linkage in shared static; do
    peer="$work/peer-$(basename "$lib")-$linkage"
    build "$lib" "$linkage" "$peer"
    exchange "$peer" >/dev/null # warm
    off="$(exchange "$peer")"
    rm -f "$work/ready"
    "$bin" capture --out /dev/null --port "$port" --ready-file "$work/ready" 2>"$work/log" &
    sensor=$!
    for _ in $(seq 600); do [ -f "$work/ready" ] && break; sleep 0.05; done
    on="$(exchange "$peer")"
    kill -INT "$sensor"
    wait "$sensor"
    grep -q "version=\"\(OpenSSL\|LibreSSL\)" "$work/log" || { cat "$work/log" >&2; exit 1; }
    awk -v l="$(basename "$(dirname "$lib")") $(basename "$lib")" -v k="$linkage" -v off="$off" -v on="$on" -v r="$rounds" \
      'BEGIN { printf "| %s | %s | %.1f | %.1f | %.1f |\n", l, k, off / r, on / r, (on - off) / r / 4 }'
  done
done
