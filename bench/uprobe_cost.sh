#!/usr/bin/env bash
# What one probed TLS library call costs on this machine, by the kind of
# first instruction of the function (the kernel emulates a few — push, nop,
# jumps — and single-steps every other one out of line, which costs a trap
# more). Builds stand-in libraries (bench/uprobe_cost/: a libssl and a
# libgnutls shaped like Debian's) and takes a copy of Debian's real NSS
# libssl3.so (its SSL-layer methods, called on a descriptor they refuse),
# calls each function N times without and with `nettap capture` attached
# (entry + return probes, nothing captured: no socket), prints a Markdown table. NETTAP_BIN: a sensor binary to use
# instead of building the release one (the probes' cost is the kernel's).
#   bash bench/uprobe_cost.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-100000}"
bin="${NETTAP_BIN:-}"
if [ -z "$bin" ]; then
  source ci/install.sh >&2
  cargo build --release --locked -p nettap-sensor --bin nettap >&2
  bin=target/release/nettap
fi
work="$(mktemp -d)"
sensor=
trap '[ -n "$sensor" ] && kill -INT "$sensor" 2>/dev/null && wait "$sensor"; rm -rf "$work"' EXIT
gcc -O2 -shared -fPIC -o "$work/libssl.so.99" bench/uprobe_cost/fake_libssl.c
gcc -O2 -shared -fPIC -o "$work/libgnutls.so.99" bench/uprobe_cost/fake_libgnutls.c
gcc -O2 -o "$work/calls" bench/uprobe_cost/calls.c -ldl
gcc -O2 -o "$work/nss_calls" bench/uprobe_cost/nss_calls.c -ldl
# A copy: a new file, so mapping it is what makes the sensor probe it.
cp /usr/lib/x86_64-linux-gnu/libssl3.so "$work/libssl3.so"
ssl=("$work/libssl.so.99" SSL_read SSL_write)
gnutls=("$work/libgnutls.so.99" gnutls_record_recv gnutls_record_send2)
read -r off_r off_w < <("$work/calls" "${ssl[@]}" "$n")
read -r off_gr off_gw < <("$work/calls" "${gnutls[@]}" "$n")
read -r off_nr off_nw < <("$work/nss_calls" "$work/libssl3.so" "$n")
"$bin" capture --out /dev/null --port 1 --ready-file "$work/ready" >/dev/null 2>"$work/log" &
sensor=$!
for _ in $(seq 1200); do [ -f "$work/ready" ] && break; sleep 0.1; done
[ -f "$work/ready" ] || { echo "the sensor did not get ready in 120 s:" >&2; cat "$work/log" >&2; exit 1; }
# Mapping each library makes the sensor probe it (kept mapped meanwhile: the
# sensor reads the process's maps).
"$work/calls" "${ssl[@]}" 0 &
held_ssl=$!
"$work/calls" "${gnutls[@]}" 0 &
held_gnutls=$!
"$work/nss_calls" "$work/libssl3.so" 0 &
held_nss=$!
probed() {
  grep -q "libssl.so.99.*SSL_write" "$work/log" && grep -q "libgnutls.so.99.*gnutls_record_send2" "$work/log" &&
    grep -q "$work/libssl3.so.*ssl_Write" "$work/log"
}
for _ in $(seq 600); do probed && break; sleep 0.1; done
kill "$held_ssl" "$held_gnutls" "$held_nss"
probed || { echo "the sensor did not probe the libraries:" >&2; cat "$work/log" >&2; exit 1; }
read -r on_r on_w < <("$work/calls" "${ssl[@]}" "$n")
read -r on_gr on_gw < <("$work/calls" "${gnutls[@]}" "$n")
read -r on_nr on_nw < <("$work/nss_calls" "$work/libssl3.so" "$n")
attach="$(grep "mapped after start-up" "$work/log" | sed -n 's/.*path=\([^ ]*\).*attached_us=\([0-9]*\).*/\1: \2 µs/p' | tr '\n' ' ' || true)"
kill -INT "$sensor"
wait "$sensor"
sensor=
echo "| function (first instruction) | ns per call, no sensor | ns per call, probed (entry + return) |"
echo "|---|---:|---:|"
echo "| SSL_read (\`sub \$8,%rsp\`: single-stepped) | $off_r | $on_r |"
echo "| SSL_write (\`push %rbp\`: emulated) | $off_w | $on_w |"
echo "| gnutls_record_recv (\`sub \$8,%rsp\`: single-stepped) | $off_gr | $on_gr |"
echo "| gnutls_record_send2 (\`push %r15\`: emulated) | $off_gw | $on_gw |"
echo "| NSS ssl_Read (\`push %r12\`: emulated) | $off_nr | $on_nr |"
echo "| NSS ssl_Write (\`push %r12\`: emulated) | $off_nw | $on_nw |"
echo
echo "($n calls each, $(uname -r), $(nproc) CPUs; from mapping to probed: $attach)"
