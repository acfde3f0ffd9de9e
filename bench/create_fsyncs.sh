#!/usr/bin/env bash
# Syncs ttmd makes per `ttmctl create` (issue 20, item "create"): a run of
# N creates minus a run with none, each on a fresh tree, counted by
# `strace -f -c -e trace=fdatasync,fsync,syncfs` on ttmd (start to SIGTERM,
# so the checkpoint's and the shutdown's syncs count too).
#
#   bench/create_fsyncs.sh [BIN_DIR] [N]    # default: target/release 20
#
# Prints one line per syscall: calls with N creates, without, and per create.
set -euo pipefail
bin=${1:-target/release}
n=${2:-20}

# run CREATES OUT: runs ttmd under strace for CREATES creations; leaves the
# strace -c table in OUT.
run() {
    local creates=$1 out=$2 tmp
    tmp=$(mktemp -d)
    mkdir -p "$tmp/tree"
    strace -f -c -o "$out" -e trace=fdatasync,fsync,syncfs \
        "$bin/ttmd" --root "$tmp/tree" --socket "$tmp/s.sock" 2>/dev/null &
    local spid=$!
    export TETRA_DIR="$tmp/tree" TTM_SOCKET="$tmp/s.sock" TTM_NO_AUTOSTART=1
    until "$bin/ttmctl" list >/dev/null 2>&1; do sleep 0.05; done
    for i in $(seq 1 "$creates"); do
        "$bin/ttmctl" create "bench create $i" >/dev/null
    done
    kill -TERM "$(cat "/proc/$spid/task/$spid/children")"
    wait "$spid"
    rm -rf "$tmp"
}

calls() { # calls SYSCALL TABLE
    awk -v s="$1" '$NF == s { print $4 }' "$2" | grep . || echo 0
}

work=$(mktemp -d)
run 0 "$work/none"
run "$n" "$work/some"
for s in fdatasync fsync syncfs; do
    with=$(calls "$s" "$work/some")
    without=$(calls "$s" "$work/none")
    awk -v s="$s" -v w="$with" -v o="$without" -v n="$n" \
        'BEGIN { printf "%-9s %5d with %d creates, %5d without: %.2f per create\n", s, w, n, o, (w - o) / n }'
done
rm -rf "$work"
