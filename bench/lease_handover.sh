#!/usr/bin/env bash
# Cluster-wide lease hand-over after the holder's death, against the TTL
# (SPEC §13, §16). One etcd member on loopback, two ttmd (host-a, host-b)
# with --cluster. Each round: a script on host-a creates a transaction
# holding @prod with --lease-ttl TTL and heartbeats it; host-b waits for
# @prod; ttmd on host-a is killed (-9); the time from the kill until
# host-b's `lease acquire` prints its token is the hand-over. The holder
# key lapses one TTL after its last renewal (every third of the TTL), so a
# hand-over measured from the death lies between 2/3 of the TTL and the
# TTL, plus the waiters' poll (250 ms) and etcd's expiry granularity.
#
# Usage: cargo build --release -p ttmd -p ttmctl && bench/lease_handover.sh [ROUNDS] [TTL...]
# (TTM_BIN_DIR=target/debug to time a debug build instead; needs etcd)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
shift || true
ttls=("${@:-2s 5s}")
# shellcheck disable=SC2206
ttls=(${ttls[*]})
bin=${TTM_BIN_DIR:-$PWD/target/release}
tmp=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do
        kill -9 "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    rm -rf "$tmp"
}
trap cleanup EXIT
port=$((20000 + RANDOM % 20000))
etcd --name m0 --data-dir "$tmp/etcd" \
    --listen-client-urls "http://127.0.0.1:$port" --advertise-client-urls "http://127.0.0.1:$port" \
    --listen-peer-urls "http://127.0.0.1:$((port + 1))" \
    --initial-advertise-peer-urls "http://127.0.0.1:$((port + 1))" \
    --initial-cluster "m0=http://127.0.0.1:$((port + 1))" >"$tmp/etcd.log" 2>&1 &
pids+=($!)
for _ in $(seq 200); do
    etcdctl --endpoints "127.0.0.1:$port" endpoint health >/dev/null 2>&1 && break
    sleep 0.1
done

start_ttmd() { # host; sets $started to its pid
    local h=$1
    "$bin/ttmd" --root "$tmp/$h/tree" --socket "$tmp/$h.sock" \
        --cluster "http://127.0.0.1:$port" --host-id "$h" >/dev/null 2>>"$tmp/$h.log" &
    started=$!
    pids+=("$started")
    for _ in $(seq 200); do [ -S "$tmp/$h.sock" ] && break; sleep 0.05; done
}
ctl() { # host args...
    local h=$1
    shift
    TETRA_DIR=$tmp/$h/tree TTM_SOCKET=$tmp/$h.sock TTM_NO_AUTOSTART=1 "$bin/ttmctl" "$@"
}
now() { date +%s%N; }

start_ttmd host-b
printf '| TTL | rounds | hand-over min | median | max | over the TTL (median) |\n|---|---:|---:|---:|---:|---:|\n'
for ttl in "${ttls[@]}"; do
    times=()
    for _ in $(seq "$rounds"); do
        rm -f "$tmp/host-a.sock"
        start_ttmd host-a
        a=$started
        id=$(ctl host-a create holder --no-activate --lease @prod --lease-ttl "$ttl")
        (while ctl host-a heartbeat -t "$id" >/dev/null 2>&1; do sleep 0.2; done) &
        beat=$!
        next=$(ctl host-b create next --no-activate)
        ctl host-b lease acquire @prod -t "$next" >"$tmp/token" 2>"$tmp/acq.err" &
        waiter=$!
        sleep 0.5
        t0=$(now)
        kill -9 "$a"
        wait "$waiter"
        wait "$a" 2>/dev/null || true
        t1=$(now)
        kill "$beat" 2>/dev/null || true
        wait "$beat" 2>/dev/null || true
        times+=($(((t1 - t0) / 1000000)))
        ctl host-b commit -t "$next" >/dev/null
        rm -rf "$tmp/host-a"
    done
    sorted=($(printf '%s\n' "${times[@]}" | sort -n))
    n=${#sorted[@]}
    med=${sorted[$((n / 2))]}
    ttl_ms=$(awk -v t="$ttl" 'BEGIN { sub(/s$/, "", t); print t * 1000 }')
    printf '| %s | %d | %d ms | %d ms | %d ms | %+d ms |\n' "$ttl" "$n" "${sorted[0]}" "$med" \
        "${sorted[$((n - 1))]}" $((med - ttl_ms))
done
