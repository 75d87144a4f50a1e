#!/usr/bin/env bash
# Per-call probe cost of the TLS libraries nettap probes (issue 24), in one
# run: for each library a client and a server both on it, on 127.0.0.1, one
# connection, N exchanges, with no sensor and with `nettap capture` on the
# port, ROUNDS times alternated. The added time per exchange is divided by
# the TLS calls that moved bytes per exchange, both ends (counted in a
# separate run with `--raw`, one `data` record a call): the cost of one
# captured call, everything the sensor does for it by default included
# (probes, syscall tracepoints, the HTTP records).
# Each program runs once before it is timed, so the exec gate's first
# examination of a new file is not in the times (bench/tls_attach.sh has it).
# Exchanges: HTTP/1.1 GETs over keep-alive (Go, rustls, BoringSSL), 100-byte
# echoes (the OpenSSL API: OpenSSL 3, 1.1.1w, LibreSSL; GnuTLS with
# bench/gnutls_echo_peer.c; each shared and linked in; NSS, shared only, with
# tests/programs/nss_echo_server.c and bench/nss_echo_client.c).
# ONLY, if given, keeps the rows whose label contains it (e.g. NSS).
#   bash bench/tls_call_cost.sh [N] [ROUNDS] [NETTAP] [ONLY]   (defaults 2000 3 target/release/nettap)
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-2000}" rounds="${2:-3}" bin="${3:-target/release/nettap}" only="${4:-}"
[ -x "$bin" ] || { echo "no $bin: cargo build --release -p nettap-sensor" >&2; exit 1; }
source bench/tls_peers.sh
set +u
work="$(mktemp -d)"
sensor="" server=""
trap '[ -n "$server" ] && kill "$server" 2>/dev/null; [ -n "$sensor" ] && kill -INT "$sensor" 2>/dev/null; rm -rf "$work"' EXIT
port=19446
# A CA and a server certificate it signed (rustls refuses a CA's own
# certificate as the server's).
(
  cd "$work"
  ec=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)
  openssl req -x509 "${ec[@]}" -days 1 -subj "/CN=bench CA" -keyout ca.key -out ca.pem
  openssl req "${ec[@]}" -subj /CN=localhost -keyout key.pem -out server.csr
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >server.ext
  openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 -extfile server.ext -out cert.pem
) 2>/dev/null
ca="$work/ca.pem" cert="$work/cert.pem" key="$work/key.pem"
# NSS's server reads its certificate and key from an NSS database.
nssdb="sql:$work/nssdb"
mkdir "$work/nssdb"
certutil -N --empty-password -d "$nssdb"
openssl pkcs12 -export -passout pass: -name server -in "$cert" -inkey "$key" -out "$work/server.p12"
pk12util -W "" -d "$nssdb" -i "$work/server.p12" >/dev/null

build_tlspeer "$work/tlspeer"
ossl_peer "" shared "$work/openssl3-shared"
ossl_peer "" static "$work/openssl3-static"
for linkage in shared static; do
  ossl_peer "$NETTAP_OPENSSL111" "$linkage" "$work/openssl111-$linkage"
  ossl_peer "$NETTAP_LIBRESSL" "$linkage" "$work/libressl-$linkage"
done
gcc -O2 -o "$work/gnutls-shared" bench/gnutls_echo_peer.c -lgnutls
gcc -O2 -o "$work/gnutls-static" bench/gnutls_echo_peer.c "${GNUTLS_STATIC[@]}"
nss=(-I/usr/include/nss -I/usr/include/nspr -lssl3 -lnss3 -lnspr4)
gcc -O2 -o "$work/nss-server" tests/programs/nss_echo_server.c "${nss[@]}"
gcc -O2 -o "$work/nss-client" bench/nss_echo_client.c "${nss[@]}"

# serve KIND PROGRAM: starts the server, waits until it listens.
serve() {
  rm -f "$work/ready" "$work/server.out"
  # exec: $! is then the server itself, not a subshell around it.
  case "$1" in
    go) exec "$2" server -addr "127.0.0.1:$port" -cert "$cert" -key "$key" -ready "$work/ready" -http1 ;;
    rust) exec "$2" server --addr "127.0.0.1:$port" --cert "$cert" --key "$key" --ready "$work/ready" ;;
    echo) exec "$2" server "$port" "$cert" "$key" 1 ;;
    nss) exec "$2-server" "$nssdb" server "$port" 1 ;;
  esac >"$work/server.out" 2>&1 &
  server=$!
  for _ in $(seq 500); do
    { [ -f "$work/ready" ] || grep -q listening "$work/server.out"; } 2>/dev/null && return
    sleep 0.02
  done
  echo "the $1 server did not start: $(cat "$work/server.out")" >&2
  exit 1
}

