#!/usr/bin/env bash
# The project's test command: installs what it needs, builds, runs every test.
# End-to-end tests load real eBPF programs and need root; they run one at a
# time so their traffic and their sensors do not compete for the two cores.
set -euo pipefail
cd "$(dirname "$0")/.."
# Each step's wall time, so a CI log shows where the 90 minutes go.
step_start=$SECONDS
step() {
  echo "ci/test.sh: $1 took $((SECONDS - step_start)) s (total $SECONDS s)"
  step_start=$SECONDS
}
source ci/install.sh
step install

if [ "$(id -u)" != 0 ]; then
  echo "ci/test.sh: the tests load eBPF programs and create network namespaces: run as root" >&2
  exit 1
fi

cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
step clippy
cargo build --workspace --all-targets --locked
step build
# The arm64 sensor the arm64 guest runs (tests/tests/kernel_matrix_arm64_vm.rs),
# its librdkafka linked with Debian's arm64 OpenSSL (ci/install-vm.sh) rather
# than one built from source (sensor/Cargo.toml's fallback).
AARCH64_UNKNOWN_LINUX_GNU_OPENSSL_NO_VENDOR=1 AARCH64_UNKNOWN_LINUX_GNU_OPENSSL_STATIC=1 \
  AARCH64_UNKNOWN_LINUX_GNU_OPENSSL_DIR="$NETTAP_ARM64_OPENSSL" OPENSSL_ROOT_DIR="$NETTAP_ARM64_OPENSSL" \
  cargo build -p nettap-sensor --target aarch64-unknown-linux-gnu --locked
step "arm64 build"
# Parsers get a bounded fuzzing run on every test run (crashes fail it).
bash ci/fuzz.sh
step fuzz
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
set +e
# --no-fail-fast: one failing file must not hide what the later ones say.
cargo test --workspace --locked --no-fail-fast -- --test-threads=1 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
step tests
# One closing line for the whole run (cargo's own last line is a doc-test
# harness that often runs nothing).
totals="$(awk '/^test result:/ { for (i = 2; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1) } }
               END { printf "%d %d", p, f }' "$log")"
read -r passed failed <<<"$totals"
if [ "$status" = 0 ] && [ "$passed" = 0 ]; then
  echo "ci/test.sh: no test ran" >&2
  status=1
fi
echo "tests: $passed passed, $failed failed"
exit "$status"
