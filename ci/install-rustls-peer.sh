#!/usr/bin/env bash
# The rustls peer of the rustls tests (tests/programs/rustls: tokio-rustls
# server, ureq and rustls 0.21/0.22 clients), built once per version of its
# lock file and sources into a cache (exports NETTAP_RUSTLSPEER, the
# directory holding `rustlspeer` and `rustlspeer-stripped`). Sourced by
# ci/install.sh; its build directory is removed once the binaries are out.
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
peer_src="$root/tests/programs/rustls"
peer_sum="$(cat "$peer_src/Cargo.lock" "$peer_src/Cargo.toml" "$peer_src/src/main.rs" | sha256sum | cut -c1-16)"
export NETTAP_RUSTLSPEER="${NETTAP_RUSTLSPEER:-$HOME/.cache/nettap/rustlspeer/$peer_sum}"
if [ ! -e "$NETTAP_RUSTLSPEER/.complete" ]; then
  echo "ci/install.sh: building the rustls test peer (once)"
  rm -rf "$NETTAP_RUSTLSPEER" && mkdir -p "$NETTAP_RUSTLSPEER"
  build="$NETTAP_RUSTLSPEER/build"
  (cd "$peer_src" && CARGO_TARGET_DIR="$build" CARGO_INCREMENTAL=0 cargo build -q --locked --release)
  cp "$build/release/rustlspeer" "$NETTAP_RUSTLSPEER/rustlspeer"
  # The same program without its symbol table (what `strip = true` makes):
  # only the last link is redone.
  (cd "$peer_src" && CARGO_TARGET_DIR="$build" CARGO_INCREMENTAL=0 \
    cargo rustc -q --locked --release --bin rustlspeer -- -C strip=symbols)
  cp "$build/release/rustlspeer" "$NETTAP_RUSTLSPEER/rustlspeer-stripped"
  rm -rf "$build"
  touch "$NETTAP_RUSTLSPEER/.complete"
fi
