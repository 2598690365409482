#!/usr/bin/env bash
# A three-node Ray cluster on this machine, in network namespaces this script makes (a bridge of
# its own, one veth pair and address per node, each Ray node with --node-ip-address, its own
# --temp-dir and --num-cpus 1), and the sharded-search test on it (cluster/test_search.py):
# Fashion-MNIST in 3 shards x 2 replicas spread over nodes, answers against the single-machine
# index, a node cut off, a node killed, the node back. Everything started here is stopped by
# process id (`ip netns pids` of our own namespaces, never `ray stop` or a kill by name); the
# namespaces and bridge are removed. Prints `cluster: N passed, M failed` last. Needs root.
#   bash cluster/test_local.sh [ENGINE]   (default .build/release/engine, built if missing)
set -euo pipefail
cd "$(dirname "$0")/.."
engine=${1:-.build/release/engine}
[ -x "$engine" ] || swift build -c release --product engine 2>&1 | tail -1
python=$(bash cluster/install.sh)
ray="$(dirname "$python")/ray"
FM=/usr/share/datasets/fashion-mnist
work=${ENGINE_CLUSTER_WORK:-$HOME/.cache/engine-models/cluster-test}
mkdir -p "$work"
tag=e$$
bridge=br-$tag
nodes=("${tag}n1" "${tag}n2" "${tag}n3")
export RAY_USAGE_STATS_ENABLED=0 RAY_AUTH_MODE=token
RAY_AUTH_TOKEN=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')
export RAY_AUTH_TOKEN
tmp=$(mktemp -d /tmp/engine-cluster.XXXXXX)
cleanup() {
    for n in "${nodes[@]}"; do
        for p in $(ip netns pids "$n" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
    done
    sleep 1
    for n in "${nodes[@]}"; do ip netns del "$n" 2>/dev/null || true; done
    ip link del "$bridge" 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT
trap "exit 130" INT
trap "exit 143" TERM HUP

# the single-machine reference: ground truth and the one-index answers for the first queries
[ -f "$work/gt.ivecs" ] || "$engine" index groundtruth --base $FM/train-images-idx3-ubyte.gz \
    --queries $FM/t10k-images-idx3-ubyte.gz --k 10 --output "$work/gt.ivecs" >/dev/null
[ -d "$work/single.idx" ] || "$engine" index build --input $FM/train-images-idx3-ubyte.gz --output "$work/single.idx" \
    --payload f16 >/dev/null 2>&1
[ -f "$work/single.npy" ] || "$engine" index search --index "$work/single.idx" \
    --queries $FM/t10k-images-idx3-ubyte.gz --k 10 --nprobe 32 --output "$work/single.npy" >/dev/null

ip link add "$bridge" type bridge
ip addr add 10.77.0.1/24 dev "$bridge"
ip link set "$bridge" up
for i in 0 1 2; do
    n=${nodes[$i]}
    ip netns add "$n"
    ip link add "v$n" type veth peer name "v${n}p"
    ip link set "v${n}p" netns "$n"
    ip link set "v$n" master "$bridge" up
    ip -n "$n" addr add "10.77.0.1$((i + 1))/24" dev "v${n}p"
    ip -n "$n" link set "v${n}p" up
    ip -n "$n" link set lo up
done
start=$(date +%s)
ip netns exec "${nodes[0]}" setsid "$ray" start --head --node-ip-address 10.77.0.11 --port 6380 --num-cpus 1 \
    --temp-dir "$tmp/n1" --include-dashboard false --disable-usage-stats --resources '{"node1": 1}' --block \
    >"$tmp/n1.log" 2>&1 &
disown
for i in 1 2; do
    for _ in $(seq 1 60); do grep -q "block forever" "$tmp/n1.log" && break; sleep 0.5; done
    ip netns exec "${nodes[$i]}" setsid "$ray" start --address 10.77.0.11:6380 --node-ip-address "10.77.0.1$((i + 1))" \
        --num-cpus 1 --temp-dir "$tmp/n$((i + 1))" --disable-usage-stats --resources "{\"node$((i + 1))\": 1}" \
        --block >"$tmp/n$((i + 1)).log" 2>&1 &
    disown
done
for _ in $(seq 1 120); do
    alive=$(ip netns exec "${nodes[0]}" "$ray" status --address 10.77.0.11:6380 2>/dev/null | grep -c " node_" || true)
    [ "$alive" = 3 ] && break
    sleep 1
done
echo "cluster: 3 Ray nodes up in $(($(date +%s) - start)) s (namespaces ${nodes[*]})"
rc=0
ip netns exec "${nodes[0]}" "$python" cluster/test_search.py "$engine" "$work" 10.77.0.11:6380 \
    "$(IFS=,; echo "${nodes[*]}")" 2>&1 | grep -v "^\s*$" | grep -vE "^\s|Raylet is terminated|token-auth" || rc=$?
exit "$rc"
