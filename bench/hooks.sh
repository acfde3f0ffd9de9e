#!/usr/bin/env bash
# Appends/s with and without a hook on every event, same machine, same run.
# The hook sleeps 1 s (on-event and on-start, so every append of the run
# has one); hooks run off the writer's path, so the two figures should
# match: the hooks queue (hooks.queue) and run 4 at a time, and what does
# not fit the queue is dropped and counted, never waited for.
#
# Each append is one `ttmctl event` process, as a script sees it; C loops
# append at once, N appends each.
#
# The two are measured in turn, R rounds (the machine's other load drifts;
# alternating spreads it over both).
#
# Usage: cargo build --release -p ttmd -p ttmctl && bench/hooks.sh [C] [N] [R]
# (TTM_BIN_DIR=target/debug to time a debug build instead)
set -euo pipefail
cd "$(dirname "$0")/.."
clients=${1:-8}
per=${2:-200}
rounds=${3:-3}
bin=${TTM_BIN_DIR:-$PWD/target/release}
ctl=$bin/ttmctl
tmp=$(mktemp -d)
pid=
stop() {
  if [[ -n "$pid" ]]; then
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    pid=
  fi
}
trap 'stop; rm -rf "$tmp"' EXIT
export TTM_NO_AUTOSTART=1

now() { date +%s%N; }

# run NAME HOOK_SECS LABEL: starts a daemon on a fresh tree (with a hook sleeping
# HOOK_SECS on every event when > 0), appends, prints appends/s.
run() {
  local name=$1 secs=$2 label=$3
  rm -rf "${tmp:?}/$name"
  export TETRA_DIR=$tmp/$name/tree TTM_SOCKET=$tmp/$name/s.sock
  mkdir -p "$TETRA_DIR/ttm/hooks"
  chmod 755 "$TETRA_DIR/ttm/hooks"
  if ((secs > 0)); then
    for h in on-event on-start; do
      printf '#!/bin/sh\nsleep %s\n' "$secs" >"$TETRA_DIR/ttm/hooks/$h"
      chmod 755 "$TETRA_DIR/ttm/hooks/$h"
    done
  fi
  "$bin/ttmd" --root "$TETRA_DIR" --socket "$TTM_SOCKET" 2>"$tmp/$name.log" &
  pid=$!
  for _ in $(seq 200); do [ -S "$TTM_SOCKET" ] && break; sleep 0.05; done
  local id t0 t1
  id=$("$ctl" create "bench $name")
  t0=$(now)
  for _ in $(seq "$clients"); do
    (for _ in $(seq "$per"); do "$ctl" event bench '{"i":1}' -t "$id"; done) &
  done
  wait_loops
  t1=$(now)
  local total=$((clients * per))
  local ran dropped
  ran=$("$ctl" metrics | awk '/^ttm_hooks_run_total /{print $2}')
  dropped=$("$ctl" metrics | awk '/^ttm_hooks_dropped_total /{print $2}')
  awk -v n="$total" -v ns="$((t1 - t0))" -v name="$label" -v ran="$ran" -v dr="$dropped" \
    'BEGIN { printf "| %s | %d | %.0f | %s | %s |\n", name, n, n / (ns / 1e9), ran, dr }'
  stop
}

# Waits for the append loops (not the daemon, also a child of this shell).
wait_loops() {
  local j
  for j in $(jobs -p); do
    [[ "$j" == "$pid" ]] || wait "$j"
  done
}

echo "| hooks | appends | appends/s | hooks started during the run | hooks dropped (queue full) |"
echo "|---|---:|---:|---:|---:|"
for _ in $(seq "$rounds"); do
  run none 0 "none"
  run hook 1 "1 s hook on every event"
done
