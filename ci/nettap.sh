#!/usr/bin/env bash
# The project's run command: installs what it needs, builds nettap (release,
# cached by cargo) and starts capturing on this host. Arguments go to
# `nettap capture` (see CONTRACT.md); with none, the terminal summary.
set -euo pipefail
cd "$(dirname "$0")/.."
source ci/install.sh >&2
cargo build --release --locked -p nettap-sensor --bin nettap >&2
exec target/release/nettap capture "$@"
