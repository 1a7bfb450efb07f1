#!/usr/bin/env bash
# Quick start: one pod VM through the whole peer pods data path, on this machine.
#
#   bash scripts/install.sh       # as root, once: system packages and .venv
#   bash scripts/quickstart.sh    # as root
#
# It starts cloud-api-adaptor with the embedded `local` provider (a pod VM is a process
# group in its own network namespace), runs `peerpodctl demo` against it (CreateVM ->
# StartVM -> Health/Check through the agent proxy -> StopVM, as the Kata shim does),
# prints a report and removes everything it created, even on failure.
#
# As root with network namespace and VXLAN support, the adaptor plays a worker node inside
# a network namespace this script creates (so the provider's bridge and every address live
# only there; the machine's own network is never touched), a pod network namespace is
# wired like a CNI would, and the pod network reaches the pod VM through a VXLAN tunnel.
# Otherwise (not root, or no namespaces): LOCAL_NETNS=off TUNNEL_TYPE=none, pod VMs listen
# on loopback addresses and there is no pod network.
#
# Environment (all optional):
#   PEERPODS_VENV              virtual environment with the project (default: <repo>/.venv)
#   QUICKSTART_MODE            auto (default), netns or loopback
#   QUICKSTART_ADAPTOR_ARGS    extra cloud-api-adaptor flags (word-split)
#   QUICKSTART_TIMEOUT         StartVM timeout in seconds (default 60)
# Exit status: 0 when every step passed, 1 otherwise.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${PEERPODS_VENV:-$repo/.venv}
mode=${QUICKSTART_MODE:-auto}
start_timeout=${QUICKSTART_TIMEOUT:-60}
read -r -a extra_args <<<"${QUICKSTART_ADAPTOR_ARGS:-}"

say() { printf '%s\n' "$*"; }
err() { printf 'quickstart: %s\n' "$*" >&2; }

for tool in cloud-api-adaptor peerpodctl python; do
    if [ ! -x "$venv/bin/$tool" ]; then
        err "$venv/bin/$tool not found: run 'sudo bash scripts/install.sh' first"
        exit 1
    fi
done
case $mode in auto | netns | loopback) ;; *) err "QUICKSTART_MODE must be auto, netns or loopback"; exit 2 ;; esac

tag=$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')
tmp= # set below, once the clean-up trap is in place
logs=/tmp/peerpods-quickstart-$tag
adaptor_log=$logs/adaptor.log
worker_ns=ppqs-$tag-worker
pod_ns=ppqs-$tag-pod
created_ns=()
adaptor_pid=
started=$(date +%s.%N)
status=1

elapsed() { "$venv/bin/python" -c 'import sys, time; print(f"{time.time() - float(sys.argv[1]):.1f}")' "$1"; }

# ----------------------------------------------------------------------------- clean-up

stop_leftover_sandboxes() {
    # A failed demo may leave a sandbox behind: StopVM it while the adaptor still runs.
    local dir
    [ -n "$tmp" ] && [ -d "$tmp/pods" ] || return 0
    for dir in "$tmp/pods"/*/; do
        [ -d "$dir" ] || continue
        timeout 30 "$venv/bin/peerpodctl" --socket "$tmp/hv.sock" --pods-dir "$tmp/pods" \
            stop "$(basename "$dir")" >/dev/null 2>&1 || true
    done
}

stop_adaptor() {
    [ -n "$adaptor_pid" ] || return 0
    if kill -0 "$adaptor_pid" 2>/dev/null; then
        kill -TERM "$adaptor_pid" 2>/dev/null || true
        for _ in $(seq 100); do
            kill -0 "$adaptor_pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$adaptor_pid" 2>/dev/null || true
    fi
    wait "$adaptor_pid" 2>/dev/null || true
    adaptor_pid=
}

kill_netns_pids() {
    local pid
    for pid in $(ip netns pids "$1" 2>/dev/null); do
        kill -KILL "$pid" 2>/dev/null || true
    done
}

remove_leftover_vms() {
    # Pod VMs outlive their adaptor by design (restart survival); kill what StopVM missed.
    local record id pgid
    [ -n "$tmp" ] || return 0
    for record in "$tmp"/local/*/instance.json; do
        [ -f "$record" ] || continue
        id=$(basename "$(dirname "$record")")
        pgid=$("$venv/bin/python" -c 'import json, sys; print(json.load(open(sys.argv[1])).get("pid") or "")' "$record" 2>/dev/null || true)
        if [ -n "$pgid" ]; then
            kill -KILL -- "-$pgid" 2>/dev/null || true
        fi
        if [ -e "/run/netns/ppvm-$id" ] || [ -e "/run/netns/ppvm-$id-pod" ]; then
            kill_netns_pids "ppvm-$id"
            kill_netns_pids "ppvm-$id-pod"
            ip netns delete "ppvm-$id-pod" 2>/dev/null || true
            ip netns delete "ppvm-$id" 2>/dev/null || true
        fi
        say "  removed leftover pod VM $id"
    done
}

