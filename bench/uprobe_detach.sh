#!/usr/bin/env bash
# How long a sensor takes to stop (detach its probes): uprobe_multi links
# against one perf event per uprobe point (NETTAP_UPROBE_MULTI=0, the path of
# kernels before 6.6), twice each, alternating. Go (etcd, CoreDNS from the
# node's cache, ci/install-k8s.sh) and OpenSSL (python ssl) processes stay up
# meanwhile so there is something to probe; every other process on the host
# is probed too, so the point counts differ between runs: compare per point.
#   bash bench/uprobe_detach.sh [path/to/nettap]
set -u
cd "$(dirname "$0")/.."
bin="${1:-target/debug/nettap}"
k8s="${NETTAP_K8S_BIN:-$HOME/.cache/nettap/k8s}"
work="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT
"$k8s/etcd" --data-dir "$work/etcd" --listen-client-urls http://127.0.0.1:23791 \
  --advertise-client-urls http://127.0.0.1:23791 --listen-peer-urls http://127.0.0.1:23801 >/dev/null 2>&1 &
printf '.:15353 {\n  whoami\n}\n' >"$work/Corefile"
"$k8s/coredns" -conf "$work/Corefile" >/dev/null 2>&1 &
python3 -c "import ssl, time; time.sleep(300)" &
sleep 3
for multi in 1 0 1 0; do
  NETTAP_UPROBE_MULTI=$multi timeout 300 "$bin" capture --out /dev/null --duration 8 2>"$work/log"
  points=$(grep "probe attached" "$work/log" | grep -c 'probe_type="uprobe"\|probe_type="uretprobe"')
  echo "NETTAP_UPROBE_MULTI=$multi: $points uprobe points;$(grep "probes detached.*uprobes=" "$work/log" | sed 's/.*probes detached//')"
done
