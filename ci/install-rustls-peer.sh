#!/usr/bin/env bash
# The rustls peer of the rustls tests (tests/programs/rustls: tokio-rustls
# server, ureq and rustls 0.21/0.22 clients), built once per version of its
# lock file and sources into a cache (exports NETTAP_RUSTLSPEER, the
# directory holding `rustlspeer` and `rustlspeer-stripped`). Sourced by
# ci/install.sh.
source "$(dirname "${BASH_SOURCE[0]}")/rust-peer.sh"
rust_peer NETTAP_RUSTLSPEER rustlspeer rustls "the rustls test peer"
