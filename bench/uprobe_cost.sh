#!/usr/bin/env bash
# What one probed OpenSSL call costs on this machine, by the kind of first
# instruction of the function (the kernel emulates a few — push, nop, jumps —
# and single-steps every other one out of line, which costs a trap more).
# Builds a stand-in libssl (bench/uprobe_cost/), calls each function N times
# without and with `nettap capture` attached (entry + return probes, nothing
# captured: no socket), prints a Markdown table.
#   bash bench/uprobe_cost.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-100000}"
source ci/install.sh >&2
cargo build --release --locked -p nettap-sensor --bin nettap >&2
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
gcc -O2 -shared -fPIC -o "$work/libssl.so.99" bench/uprobe_cost/fake_libssl.c
gcc -O2 -o "$work/calls" bench/uprobe_cost/calls.c -L"$work" -l:libssl.so.99 -Wl,-rpath,"$work"
read -r off_r off_w < <("$work/calls" "$n")
target/release/nettap capture --out /dev/null --port 1 --ready-file "$work/ready" 2>"$work/log" &
sensor=$!
for _ in $(seq 300); do [ -f "$work/ready" ] && break; sleep 0.1; done
"$work/calls" 1000 >/dev/null # maps the library: the sensor probes it
for _ in $(seq 100); do grep -q "libssl.so.99.*SSL_write" "$work/log" && break; sleep 0.1; done
read -r on_r on_w < <("$work/calls" "$n")
kill -INT "$sensor"
wait "$sensor"
echo "| function (first instruction) | ns per call, no sensor | ns per call, probed (entry + return) |"
echo "|---|---:|---:|"
echo "| SSL_read (\`sub \$8,%rsp\`: single-stepped) | $off_r | $on_r |"
echo "| SSL_write (\`push %rbp\`: emulated) | $off_w | $on_w |"
echo
echo "($n calls each, $(uname -r), $(nproc) CPUs)"
