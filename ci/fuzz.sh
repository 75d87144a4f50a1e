#!/usr/bin/env bash
# Runs every fuzz target of the core's parsers and processor for a bounded time each
# (NETTAP_FUZZ_SECONDS, default 20). Needs the nightly toolchain (libFuzzer
# instrumentation); installs cargo-fuzz from crates.io once.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${NETTAP_FUZZ_SECONDS:-20}"
if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "ci/fuzz.sh: the nightly Rust toolchain is required for cargo fuzz and is not installed" >&2
  exit 1
fi
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
cd core/fuzz
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
for target in http1_session http2_session redis_session pgsql_session mysql_session kafka_session mongodb_session conn_session event_decode redact agent_frames processor; do
  echo "fuzz: $target for ${secs}s"
  if ! cargo +nightly fuzz build "$target" >"$log" 2>&1; then
    tail -n 60 "$log"
    echo "fuzz: $target does not build" >&2
    exit 1
  fi
  if ! cargo +nightly fuzz run "$target" -- -max_total_time="$secs" -rss_limit_mb=2048 -max_len=65536 >"$log" 2>&1; then
    tail -n 60 "$log"
    echo "fuzz: $target FAILED (the crashing input is under core/fuzz/artifacts/$target)" >&2
    exit 1
  fi
  grep -E "^Done [0-9]+ runs" "$log"
done
