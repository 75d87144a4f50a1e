#!/usr/bin/env bash
# rust_peer VAR PROGRAM DIR WHAT [TOOL...]: the Rust test peer of
# tests/programs/DIR (its own lock file, not a workspace member), built once
# per version of its lock file and sources into
# ~/.cache/nettap/PROGRAM/HASH, holding PROGRAM and PROGRAM-stripped (the
# same program without its symbol table: only the last link is redone).
# Exports VAR, that directory (a VAR already set is kept). TOOLs must be on
# the PATH for the build. The build directory is removed once the binaries
# are out. Sourced by the ci/install-*-peer.sh scripts.
rust_peer() {
  local var=$1 program=$2 src dir sum build tool
  src="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/tests/programs/$3"
  local what=$4
  shift 4
  sum="$(cat "$src/Cargo.lock" "$src/Cargo.toml" "$src/src/main.rs" | sha256sum | cut -c1-16)"
  dir="${!var:-$HOME/.cache/nettap/$program/$sum}"
  export "$var=$dir"
  [ -e "$dir/.complete" ] && return 0
  echo "ci/install.sh: building $what (once)"
  for tool in "$@"; do
    command -v "$tool" >/dev/null || { echo "ci/install.sh: $tool is required to build $what" >&2; exit 1; }
  done
  rm -rf "$dir" && mkdir -p "$dir"
  build="$dir/build"
  (cd "$src" && CARGO_TARGET_DIR="$build" CARGO_INCREMENTAL=0 cargo build -q --locked --release)
  cp "$build/release/$program" "$dir/$program"
  (cd "$src" && CARGO_TARGET_DIR="$build" CARGO_INCREMENTAL=0 \
    cargo rustc -q --locked --release --bin "$program" -- -C strip=symbols)
  cp "$build/release/$program" "$dir/$program-stripped"
  rm -rf "$build"
  touch "$dir/.complete"
}