# client KIND PROGRAM COUNT: COUNT exchanges over one connection.
client() {
  case "$1" in
    go) "$2" client -url "https://127.0.0.1:$port/x" -ca "$ca" -http1 -n "$3" ;;
    rustls) "$2" client --url "https://127.0.0.1:$port/x" --ca "$ca" --n "$3" ;;
    boring) "$2" client --addr "127.0.0.1:$port" --ca "$ca" --n "$3" ;;
    echo) "$2" client "$port" $(($3 * 100)) "$3" ;;
    nss) "$2-client" "$port" $(($3 * 100)) "$3" ;;
  esac >/dev/null
}

# exchange KIND PROGRAM COUNT: µs for COUNT exchanges (the first, untimed
# run of 1 probes a new file under the sensor).
exchange() {
  local server_kind="$1" start end
  case "$1" in rustls | boring) server_kind=rust ;; esac
  serve "$server_kind" "$2"
  client "$1" "$2" 1
  # The echo servers serve one connection each.
  case "$1" in echo | nss) wait "$server"; serve "$1" "$2" ;; esac
  start=$(date +%s%N)
  client "$1" "$2" "$3"
  end=$(date +%s%N)
  kill "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  server=""
  echo $(((end - start) / 1000))
}

# sensor_on [ARGS]: a sensor capturing the port into $work/records.
sensor_on() {
  rm -f "$work/sensor-ready" "$work/records"
  "$bin" capture --out "$work/records" --port "$port" --ready-file "$work/sensor-ready" "$@" 2>"$work/log" &
  sensor=$!
  for _ in $(seq 600); do [ -f "$work/sensor-ready" ] && return; sleep 0.05; done
  echo "the sensor did not start: $(tail -5 "$work/log")" >&2
  exit 1
}

sensor_off() {
  kill -INT "$sensor"
  wait "$sensor" || true
  sensor=""
}

median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

echo "load average: $(cut -d' ' -f1-3 /proc/loadavg); $n exchanges a round, $rounds rounds, $(basename "$bin")"
echo "| library (program) | µs/exchange, no sensor | µs/exchange, sensor on | TLS records/exchange | added µs per captured call |"
echo "|---|---:|---:|---:|---:|"
while read -r label kind program source; do
  [[ "$label" == *"$only"* ]] || continue
  : >"$work/off" && : >"$work/on"
  for _ in $(seq "$rounds"); do
    exchange "$kind" "$program" "$n" >>"$work/off"
    sensor_on
    exchange "$kind" "$program" "$n" >>"$work/on"
    sensor_off
  done
  # Calls per exchange: 100 exchanges (and the untimed one) with --raw.
  sensor_on --raw
  exchange "$kind" "$program" 100 >/dev/null
  sensor_off
  records=$(grep -c "\"kind\":\"data\".*\"source\":\"$source\"" "$work/records" || true)
  [ "$records" -gt 0 ] || { echo "$label: no $source records; sensor log:" >&2; tail -20 "$work/log" >&2; exit 1; }
  off="$(median <"$work/off")" on="$(median <"$work/on")"
  awk -v l="$label" -v off="$off" -v on="$on" -v n="$n" -v rec="$records" 'BEGIN {
    gsub("_", " ", l); per = rec / 101; printf "| %s | %.1f | %.1f | %.1f | %.2f |\n", l, off / n, on / n, per, (on - off) / n / per }'
done <<EOF
Go_crypto/tls_(tlspeer) go $work/tlspeer go-tls
rustls_0.23_(rustlspeer,_ureq) rustls $NETTAP_RUSTLSPEER/rustlspeer rustls
BoringSSL_linked_in,_symbols_(boringpeer) boring $NETTAP_BORINGPEER/boringpeer boringssl
BoringSSL_linked_in,_stripped boring $NETTAP_BORINGPEER/boringpeer-stripped boringssl
OpenSSL_3,_shared_(Debian's_libssl.so.3) echo $work/openssl3-shared openssl
OpenSSL_3,_linked_in echo $work/openssl3-static openssl
OpenSSL_1.1.1w,_shared echo $work/openssl111-shared openssl
OpenSSL_1.1.1w,_linked_in echo $work/openssl111-static openssl
LibreSSL_2.0.0,_shared echo $work/libressl-shared openssl
LibreSSL_2.0.0,_linked_in echo $work/libressl-static openssl
GnuTLS,_shared_(Debian's_libgnutls.so.30) echo $work/gnutls-shared gnutls
GnuTLS,_linked_in echo $work/gnutls-static gnutls
NSS,_shared_(Debian's_libssl3.so,_libnspr4.so) nss $work/nss nss
EOF