cleanup() {
    local code=$?
    trap - EXIT INT TERM
    set +e
    if [ -n "$adaptor_pid" ] && kill -0 "$adaptor_pid" 2>/dev/null; then
        stop_leftover_sandboxes
    fi
    stop_adaptor
    remove_leftover_vms
    local ns
    for ns in "${created_ns[@]}"; do
        kill_netns_pids "$ns"
        ip netns delete "$ns" 2>/dev/null
    done
    [ -z "$tmp" ] || rm -rf "$tmp"
    if [ "$code" -ne 0 ] || [ "$status" -ne 0 ]; then
        err "FAILED (see above). Last lines of the adaptor log ($adaptor_log):"
        tail -n 40 "$adaptor_log" >&2 2>/dev/null || true
        say "logs:      $logs"
        exit 1
    fi
    exit 0
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
mkdir -p "$logs"
tmp=$(mktemp -d /tmp/ppqs-XXXXXX) # short: unix socket paths live below it

# ----------------------------------------------------------------------------- mode

netns_unsupported() {
    # Prints why network namespaces cannot be used here (nothing when they can).
    if [ "$(id -u)" -ne 0 ]; then echo "not root"; return; fi
    local tool
    for tool in ip iptables nsenter; do
        command -v "$tool" >/dev/null || { echo "no $tool command"; return; }
    done
}

why=
if [ "$mode" != loopback ]; then
    why=$(netns_unsupported)
    if [ -n "$why" ] && [ "$mode" = netns ]; then
        err "QUICKSTART_MODE=netns but $why"
        exit 1
    fi
fi

make_worker() {
    # The "worker node": a namespace with an uplink (default route) and a CNI bridge.
    ip netns add "$worker_ns" || return 1
    created_ns+=("$worker_ns")
    ip -n "$worker_ns" link set lo up &&
        ip -n "$worker_ns" link add uplink type veth peer name uplink-peer &&
        ip -n "$worker_ns" link set uplink-peer up &&
        ip -n "$worker_ns" addr add 192.0.2.1/24 dev uplink &&
        ip -n "$worker_ns" link set uplink up &&
        ip -n "$worker_ns" route add default via 192.0.2.254 dev uplink onlink &&
        ip -n "$worker_ns" link add cni0 type bridge &&
        ip -n "$worker_ns" addr add 10.244.1.1/24 dev cni0 &&
        ip -n "$worker_ns" link set cni0 up &&
        ip -n "$worker_ns" link add qsprobe type vxlan id 42 dstport 4789 dev uplink &&
        ip -n "$worker_ns" link delete qsprobe &&
        ip netns exec "$worker_ns" iptables -w -t raw -S >/dev/null
}

make_pod() {
    # The pod's network namespace, as a bridge CNI plugin leaves it.
    ip netns add "$pod_ns" || return 1
    created_ns+=("$pod_ns")
    ip -n "$pod_ns" link set lo up &&
        ip link add qs-pod netns "$worker_ns" type veth peer name eth0 netns "$pod_ns" &&
        ip -n "$worker_ns" link set qs-pod master cni0 up &&
        ip -n "$pod_ns" addr add 10.244.1.2/24 dev eth0 &&
        ip -n "$pod_ns" link set eth0 up &&
        ip -n "$pod_ns" route add default via 10.244.1.1 dev eth0
}

if [ "$mode" != loopback ] && [ -z "$why" ]; then
    if ! make_worker 2>"$logs/netns-setup.err"; then
        why="cannot build a network namespace with a bridge and VXLAN: $(tail -n 1 "$logs/netns-setup.err")"
        for ns in "${created_ns[@]}"; do ip netns delete "$ns" 2>/dev/null || true; done
        created_ns=()
        if [ "$mode" = netns ]; then err "$why"; exit 1; fi
    fi
fi
if [ "$mode" != loopback ] && [ -z "$why" ]; then
    mode=netns
    make_pod 2>>"$logs/netns-setup.err" || { err "cannot create the pod network namespace: $(tail -n 1 "$logs/netns-setup.err")"; exit 1; }
    description="network namespaces: adaptor in netns $worker_ns (the worker node), pod netns $pod_ns (10.244.1.2/24), VXLAN tunnel to the pod VM"
else
    mode=loopback
    description="loopback (LOCAL_NETNS=off TUNNEL_TYPE=none): ${why:-QUICKSTART_MODE=loopback}; pod VMs listen on 127.x addresses, no pod network"
fi
rm -f "$logs/netns-setup.err"

# ----------------------------------------------------------------------------- adaptor

free_port() {
    "$venv/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

adaptor_env=(
    "PATH=$PATH"
    "HOME=${HOME:-/root}"
    "REMOTE_HYPERVISOR_ENDPOINT=$tmp/hv.sock"
    "PODS_DIR=$tmp/pods"
    "LOCAL_STATE_DIR=$tmp/local"
    "NODE_NAME=quickstart-$tag"
    "SHUTDOWN_GRACE_PERIOD=5s"
)
if [ "$mode" = netns ]; then
    adaptor_env+=(
        "TUNNEL_TYPE=vxlan"
        "LOCAL_NETNS=on"
        "LOCAL_SUBNET=198.18.0.0/24"
        "PROBE_PORT=8000"
    )
    launcher=(nsenter "--net=/run/netns/$worker_ns" --)
else
    port=$(free_port)
    adaptor_env+=(
        "TUNNEL_TYPE=none"
        "LOCAL_NETNS=off"
        "LOCAL_LOOPBACK_SUBNET=127.$((RANDOM % 250 + 1)).$((RANDOM % 250 + 1)).0/24"
        "PROBE_PORT=$(free_port)"
        "FORWARDER_PORT=$port"
        "LOCAL_FORWARDER_PORT=$port"
    )
    launcher=()
fi

say "peerpods quick start"
say "mode:      $description"
t0=$(date +%s.%N)
"${launcher[@]}" env -i "${adaptor_env[@]}" "$venv/bin/cloud-api-adaptor" local "${extra_args[@]}" \
    >"$adaptor_log" 2>&1 &
adaptor_pid=$!
for _ in $(seq 300); do
    [ -S "$tmp/hv.sock" ] && break
    if ! kill -0 "$adaptor_pid" 2>/dev/null; then
        wait "$adaptor_pid" 2>/dev/null && code=0 || code=$?
        adaptor_pid=
        err "cloud-api-adaptor exited with status $code before opening its socket"
        exit 1
    fi
    sleep 0.1
done
if [ ! -S "$tmp/hv.sock" ]; then
    err "cloud-api-adaptor did not open $tmp/hv.sock in 30s"
    exit 1
fi
say "adaptor:   up in $(elapsed "$t0")s (pid $adaptor_pid, socket $tmp/hv.sock)"

# ----------------------------------------------------------------------------- demo

demo_args=(--socket "$tmp/hv.sock" --pods-dir "$tmp/pods" demo --timeout "$start_timeout")
if [ "$mode" = netns ]; then
    demo_args+=(--netns "/run/netns/$pod_ns")
fi
say "demo:      peerpodctl demo (create -> start -> check through the agent proxy -> stop)"
set +e
"$venv/bin/peerpodctl" "${demo_args[@]}" 2>&1 | tee "$logs/demo.txt" | sed 's/^/  /'
demo_status=${PIPESTATUS[0]}
set -e
if [ "$mode" = netns ] && [ "$demo_status" -eq 0 ]; then
    if ! grep -q "vxlan tunnel id [0-9]* to .* set up" "$adaptor_log"; then
        err "the adaptor log does not show the VXLAN tunnel being set up"
        demo_status=1
    fi
fi

say "stopping:  the adaptor (SIGTERM) and removing what the quick start created"
kill -TERM "$adaptor_pid" 2>/dev/null || true
for _ in $(seq 100); do
    kill -0 "$adaptor_pid" 2>/dev/null || break
    sleep 0.1
done
if kill -0 "$adaptor_pid" 2>/dev/null; then
    err "cloud-api-adaptor did not stop within 10s of SIGTERM"
    demo_status=1
fi
stop_adaptor

if [ "$demo_status" -ne 0 ]; then
    err "peerpodctl demo failed (status $demo_status)"
    exit 1
fi
status=0
say "result:    passed in $(elapsed "$started")s"
say "logs:      $logs (adaptor.log, demo.txt)"
