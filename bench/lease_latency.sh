#!/usr/bin/env bash
# Grant latency of a lease, next to flock(1) on the same machine in the same
# run. Both are timed as a script sees them: one process per step.
#
#   uncontended: acquire + release of a free lock, N times
#                (`ttmctl lease acquire --no-wait` + `ttmctl lease release`
#                 vs `flock FILE true`)
#   16 waiters:  16 loops contend for one lock, R rounds each; every round
#                takes the lock, does nothing, lets go. Reported: wall time
#                per handoff (total / grants), and each waiter's median wait
#                from asking to holding.
#
# Usage: cargo build --release && bench/lease_latency.sh [N] [R]
# (TTM_BIN_DIR=target/debug to time a debug build instead)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-100}
rounds=${2:-10}
bin=${TTM_BIN_DIR:-$PWD/target/release}
tmp=$(mktemp -d)
trap '"$bin/ttmctl" --socket "$tmp/s.sock" daemon stop >/dev/null 2>&1 || true; rm -rf "$tmp"' EXIT
export TETRA_DIR=$tmp/tree TTM_SOCKET=$tmp/s.sock TTM_NO_AUTOSTART=1
ctl=$bin/ttmctl
"$bin/ttmd" --root "$TETRA_DIR" --socket "$TTM_SOCKET" 2>"$tmp/ttmd.log" &
for _ in $(seq 100); do [ -S "$TTM_SOCKET" ] && break; sleep 0.05; done

now() { date +%s%N; }
ms() { awk -v ns="$1" -v k="$2" 'BEGIN { printf "%.2f", ns / k / 1e6 }'; }

# --- uncontended
id=$("$ctl" create "bench holder")
t0=$(now)
for _ in $(seq "$n"); do
  "$ctl" lease acquire @bench -t "$id" --no-wait >/dev/null
  "$ctl" lease release @bench -t "$id"
done
t1=$(now)
for _ in $(seq "$n"); do flock "$tmp/lock" true; done
t2=$(now)
echo "uncontended, acquire+release (ms per pair, $n pairs):"
echo "  ttmctl lease  $(ms $((t1 - t0)) "$n")"
echo "  flock         $(ms $((t2 - t1)) "$n")"

# --- 16 waiters
waiter_ttm() { # W: R rounds of create-with-lease (waits) + commit
  local r id a b
  for r in $(seq "$rounds"); do
    a=$(now)
    id=$("$ctl" create "w$1-$r" --no-activate --lease @hot 2>/dev/null)
    b=$(now)
    echo $((b - a)) >>"$tmp/wait_ttm.$1"
    "$ctl" commit -t "$id" >/dev/null
  done
}
waiter_flock() {
  local r a
  for r in $(seq "$rounds"); do
    a=$(now)
    flock "$tmp/hot" sh -c "echo \$((\$(date +%s%N) - $a)) >>'$tmp/wait_flock.$1'"
  done
}
median() { sort -n | awk '{ v[NR] = $1 } END { printf "%.2f", v[int((NR + 1) / 2)] / 1e6 }'; }

# `wait` on the waiters only: ttmd is a background job of this shell too.
pids=()
t0=$(now)
for w in $(seq 16); do waiter_ttm "$w" & pids+=($!); done
wait "${pids[@]}"
t1=$(now)
pids=()
for w in $(seq 16); do waiter_flock "$w" & pids+=($!); done
wait "${pids[@]}"
t2=$(now)
grants=$((16 * rounds))
echo "16 waiters, $rounds rounds each ($grants grants):"
echo "  ttmctl lease  $(ms $((t1 - t0)) "$grants") ms per handoff (create+grant+commit), median wait $(cat "$tmp"/wait_ttm.* | median) ms"
echo "  flock         $(ms $((t2 - t1)) "$grants") ms per handoff, median wait $(cat "$tmp"/wait_flock.* | median) ms"
