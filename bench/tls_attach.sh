#!/usr/bin/env bash
# Attach cost of every TLS library nettap probes (issue 24): how long from a
# program's exec (held there by the exec gate) or a library's mapping until
# its probes are in place, as the sensor itself logs it (`attached_us` of its
# "probes attached to …" lines). Each round runs a fresh copy of the file (a
# new inode, so it is examined anew, as a new program or library version
# would be); a program prints its usage or version and exits, which is
# enough: the probes are placed while it is held at exec.
# Prints the median and the range over the rounds, per library.
#   bash bench/tls_attach.sh [ROUNDS] [NETTAP]   (defaults 5 target/release/nettap)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-5}" bin="${2:-target/release/nettap}"
[ -x "$bin" ] || { echo "no $bin: cargo build --release -p nettap-sensor" >&2; exit 1; }
# The test peers (built once into caches, as for the tests) and their libraries.
source bench/tls_peers.sh
set +u
work="$(mktemp -d)"
sensor=""
trap '[ -n "$sensor" ] && kill -INT "$sensor" 2>/dev/null; rm -rf "$work"' EXIT
libdir=/usr/lib/$(uname -m)-linux-gnu

# The programs, built here as the tests build them.
build_tlspeer "$work/tlspeer"
gcc -static -O2 -o "$work/static_openssl3" tests/programs/static_tls_client.c -lssl -lcrypto
gcc -O2 -o "$work/static_gnutls" tests/programs/static_gnutls_client.c "${GNUTLS_STATIC[@]}"
for lib in "$NETTAP_OPENSSL111" "$NETTAP_LIBRESSL"; do
  ossl_peer "$lib" static "$work/static_$(basename "$lib")"
done

"$bin" capture --out /dev/null --ready-file "$work/ready" 2>"$work/log" &
sensor=$!
for _ in $(seq 600); do [ -f "$work/ready" ] && break; sleep 0.05; done
[ -f "$work/ready" ] || { cat "$work/log" >&2; exit 1; }

# attached_us of the log line naming `copy`, in ms (empty: never probed).
attached_ms() {
  for _ in $(seq 100); do
    local us
    us=$(grep -F "$1" "$work/log" | grep -o 'attached_us=[0-9]*' | head -n 1 | cut -d= -f2)
    [ -n "$us" ] && { awk -v u="$us" 'BEGIN { printf "%.1f", u / 1000 }'; return; }
    sleep 0.05
  done
}

# A program: ROUNDS fresh copies of FILE run with ARGS.
program() { # NAME FILE ARGS...
  local name=$1 file=$2 ms=() copy
  shift 2
  for i in $(seq "$rounds"); do
    copy="$work/copies/$(basename "$file")-$i/$(basename "$file")"
    mkdir -p "$(dirname "$copy")"
    cp "$file" "$copy"
    "$copy" "$@" >/dev/null 2>&1 </dev/null || true
    ms+=("$(attached_ms "$copy")")
  done
  row "$name" "from exec (held)" "${ms[@]}"
}

# A shared library: ROUNDS fresh copies of LIB (Debian's) preloaded into a
# process that lives half a second (one that exits at once may be gone
# before the sensor reads its mappings: nothing to probe then).
library() { # NAME LIB
  local name=$1 lib=$2 ms=() dir
  for i in $(seq "$rounds"); do
    dir="$work/copies/$lib-$i"
    mkdir -p "$dir"
    cp "$libdir/$lib" "$dir/$lib"
    LD_PRELOAD="$dir/$lib" sleep 0.5
    ms+=("$(attached_ms "$dir/$lib")")
  done
  row "$name" "from mapping" "${ms[@]}"
}

row() { # NAME FROM MS...
  local name=$1 from=$2
  shift 2
  local got=() missing=0
  for m in "$@"; do [ -n "$m" ] && got+=("$m") || missing=$((missing + 1)); done
  [ "$missing" = 0 ] || { echo "$name: $missing of $rounds copies were never probed (log: /tmp/tls_attach.log)" >&2; cp "$work/log" /tmp/tls_attach.log; exit 1; }
  printf '%s\n' "${got[@]}" | sort -n | awk -v n="$name" -v f="$from" '
    { v[NR] = $1 } END { printf "| %s | %s | %.1f | %.1f–%.1f |\n", n, f, v[int((NR + 1) / 2)], v[1], v[NR] }'
}

echo "load average: $(cut -d' ' -f1-3 /proc/loadavg); $rounds fresh copies each; $bin"
echo "| library (test program) | from | median ms | range ms |"
echo "|---|---|---:|---:|"
library "OpenSSL 3 (libssl.so.3)" libssl.so.3
library "GnuTLS (libgnutls.so.30)" libgnutls.so.30
library "NSS (libssl3.so)" libssl3.so
program "OpenSSL 3 linked in (static C client)" "$work/static_openssl3"
program "OpenSSL 1.1.1w linked in (C echo peer)" "$work/static_1.1.1w"
program "LibreSSL 2.0.0 linked in (C echo peer)" "$work/static_2.0.0"
program "GnuTLS linked in (static C client)" "$work/static_gnutls"
program "BoringSSL linked in, symbols (boring 5.4.0)" "$NETTAP_BORINGPEER/boringpeer"
program "BoringSSL linked in, stripped (boring 5.4.0)" "$NETTAP_BORINGPEER/boringpeer-stripped"
program "rustls 0.21–0.23 (tokio-rustls, ureq; 5 MB)" "$NETTAP_RUSTLSPEER/rustlspeer"
program "rustls 0.21–0.23, stripped (found without symbols; 4 MB)" "$NETTAP_RUSTLSPEER/rustlspeer-stripped"
program "Go crypto/tls (net/http client and server)" "$work/tlspeer"
program "OpenSSL in Node.js ($(node --version))" "$(command -v node)" --version
