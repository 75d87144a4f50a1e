#!/usr/bin/env bash
# Builds the real Kubernetes the tests run, from Go modules that pin every
# version: etcd (ci/etcd), the control plane and node binaries in one `go
# build` (ci/kubernetes: kube-apiserver, kube-controller-manager,
# kube-scheduler, kubelet, kube-proxy, kubectl), containerd 2.x with its runc
# shim and ctr (ci/containerd), the CNI plugins the node's pods get
# (ci/cni-plugins), CoreDNS, the node's cluster DNS (ci/coredns), and the
# OpenTelemetry Collector of the OTLP tests (ci/otelcol), and FerretDB, the
# MongoDB wire-protocol server of tests/tests/mongodb_bpf.rs (ci/ferretdb). Built once: each set is cached under $NETTAP_K8S_BIN
# (~/.cache/nettap/k8s) keyed by the hash of its go.mod and go.sum, so a
# second run builds nothing. Called by ci/install.sh; a missing prerequisite
# is an error, never a skip.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export NETTAP_K8S_BIN="${NETTAP_K8S_BIN:-$HOME/.cache/nettap/k8s}"
mkdir -p "$NETTAP_K8S_BIN"

command -v go >/dev/null || [ ! -x /usr/local/go/bin/go ] || export PATH="/usr/local/go/bin:$PATH"
command -v go >/dev/null || { echo "ci/install-k8s.sh: Go (>= 1.26.8) is required to build etcd, Kubernetes and containerd and is not found" >&2; exit 1; }
go_patch="$(go env GOVERSION | sed -n 's/^go1\.26\.\([0-9]*\).*/\1/p')"
go_minor="$(go env GOVERSION | sed -n 's/^go1\.\([0-9]*\).*/\1/p')"
[ "${go_minor:-0}" -gt 26 ] || [ "${go_patch:-0}" -ge 8 ] ||
  { echo "ci/install-k8s.sh: Go >= 1.26.8 is required (ci/cni-plugins/go.mod), found $(go env GOVERSION)" >&2; exit 1; }

# build SET DIR LDFLAGS PACKAGE...: the main PACKAGEs as pinned by DIR's
# go.mod, built by one `go build` (shared packages compiled once) into
# $NETTAP_K8S_BIN/SET.KEY/ (a single PACKAGE's binary is named SET), each
# linked as $NETTAP_K8S_BIN/<binary>; older builds of SET are removed.
# GOFLAGS and CGO_ENABLED from the caller apply.
build() {
  local set="$1" dir="$root/$2" ldflags="$3" key out
  shift 3
  # A set with its own main package (ci/coredns, ci/otelcol) is keyed by its source too.
  key="$(cat "$dir/go.mod" "$dir/go.sum" $(find "$dir" -maxdepth 1 -name '*.go' | sort) | sha256sum | cut -c1-16)"
  out="$NETTAP_K8S_BIN/$set.$key"
  if [ ! -d "$out" ]; then
    echo "ci/install-k8s.sh: building $set ($*, pinned in ${dir#"$root"/}/go.mod; once, several minutes)"
    local started=$SECONDS
    rm -rf "$out.tmp"
    local dest="$out.tmp/"
    [ $# -gt 1 ] || dest="$out.tmp/$set"
    (cd "$dir" && nice -n 10 go build -mod=readonly -trimpath -ldflags="-s -w $ldflags" -o "$dest" "$@")
    mv "$out.tmp" "$out"
    echo "ci/install-k8s.sh: built $set in $((SECONDS - started)) s"
    find "$NETTAP_K8S_BIN" -maxdepth 1 -name "$set.*" ! -name "$set.$key" -exec rm -rf {} +
  fi
  local b
  for b in "$out"/*; do ln -sfn "$set.$key/${b##*/}" "$NETTAP_K8S_BIN/${b##*/}"; done
}

build etcd ci/etcd "" go.etcd.io/etcd/server/v3
# The version the binaries report is the module's, as a release build's would be.
kube_version="$(cd "$root/ci/kubernetes" && go list -m -f '{{.Version}}' k8s.io/kubernetes)"
[[ "$kube_version" =~ ^v1\.([0-9]+)\. ]] || { echo "ci/install-k8s.sh: no k8s.io/kubernetes version in ci/kubernetes/go.mod" >&2; exit 1; }
v=k8s.io/component-base/version
build kubernetes ci/kubernetes \
  "-X $v.gitVersion=$kube_version -X $v.gitMajor=1 -X $v.gitMinor=${BASH_REMATCH[1]} -X $v.gitTreeState=clean" \
  k8s.io/kubernetes/cmd/{kube-apiserver,kube-controller-manager,kube-scheduler,kubelet,kube-proxy,kubectl}
# Snapshotters that need C headers or devices the node does not use are left out.
containerd_version="$(cd "$root/ci/containerd" && go list -m -f '{{.Version}}' github.com/containerd/containerd/v2)"
GOFLAGS="-tags=no_btrfs,no_devmapper,no_zfs" build containerd ci/containerd \
  "-X github.com/containerd/containerd/v2/version.Version=$containerd_version" \
  github.com/containerd/containerd/v2/cmd/{containerd,containerd-shim-runc-v2,ctr}
CGO_ENABLED=0 build cni ci/cni-plugins "" \
  github.com/containernetworking/plugins/plugins/{main/bridge,main/loopback,ipam/host-local,meta/portmap}
# Only the plugins the node's Corefile names (ci/coredns/main.go).
CGO_ENABLED=0 build coredns ci/coredns "" .
# The OpenTelemetry Collector the OTLP export tests send to (OTLP receiver
# and file exporter only; tests/src/otelcol.rs).
CGO_ENABLED=0 build otelcol ci/otelcol "" .
# FerretDB 1.x embedded on its pure-Go SQLite backend (no PostgreSQL needed).
CGO_ENABLED=0 build ferretdb ci/ferretdb "" .
