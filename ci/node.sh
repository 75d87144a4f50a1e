#!/usr/bin/env bash
# A real single-node Kubernetes cluster on this host, with nettap installed:
#
#   bash ci/node.sh up     builds what is missing (ci/install.sh), builds the
#                          images, starts etcd, kube-apiserver, the controller
#                          manager, scheduler, containerd, kube-proxy and the
#                          kubelet, waits for the node to be Ready, loads the
#                          images into containerd, starts CoreDNS as the
#                          cluster DNS, `helm install`s
#                          charts/nettap and waits for the sensor DaemonSet and
#                          the injector; its last line is the kubeconfig path.
#   bash ci/node.sh down   stops every process it started and removes what it
#                          made: containers, mounts, network namespaces, the
#                          bridge, iptables rules, cgroups, state.
#
# `up` on a node that is up takes it down first. State lives in
# $NETTAP_NODE_STATE (/var/lib/nettap-node) and /run/nettap-node, logs in
# $NETTAP_NODE_STATE/log. NETTAP_PROFILE (release) picks the cargo profile
# whose binaries go into the images, NETTAP_BIN_DIR takes them ready-made.
# Needs root.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
state="${NETTAP_NODE_STATE:-/var/lib/nettap-node}"
run=/run/nettap-node
node_name=nettap-node
pod_cidr=10.244.0.0/24
service_cidr=10.96.0.0/24
api_port=6443
# Fixed ports outside the range the tests pick theirs from (20000-29999) and
# the ephemeral range.
etcd_port=2379
bridge=nettap0

say() { echo "ci/node.sh: [${SECONDS}s] $*" >&2; }
die() { say "$*"; exit 1; }
[ "$(id -u)" = 0 ] || die "a node needs root (containers, mounts, iptables)"

# Where the cgroup v2 hierarchy is (the whole /sys/fs/cgroup, or the
# `unified` mount of a hybrid host): the node's daemons are kept in one
# cgroup of it, so `down` finds every process they left.
cgroup2="$(awk '$3 == "cgroup2" { print $2; exit }' /proc/mounts)"
[ -n "$cgroup2" ] || die "no cgroup v2 hierarchy is mounted"
daemons_cg="$cgroup2/nettap-node"

bin() { echo "$NETTAP_K8S_BIN/$1"; }
kubectl() { "$(bin kubectl)" --kubeconfig "$state/admin.kubeconfig" "$@"; }

# start NAME ARGS...: a daemon in the daemons' cgroup, its log in log/NAME.log.
start() {
  local name="$1"
  shift
  (
    echo "$BASHPID" >"$daemons_cg/cgroup.procs"
    exec setsid "$@" </dev/null >"$state/log/$name.log" 2>&1
  ) &
  echo $! >"$run/$name.pid"
}

