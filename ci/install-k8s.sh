#!/usr/bin/env bash
# Builds the real etcd and kube-apiserver that the Kubernetes tests start, from
# their Go modules (ci/etcd/go.mod, ci/kube-apiserver/go.mod pin the versions).
# Built once: each binary is cached under $NETTAP_K8S_BIN (~/.cache/nettap/k8s)
# keyed by the hash of its go.mod and go.sum, so a second run builds nothing.
# Called by ci/install.sh; a missing prerequisite is an error, never a skip.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export NETTAP_K8S_BIN="${NETTAP_K8S_BIN:-$HOME/.cache/nettap/k8s}"
mkdir -p "$NETTAP_K8S_BIN"

command -v go >/dev/null || [ ! -x /usr/local/go/bin/go ] || export PATH="/usr/local/go/bin:$PATH"
command -v go >/dev/null || { echo "ci/install-k8s.sh: Go (>= 1.26) is required to build etcd and kube-apiserver and is not found" >&2; exit 1; }
go_minor="$(go env GOVERSION | sed -n 's/^go1\.\([0-9]*\).*/\1/p')"
[ "${go_minor:-0}" -ge 26 ] || { echo "ci/install-k8s.sh: Go >= 1.26 is required (kube-apiserver's go.mod), found $(go env GOVERSION)" >&2; exit 1; }

# build NAME DIR PACKAGE [LDFLAGS]: $NETTAP_K8S_BIN/NAME is the binary of
# PACKAGE as pinned by DIR's go.mod; older builds of NAME are removed.
build() {
  local name="$1" dir="$root/$2" pkg="$3" ldflags="${4:-}" key out
  key="$(cat "$dir/go.mod" "$dir/go.sum" | sha256sum | cut -c1-16)"
  out="$NETTAP_K8S_BIN/$name-$key"
  if [ ! -x "$out" ]; then
    echo "ci/install-k8s.sh: building $name ($pkg, pinned in ${dir#"$root"/}/go.mod; once, several minutes)"
    local started=$SECONDS
    (cd "$dir" && GOFLAGS=-mod=readonly go build -trimpath -ldflags="-s -w $ldflags" -o "$out.tmp" "$pkg")
    mv "$out.tmp" "$out"
    echo "ci/install-k8s.sh: built $name in $((SECONDS - started)) s"
    find "$NETTAP_K8S_BIN" -maxdepth 1 -name "$name-*" ! -name "$name-$key" -delete
  fi
  ln -sfn "$name-$key" "$NETTAP_K8S_BIN/$name"
}

build etcd ci/etcd go.etcd.io/etcd/server/v3
# The version it reports (/version) is the module's, as a release build's would be.
kube_version="$(cd "$root/ci/kube-apiserver" && go list -m -f '{{.Version}}' k8s.io/kubernetes)"
[[ "$kube_version" =~ ^v1\.([0-9]+)\. ]] || { echo "ci/install-k8s.sh: no k8s.io/kubernetes version in ci/kube-apiserver/go.mod" >&2; exit 1; }
v=k8s.io/component-base/version
build kube-apiserver ci/kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver \
  "-X $v.gitVersion=$kube_version -X $v.gitMajor=1 -X $v.gitMinor=${BASH_REMATCH[1]} -X $v.gitTreeState=clean"
