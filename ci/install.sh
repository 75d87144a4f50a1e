#!/usr/bin/env bash
# Installs what nettap needs to build and test, idempotently: a second run
# installs nothing and takes a second. Safe to run as root on Debian.
set -euo pipefail

# Each part that did work says how long it took, so a CI log shows what a
# cold machine pays where (a warm run prints nothing here).
install_part_start=$SECONDS
install_part() {
  local took=$((SECONDS - install_part_start))
  [ "$took" -lt 2 ] || echo "ci/install.sh: $1 took $took s"
  install_part_start=$SECONDS
}

need_pkgs=(
  clang-19 llvm-19      # compile the C CO-RE eBPF programs (bpf target, llvm-strip)
  libclang1-19          # bindgen reads sensor-ebpf/include/events.h through libclang
  libbpf-dev            # bpf_helpers.h, bpf_core_read.h, bpf_tracing.h
  bpftool               # regenerating vmlinux.h (sensor-ebpf/scripts)
  linux-libc-dev        # <linux/types.h> for events.h outside the kernel
  iproute2              # network namespaces and veth pairs in the tests
  curl                  # a real HTTP client in the tests
  openssl               # test certificates
  libssl-dev gcc        # the statically linked OpenSSL client the tests build
  nginx                 # a real HTTPS and HTTP/2 server (libssl.so.3) in the tests
  dnsmasq-base          # a real DNS server for the DNS enrichment tests
  php-cli php-curl      # PHP's https:// stream wrapper and curl extension over libssl
  openjdk-17-jdk-headless maven  # the JVM agent's build (javac, jvmti.h) and java-testapps
  python3-yaml          # the chart tests read `helm template` output
  qemu-system-x86 qemu-system-arm  # the guest kernels of the kernel matrix (ci/install-vm.sh)
  gcc-aarch64-linux-gnu # links the arm64 sensor for the arm64 guest (.cargo/config.toml)
  g++-aarch64-linux-gnu cmake # librdkafka's vendored build (the Kafka sink) for both targets
  g++                   # BoringSSL's C++, built by boring-sys for the BoringSSL test peer
  runc iptables         # the real node (ci/node.sh): containerd's runtime; pod NAT, kube-proxy
  redis-server redis-tools  # a real Redis server and redis-cli (issue 23's protocol tests)
  postgresql            # a real PostgreSQL server and psql (issue 23's protocol tests)
  mariadb-server        # a real MySQL-protocol server and the mariadb client (issue 23)
  gnutls-bin wget       # GnuTLS programs (gnutls-cli, gnutls-serv, wget) for the GnuTLS tests
  libgnutls28-dev       # libgnutls.a for the client with GnuTLS linked in statically
  libnss3-tools         # NSS programs (tstclnt, selfserv, certutil, pk12util) for the NSS tests
  libnss3-dev           # headers for the NSS echo server the NSS tests build
  android-libboringssl  # BoringSSL with its exports: ground truth of the BoringSSL finder's unit tests
  ca-certificates
)

missing=()
for p in "${need_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "ci/install.sh: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
install_part "apt packages"

if ! command -v cargo >/dev/null; then
  for d in "$HOME/.cargo/bin" /usr/local/cargo/bin; do
    [ -x "$d/cargo" ] && export PATH="$d:$PATH"
  done
fi
command -v cargo >/dev/null || { echo "ci/install.sh: cargo is required and not found" >&2; exit 1; }
command -v rustup >/dev/null || { echo "ci/install.sh: rustup is required (it installs the Rust toolchain rust-toolchain.toml names)" >&2; exit 1; }
# The Rust toolchain rust-toolchain.toml names, with clippy, rustfmt and the
# arm64 standard library for the arm64 sensor (machines come with an older
# stable; rustup does not install on demand where RUSTUP_AUTO_INSTALL=0).
rust_channel="$(sed -n 's/^channel = "\(.*\)"$/\1/p' "$(dirname "${BASH_SOURCE[0]}")/../rust-toolchain.toml")"
if ! rustup target list --toolchain "$rust_channel" --installed 2>/dev/null | grep -qx aarch64-unknown-linux-gnu; then
  rustup toolchain install "$rust_channel" --profile minimal -c clippy,rustfmt -t aarch64-unknown-linux-gnu
fi
install_part "the Rust toolchain"
command -v python3 >/dev/null || { echo "ci/install.sh: python3 is required by the tests" >&2; exit 1; }

# Python packages the tests use (a HAR parser and an OpenMetrics parser we
# did not write, real gRPC peers, real database clients), in a cached venv.
export NETTAP_VENV="${NETTAP_VENV:-$HOME/.cache/nettap/venv}"
# psycopg2-binary 2.9.5: its wheel bundles OpenSSL 1.1.1 (libssl-*.so.1.1), the
# OpenSSL 1.1 the TLS tests drive (Debian 12 has none).
if ! "$NETTAP_VENV/bin/python" -c "import haralyzer, grpc, prometheus_client, redis, psycopg, psycopg2, pymysql, mysql.connector, kafka, pymongo, backports.zstd, snappy" 2>/dev/null; then
  python3 -m venv "$NETTAP_VENV"
  "$NETTAP_VENV/bin/pip" install -q --disable-pip-version-check "haralyzer==2.4.0" "grpcio==1.68.1" \
    "prometheus-client==0.21.1" "redis==8.1.0" "psycopg[binary]==3.3.9" "pymysql==1.2.4" \
    "mysql-connector-python==26.10.0" "kafka-python==3.0.12" "psycopg2-binary==2.9.5" \
    "pymongo==4.20.0" "backports.zstd==1.8.0" "python-snappy==0.7.3"
