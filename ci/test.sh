#!/usr/bin/env bash
# The project's test command: installs what it needs, builds, runs every test.
# End-to-end tests load real eBPF programs and need root; they run one at a
# time so their traffic and their sensors do not compete for the two cores.
set -euo pipefail
cd "$(dirname "$0")/.."
source ci/install.sh

if [ "$(id -u)" != 0 ]; then
  echo "ci/test.sh: the tests load eBPF programs and create network namespaces: run as root" >&2
  exit 1
fi

cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo build --workspace --all-targets --locked
cargo test --workspace --locked -- --test-threads=1