# wait_for WHAT SECONDS CMD...: CMD until it succeeds, else the logs and fail.
wait_for() {
  local what="$1" limit="$2" started=$SECONDS
  shift 2
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS - started > limit)); then
      tail -n 30 "$state"/log/*.log >&2 || true
      die "$what not ready in $limit s"
    fi
    sleep 1
  done
  say "$what ready ($((SECONDS - started)) s)"
}

pki() {
  local d="$state/pki" ip="$1"
  mkdir -p "$d"
  (
    cd "$d"
    key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
    key ca.key
    openssl req -x509 -new -key ca.key -subj /CN=nettap-node-ca -days 365 -out ca.crt 2>/dev/null
    # cert NAME SUBJECT [SANS]: a certificate signed by the CA.
    cert() {
      key "$1.key"
      openssl req -new -key "$1.key" -subj "$2" -out "$1.csr" 2>/dev/null
      printf '%s\n' "${3:+subjectAltName=$3}" >"$1.ext"
      openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 365 -out "$1.crt" \
        -extfile "$1.ext" 2>/dev/null
    }
    cert apiserver /CN=kube-apiserver "IP:127.0.0.1,IP:$ip,IP:${service_cidr%.0/*}.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
    # The API server's identity towards the kubelet (logs, exec).
    cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client"
    key sa.key
    openssl pkey -in sa.key -pubout -out sa.pub 2>/dev/null
  )
  # Static tokens for the components and the admin (no client certificates
  # to rotate on a node that lives as long as a test run).
  : >"$d/tokens.csv"
  local name principal group token
  while read -r name principal group; do
    token="$(openssl rand -hex 16)"
    echo "$token,$principal,$principal${group:+,\"$group\"}" >>"$d/tokens.csv"
    cat >"$state/$name.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: nettap-node
  cluster: {server: "https://$ip:$api_port", certificate-authority: "$d/ca.crt"}
users:
- name: $name
  user: {token: "$token"}
contexts:
- name: nettap-node
  context: {cluster: nettap-node, user: $name}
current-context: nettap-node
EOF
  done <<EOF
admin nettap-admin system:masters
controller-manager system:kube-controller-manager
scheduler system:kube-scheduler
kubelet system:node:$node_name system:nodes
kube-proxy system:kube-proxy
EOF
}

configs() {
  local cni_bin
  cni_bin="$(dirname "$(readlink -f "$(bin bridge)")")"
  mkdir -p "$state/cni/net.d"
  cat >"$state/containerd.toml" <<EOF
version = 3
root = "$state/containerd"
state = "$run/containerd"
imports = []
[grpc]
  address = "$run/containerd.sock"
[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "docker.io/nettap/pause:1"
[plugins.'io.containerd.cri.v1.runtime']
  disable_apparmor = true
  # Root here may lack CAP_SYS_RESOURCE (our CI machines do): the negative
  # oom_score_adj the kubelet asks for sandboxes is capped at containerd's own.
  restrict_oom_score_adj = true
  # Pods' network namespaces under the state directory, so \`down\` finds them.
  netns_mounts_under_state_dir = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
      BinaryName = "$(command -v runc)"
      Root = "$run/runc"
      SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["$cni_bin"]
    conf_dir = "$state/cni/net.d"
EOF
  cat >"$state/cni/net.d/10-nettap.conflist" <<EOF
{"cniVersion": "1.0.0", "name": "nettap-node", "plugins": [
  {"type": "bridge", "bridge": "$bridge", "isGateway": true, "ipMasq": true, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "$pod_cidr"}]], "routes": [{"dst": "0.0.0.0/0"}],
            "dataDir": "$state/cni/ipam"}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}
EOF
  # No systemd runs here (and cgroups are v1 with a v2 `unified` mount on our
  # machines): the kubelet and runc manage cgroups themselves (cgroupfs), and
  # the kubelet is told that cgroup v1 is what this host has.
  cat >"$state/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://$run/containerd.sock
podLogsDir: $state/pod-logs
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $state/pki/ca.crt}
authorization: {mode: Webhook}
clusterDomain: cluster.local
clusterDNS: [${service_cidr%.0/*}.10]
readOnlyPort: 0
# A shared test machine (its disk nearly full at times): never evict or
# collect the images imported here, evict pods only when the disk is all but full.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 100Mi, nodefs.available: 256Mi, imagefs.available: 256Mi}
EOF
  cat >"$state/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $state/kube-proxy.kubeconfig}
mode: iptables
clusterCIDR: $pod_cidr
hostnameOverride: $node_name
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
# Leave the host's conntrack table size alone.
conntrack: {maxPerCore: 0}
EOF
}

# The images, built from this checkout without a daemon or registry:
# pause (the pod sandbox), CoreDNS (ci/coredns), and the final stages of sensor/Dockerfile and
# injector/Dockerfile from the cargo build of NETTAP_PROFILE (or the
# binaries in NETTAP_BIN_DIR, as the tests give theirs), stripped as the
# Dockerfiles strip theirs.
images() {
  local profile="${NETTAP_PROFILE:-release}" out="$state/images" stage version target="${NETTAP_BIN_DIR:-}"
  if [ -z "$target" ]; then
    local flag=(--profile "$profile")
    [ "$profile" != debug ] || flag=()
    say "building nettap ($profile) for the images"
    (cd "$root" && cargo build "${flag[@]}" --locked -p nettap-sensor -p nettap-injector -p nettap-jvm-agent >&2)
    target="$root/target/$profile"
  fi
  version="$(sed -n 's/^appVersion: *"\?\([^"]*\)"\?$/\1/p' "$root/charts/nettap/Chart.yaml")"
  mkdir -p "$out"
  stage="$(mktemp -d)"
  install -m 0755 "$target/nettap" "$target/nettap-injector" "$stage/"
  install -m 0644 "$target/libnettap_agent.so" "$stage/"
  strip --strip-debug "$stage"/*
  python3 "$root/ci/node/image.py" dockerfile "$root/sensor/Dockerfile" "$stage" \
    "docker.io/nettap/sensor:$version" "$out/sensor.tar"
  python3 "$root/ci/node/image.py" dockerfile "$root/injector/Dockerfile" "$stage" \
    "docker.io/nettap/injector:$version" "$out/injector.tar"
  gcc -static -Os -s -o "$stage/pause" "$root/ci/node/pause.c"
  python3 "$root/ci/node/image.py" files scratch docker.io/nettap/pause:1 "$out/pause.tar" \
    "$stage/pause=/pause" --entrypoint '["/pause"]'
  python3 "$root/ci/node/image.py" files scratch "$(coredns_image)" "$out/coredns.tar" \
    "$(readlink -f "$(bin coredns)")=/coredns" --entrypoint '["/coredns"]'
  rm -rf "$stage"
  ls -l "$out" >&2
}

# The CoreDNS image's name: its version as ci/coredns/go.mod pins it.
coredns_image() {
  echo "docker.io/nettap/coredns:$(sed -n 's|^require github.com/coredns/coredns v||p' "$root/ci/coredns/go.mod")"
}

up() {
  [ ! -d "$run" ] || down
  say "up"
  # What the node and the images need (idempotent; exports NETTAP_K8S_BIN, NETTAP_HELM).
  source "$root/ci/install.sh" >&2
  local ip
  ip="$(ip -4 route get 1.1.1.1 2>/dev/null | sed -n 's/.* src \([0-9.]*\).*/\1/p')"
  [ -n "$ip" ] || die "no IPv4 address with a default route: the node needs one for its API server"
  mkdir -p "$state/log" "$run" "$daemons_cg"
  # Sysctls the node changes, restored by `down`.
  local s
  for s in net.ipv4.ip_forward net.bridge.bridge-nf-call-iptables net.ipv4.conf.all.route_localnet; do
    [ -e "/proc/sys/${s//.//}" ] && echo "$s=$(sysctl -n "$s")" >>"$run/sysctl.saved"
  done
  sysctl -qw net.ipv4.ip_forward=1
  [ ! -e /proc/sys/net/bridge/bridge-nf-call-iptables ] || sysctl -qw net.bridge.bridge-nf-call-iptables=1
  ports_free "$etcd_port" $((etcd_port + 1)) "$api_port" 10248 10249 10250 10256 10257 10259
  images
  say "images built"
  pki "$ip"
  configs

  start etcd "$(bin etcd)" --name nettap-node --data-dir "$state/etcd" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls http://127.0.0.1:$((etcd_port + 1)) --initial-advertise-peer-urls http://127.0.0.1:$((etcd_port + 1)) \
    --initial-cluster nettap-node=http://127.0.0.1:$((etcd_port + 1)) --log-level error --unsafe-no-fsync
  local p="$state/pki"
  # Webhooks and aggregated APIs are called at their endpoints (no route to
  # Service IPs is needed from the API server).
  start kube-apiserver "$(bin kube-apiserver)" --etcd-servers "http://127.0.0.1:$etcd_port" \
    --bind-address 0.0.0.0 --advertise-address "$ip" --secure-port "$api_port" \
    --tls-cert-file "$p/apiserver.crt" --tls-private-key-file "$p/apiserver.key" --client-ca-file "$p/ca.crt" \
    --kubelet-client-certificate "$p/apiserver-kubelet-client.crt" --kubelet-client-key "$p/apiserver-kubelet-client.key" \
    --token-auth-file "$p/tokens.csv" --authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction \
    --service-account-issuer https://kubernetes.default.svc.cluster.local --service-account-key-file "$p/sa.pub" \
    --service-account-signing-key-file "$p/sa.key" --service-cluster-ip-range "$service_cidr" \
    --kubelet-preferred-address-types InternalIP,Hostname \
    --enable-aggregator-routing --allow-privileged --profiling=false
  wait_for kube-apiserver 120 kubectl get --raw /readyz
  start kube-controller-manager "$(bin kube-controller-manager)" --kubeconfig "$state/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$state/controller-manager.kubeconfig" --authorization-kubeconfig "$state/controller-manager.kubeconfig" \
    --service-account-private-key-file "$p/sa.key" --root-ca-file "$p/ca.crt" --use-service-account-credentials \
    --leader-elect=false --bind-address 127.0.0.1 --profiling=false
  start kube-scheduler "$(bin kube-scheduler)" --kubeconfig "$state/scheduler.kubeconfig" \
    --authentication-kubeconfig "$state/scheduler.kubeconfig" --authorization-kubeconfig "$state/scheduler.kubeconfig" \
    --leader-elect=false --bind-address 127.0.0.1 --profiling=false
  PATH="$NETTAP_K8S_BIN:$PATH" start containerd "$(bin containerd)" --config "$state/containerd.toml"
  wait_for containerd 60 "$(bin ctr)" --address "$run/containerd.sock" version
  local i
  for i in pause coredns sensor injector; do
    "$(bin ctr)" --address "$run/containerd.sock" -n k8s.io images import "$state/images/$i.tar" >&2
  done
  start kube-proxy "$(bin kube-proxy)" --config "$state/kube-proxy.yaml"
  start kubelet "$(bin kubelet)" --config "$state/kubelet.yaml" --kubeconfig "$state/kubelet.kubeconfig" \
    --root-dir "$state/kubelet" --cert-dir "$state/kubelet/pki" --hostname-override "$node_name" --node-ip "$ip"
  wait_for "node $node_name" 180 node_ready
  # The cluster DNS at the kubelet's clusterDNS address (pods resolve
  # Service names through it); waited for after the chart's pods start.
  sed -e "s|@IMAGE@|$(coredns_image)|" -e "s|@DNS_IP@|${service_cidr%.0/*}.10|" "$root/ci/node/coredns.yaml" |
    kubectl apply -f - >&2

  # The chart as a user installs it; uprobes on this kernel need CAP_SYS_ADMIN
  # (see charts/nettap/values.yaml).
  "$NETTAP_HELM" --kubeconfig "$state/admin.kubeconfig" upgrade --install nettap "$root/charts/nettap" \
    --namespace nettap --create-namespace --set 'sensor.extraCapabilities={SYS_ADMIN}' >&2
  wait_for "DaemonSet nettap-sensor" 180 daemonset_ready nettap nettap-sensor
  wait_for "Deployment nettap-injector" 180 kubectl -n nettap rollout status deployment/nettap-injector --timeout 1s
  wait_for "CoreDNS" 120 kubectl -n kube-system rollout status deployment/coredns --timeout 1s
  echo "$state/admin.kubeconfig"
}

