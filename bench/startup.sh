#!/usr/bin/env bash
# ttmctl's start-up next to its floors, several builds side by side, rounds
# interleaved (issue 20 item 6). Per round, for /bin/true and each build:
# `perf stat -r 200` of `--version` and of `event` (CPU time of the client
# process and its page faults; /bin/true takes no arguments), the
# instructions of one `event` (callgrind: the same count however loaded the
# machine is) and the median wall time of RUNS `ttmctl event` against one
# daemon; the round's floors: /bin/true timed the same way and the median
# of RUNS fdatasyncs of a small append in the daemon's tree.
#
# Usage: cargo build --release -p ttmd -p ttmctl && bench/startup.sh [ROUNDS] [DIR...]
# (each DIR holds a ttmctl; default target/release; the daemon is
# $TTMD or target/release/ttmd; RUNS=100 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
shift || true
dirs=("$@")
[ ${#dirs[@]} -gt 0 ] || dirs=("$PWD/target/release")
runs=${RUNS:-100}
ttmd=${TTMD:-$PWD/target/release/ttmd}
tmp=$(mktemp -d)
trap '"${dirs[0]}/ttmctl" daemon stop >/dev/null 2>&1 || true; rm -rf "$tmp"' EXIT
export TETRA_DIR=$tmp/tree TTM_SOCKET=$tmp/s.sock TTM_NO_AUTOSTART=1
"$ttmd" --root "$TETRA_DIR" --socket "$TTM_SOCKET" 2>"$tmp/ttmd.log" &
for _ in $(seq 100); do [ -S "$TTM_SOCKET" ] && break; sleep 0.05; done
"${dirs[0]}/ttmctl" create "startup" >/dev/null

# shellcheck source=bench/median.sh
source bench/median.sh
perf_ms_faults() { # command... -> "task-clock-ms faults", mean of 200 runs
  perf stat -x, -r 200 -e task-clock,page-faults "$@" 2>&1 >/dev/null |
    awk -F, '$3 ~ /task-clock/ {t=$1} $3 ~ /page-faults/ {f=$1} END {printf "%.3f %d\n", t, f}'
}
instructions() { # command... -> instructions of one run (callgrind)
  valgrind --tool=callgrind --callgrind-out-file=/dev/null "$@" 2>&1 >/dev/null |
    awk '/Collected/ {print $NF}'
}
fdatasync_ms() { # median of $runs fdatasyncs of a 100-byte append
  python3 - "$TETRA_DIR/sync.probe" "$runs" <<'EOF'
import os, sys, time
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
xs = []
for _ in range(int(sys.argv[2])):
    os.write(fd, b"x" * 100)
    t0 = time.perf_counter(); os.fdatasync(fd); xs.append(time.perf_counter() - t0)
xs.sort(); print("%.3f" % (xs[len(xs) // 2] * 1000))
EOF
}

echo "| round | binary | --version CPU ms | faults | \`event\` CPU ms | faults | \`event\` instructions | \`event\` wall ms | /bin/true wall ms | fdatasync ms | event / (true + fdatasync) |"
echo "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for ((r = 1; r <= rounds; r++)); do
  read -r tcpu tfaults < <(perf_ms_faults /bin/true)
  true_ms=$(median_ms /bin/true)
  sync_ms=$(fdatasync_ms)
  echo "| $r | /bin/true | $tcpu | $tfaults | | | $(instructions /bin/true) | | $true_ms | $sync_ms | |"
  for dir in "${dirs[@]}"; do
    read -r cpu faults < <(perf_ms_faults "$dir/ttmctl" --version)
    read -r ecpu efaults < <(perf_ms_faults "$dir/ttmctl" event bench)
    ins=$(instructions "$dir/ttmctl" event bench)
    ev=$(median_ms "$dir/ttmctl" event bench)
    ratio=$(awk -v e="$ev" -v t="$true_ms" -v s="$sync_ms" 'BEGIN {printf "%.2f", e / (t + s)}')
    echo "| $r | $dir | $cpu | $faults | $ecpu | $efaults | $ins | $ev | $true_ms | $sync_ms | $ratio |"
  done
done
