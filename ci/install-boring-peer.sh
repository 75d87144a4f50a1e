#!/usr/bin/env bash
# The BoringSSL peer of the static-BoringSSL tests (tests/programs/boring:
# an HTTPS server and client on the `boring` crate, BoringSSL built from
# source by boring-sys with cmake and linked in statically), built once per
# version of its lock file and sources into a cache (exports
# NETTAP_BORINGPEER, the directory holding `boringpeer`, with its symbol
# table, and `boringpeer-stripped`). Sourced by ci/install.sh.
source "$(dirname "${BASH_SOURCE[0]}")/rust-peer.sh"
rust_peer NETTAP_BORINGPEER boringpeer boring "the BoringSSL test peer (BoringSSL's cmake build)" cmake c++
