#!/usr/bin/env bash
# The BoringSSL peer of the static-BoringSSL tests (tests/programs/boring:
# an HTTPS server and client on the `boring` crate, BoringSSL built from
# source by boring-sys with cmake and linked in statically), built once per
# version of its lock file and sources into a cache (exports
# NETTAP_BORINGPEER, the directory holding `boringpeer`, with its symbol
# table, and `boringpeer-stripped`). Sourced by ci/install.sh; its build
# directory is removed once the binaries are out.
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
boring_src="$root/tests/programs/boring"
boring_sum="$(cat "$boring_src/Cargo.lock" "$boring_src/Cargo.toml" "$boring_src/src/main.rs" | sha256sum | cut -c1-16)"
export NETTAP_BORINGPEER="${NETTAP_BORINGPEER:-$HOME/.cache/nettap/boringpeer/$boring_sum}"
if [ ! -e "$NETTAP_BORINGPEER/.complete" ]; then
  echo "ci/install.sh: building the BoringSSL test peer (once; BoringSSL's cmake build)"
  for tool in cmake c++; do
    command -v "$tool" >/dev/null || { echo "ci/install.sh: $tool is required to build BoringSSL (boring-sys)" >&2; exit 1; }
  done
  rm -rf "$NETTAP_BORINGPEER" && mkdir -p "$NETTAP_BORINGPEER"
  build="$NETTAP_BORINGPEER/build"
  (cd "$boring_src" && CARGO_TARGET_DIR="$build" CARGO_INCREMENTAL=0 cargo build -q --locked --release)
  cp "$build/release/boringpeer" "$NETTAP_BORINGPEER/boringpeer"
  # The same program without its symbol table: only the last link is redone.
  (cd "$boring_src" && CARGO_TARGET_DIR="$build" CARGO_INCREMENTAL=0 \
    cargo rustc -q --locked --release --bin boringpeer -- -C strip=symbols)
  cp "$build/release/boringpeer" "$NETTAP_BORINGPEER/boringpeer-stripped"
  rm -rf "$build"
  touch "$NETTAP_BORINGPEER/.complete"
fi