node_ready() {
  [ "$(kubectl get node "$node_name" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}')" = True ]
}

# daemonset_ready NS NAME: every scheduled pod of the DaemonSet is ready.
daemonset_ready() {
  local s
  s="$(kubectl -n "$1" get daemonset "$2" -o 'jsonpath={.status.desiredNumberScheduled} {.status.numberReady} {.status.updatedNumberScheduled}')"
  read -r want ready updated <<<"$s"
  [ "${want:-0}" -gt 0 ] && [ "$ready" = "$want" ] && [ "$updated" = "$want" ]
}

# cgroup_pids DIR...: the processes in the cgroups DIR and their children
# (a pod's and its containers'), read without exec (see down).
cgroup_pids() {
  local d f pid
  for d in "$@"; do
    for f in "$d/cgroup.procs" "$d"/*/cgroup.procs; do
      [ -r "$f" ] || continue
      while read -r pid; do echo "$pid"; done <"$f"
    done
  done
}

# nap SECONDS: sleep without exec (see down).
nap() {
  [ -n "${nap_fd:-}" ] || exec {nap_fd}<> <(:)
  read -rt "$1" -u "$nap_fd" _ || true
}

# kill_cgroups DIR...: every process in the cgroups DIR (and children),
# SIGKILL, and waits (10 s at most) until they are gone, so their ports and
# mounts are free.
kill_cgroups() {
  local pids deadline=$((SECONDS + 10))
  while ((SECONDS < deadline)); do
    pids="$(cgroup_pids "$@")"
    [ -n "$pids" ] || return 0
    # shellcheck disable=SC2086 # one pid per word
    kill -9 $pids 2>/dev/null || true
    nap 0.1
  done
  say "processes left: $(cgroup_pids "$@" | sort -u | tr '\n' ' ')"
}

# ports_free PORT...: fails, naming who listens, when one is taken.
ports_free() {
  local p listening
  listening="$(ss -Hltnp)"
  for p in "$@"; do
    ! grep -E ":$p[[:space:]]" <<<"$listening" >&2 || die "port $p is taken (above), the node needs it"
  done
}

down() {
  local pid f name pids=()
  # Daemons: a clean stop first (the kubelet last writes its state), then
  # whatever they left (containerd's shims) and every container's process
  # (in the kubelet's pod cgroups, in every hierarchy) are killed.
  for name in kubelet kube-proxy kube-scheduler kube-controller-manager kube-apiserver containerd etcd; do
    f="$run/$name.pid"
    [ -e "$f" ] && read -r pid <"$f" && kill "$pid" 2>/dev/null && pids+=("$pid")
  done
  local alive deadline=$((SECONDS + 10))
  while ((SECONDS < deadline)); do
    alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 1 ] || break
    nap 0.5
  done
  # Only this kubelet's pods (the tests' simulated pods share kubepods/).
  local pod_cgs=() uid h c d
  for uid in "$state"/kubelet/pods/*; do
    uid="${uid##*/}"
    for h in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods "$cgroup2/kubepods"; do
      for c in "$h/pod$uid" "$h"/*/"pod$uid"; do
        [ ! -d "$c" ] || pod_cgs+=("$c")
      done
    done
  done
  kill_cgroups "$daemons_cg" "${pod_cgs[@]}"
  # Mounts (container root filesystems, volumes, network namespaces), deepest first.
  # One umount for all: while a sensor detaches its uprobes at exit, every
  # exec on the node waits (seconds each on our machines), so down execs little.
  awk -v s="$state" -v r="$run" '$2 ~ "^(" s "|" r ")/" { print $2 }' /proc/mounts | sort -r |
    xargs -r umount -l 2>/dev/null || true
  ip link del "$bridge" 2>/dev/null || true
  # iptables: the chains kube-proxy (KUBE-) and the CNI plugins (CNI-) made,
  # and the rules that jump to them.
  local cmd rules
  for cmd in iptables ip6tables; do
    command -v "$cmd-save" >/dev/null || continue
    rules="$("$cmd-save" 2>/dev/null)" || continue
    if grep -qE '(^:|-j |-A )(KUBE|CNI)-' <<<"$rules"; then
      grep -vE '^:(KUBE|CNI)-|^-A (KUBE|CNI)-|-j (KUBE|CNI)-' <<<"$rules" | "$cmd-restore"
    fi
  done
  if [ -e "$run/sysctl.saved" ]; then
    while read -r s; do sysctl -qw "$s" || true; done <"$run/sysctl.saved"
  fi
  # Cgroups the kubelet and runc made (children first; what another user
  # of kubepods/ still holds stays), and the daemons' own: one rmdir.
  local dirs=()
  for c in "${pod_cgs[@]}"; do
    for d in "$c"/*/; do [ ! -d "$d" ] || dirs+=("$d"); done
    dirs+=("$c")
  done
  dirs+=("$daemons_cg")
  for h in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods "$cgroup2/kubepods"; do
    dirs+=("$h/besteffort" "$h/burstable" "$h")
  done
  # A sensor killed above may take half a minute to exit (detaching its
  # uprobes): its pod's cgroups go when it has.
  local deadline=$((SECONDS + 60))
  while rmdir "${dirs[@]}" 2>/dev/null; [ -n "$(for d in "${dirs[@]}"; do [ ! -d "$d" ] || echo "$d"; done)" ]; do
    ((SECONDS < deadline)) || { say "cgroups left: $(cgroup_pids "${pod_cgs[@]}" | sort -u | tr '\n' ' ')"; break; }
    nap 1
  done
  # The kubelet's links to container logs (it always writes them there).
  find /var/log/containers -maxdepth 1 -lname "$state/*" -delete 2>/dev/null || true
  rm -rf "$run" "$state"
  say "down"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) die "usage: bash ci/node.sh up|down" ;;
esac