fi
install_part "the Python venv"

# java-testapps' Maven plugins, fetched once into a cache the tests build
# from offline (`mvn -o`); redone only when a pom changes.
export NETTAP_M2="${NETTAP_M2:-$HOME/.cache/nettap/m2}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
poms_sum="$(cat "$root"/java-testapps/pom.xml "$root"/java-testapps/*/pom.xml | sha256sum | cut -c1-16)"
if [ ! -e "$NETTAP_M2/.nettap-poms-$poms_sum" ]; then
  (cd "$root/java-testapps" && JAVA_HOME=/usr/lib/jvm/java-17-openjdk-amd64 \
    mvn -q -B -Dstyle.color=never -Dmaven.repo.local="$NETTAP_M2" package >/dev/null)
  touch "$NETTAP_M2/.nettap-poms-$poms_sum"
fi
install_part "the Maven cache"
# The Node.js MongoDB driver of the MongoDB tests (ci/node-mongodb, exact
# versions in its package-lock.json), in a prefix keyed by the lock file.
lock_sum="$(sha256sum "$root/ci/node-mongodb/package-lock.json" | cut -c1-16)"
export NETTAP_NODE_MONGODB="${NETTAP_NODE_MONGODB:-$HOME/.cache/nettap/npm/mongodb.$lock_sum}"
if [ ! -e "$NETTAP_NODE_MONGODB/.complete" ]; then
  command -v npm >/dev/null || { echo "ci/install.sh: npm is required (the Node.js MongoDB driver of the tests)" >&2; exit 1; }
  rm -rf "$NETTAP_NODE_MONGODB" && mkdir -p "$NETTAP_NODE_MONGODB"
  cp "$root"/ci/node-mongodb/package*.json "$NETTAP_NODE_MONGODB/"
  (cd "$NETTAP_NODE_MONGODB" && npm ci --no-audit --no-fund --silent)
  touch "$NETTAP_NODE_MONGODB/.complete"
fi
install_part "the Node MongoDB driver"
# The rustls test peer, built once per lock file (exports NETTAP_RUSTLSPEER).
source "$root/ci/install-rustls-peer.sh"
install_part "the rustls test peer"
# The BoringSSL test peer (the `boring` crate, BoringSSL built by cmake and
# linked in statically), built once per lock file (exports NETTAP_BORINGPEER).
source "$root/ci/install-boring-peer.sh"
install_part "the BoringSSL test peer"
# OpenSSL 1.1.1w and LibreSSL 2.0.0 from the crates that vendor their
# sources, shared and static (exports NETTAP_OPENSSL111, NETTAP_LIBRESSL).
source "$root/ci/install-oldssl.sh"
install_part "OpenSSL 1.1.1 and LibreSSL"
# A real Kafka broker's jars (KRaft, one node, started by the tests).
source "$root/ci/install-kafka.sh"
install_part "Kafka"
# A real etcd, Kubernetes control plane and node, containerd and CNI plugins
# for the Kubernetes tests, built from their Go modules once and cached
# (exports NETTAP_K8S_BIN).
source "$root/ci/install-k8s.sh"
install_part "the Go builds (Kubernetes, containerd, CNI, CoreDNS, collector, FerretDB)"
# Debian's 6.1 kernels (x86_64, arm64) and the guests' initramfs for the
# kernel matrix tests (exports NETTAP_VM, NETTAP_VM_ARM64), and Rust's arm64
# standard library for the arm64 sensor.
source "$root/ci/install-vm.sh"
install_part "the guest kernels and initramfs"

# The JVM tests run on JDK 17 and on the machine's second JDK (Temurin 25,
# part of the machine image: Debian does not package it).
[ -x /usr/lib/jvm/temurin-25-jdk-amd64/bin/java ] || [ -n "${NETTAP_JDKS:-}" ] ||
  echo "ci/install.sh: warning: /usr/lib/jvm/temurin-25-jdk-amd64 is missing: the JDK 25 tests will fail (or set NETTAP_JDKS)" >&2

# Helm, for the chart tests: built once from its Go module, cached by version.
export NETTAP_HELM="${NETTAP_HELM:-$HOME/.cache/nettap/helm/v3.22.0-k1.37/helm}"
if [ ! -x "$NETTAP_HELM" ]; then
  echo "ci/install.sh: building helm v3.22.0 (once)"
  # The Kubernetes version helm assumes without a cluster (its release
  # builds set it the same way; a plain `go install` would say 1.20).
  kv="-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=37"
  kv="$kv -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=37"
  GOBIN="$(dirname "$NETTAP_HELM")" go install -trimpath -ldflags "$kv" helm.sh/helm/v3/cmd/helm@v3.22.0
fi
install_part "helm"

# Tracepoints are attached through tracefs; bpffs is where other tools look.
if [ ! -d /sys/kernel/tracing/events ] && [ ! -d /sys/kernel/debug/tracing/events ]; then
  mount -t tracefs nodev /sys/kernel/tracing
fi
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf || true

[ -e /sys/kernel/btf/vmlinux ] || { echo "ci/install.sh: this kernel has no BTF (/sys/kernel/btf/vmlinux): CO-RE programs cannot load" >&2; exit 1; }
