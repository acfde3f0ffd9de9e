#!/usr/bin/env bash
# Full lifecycle (create, 2 ctx adds, 4 transitions, commit), timed three
# ways in one run on one machine: the bash+jq baseline (bench/
# baseline_bash_jq.sh), the bash shims (ttmctl/shell/ttm.sh) and ttmctl
# directly; plus the floors /bin/true and one `ttmctl event`. Prints medians
# of RUNS runs (default 20) and the ratios against the baseline.
#
# Usage: cargo build --release && bench/lifecycle.sh [RUNS]
# (TTM_BIN_DIR and TTM_SHELL_DIR time other binaries and shims, e.g. a
# build kept from before a change.)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-20}
bin=${TTM_BIN_DIR:-$PWD/target/release}
shell=${TTM_SHELL_DIR:-$PWD/ttmctl/shell}
tmp=$(mktemp -d)
trap '"$bin/ttmctl" --socket "$tmp/s.sock" daemon stop >/dev/null 2>&1 || true; rm -rf "$tmp"' EXIT
export TETRA_DIR=$tmp/tree TTM_SOCKET=$tmp/s.sock TTM_NO_AUTOSTART=1 TTMCTL=$bin/ttmctl
"$bin/ttmd" --root "$TETRA_DIR" --socket "$TTM_SOCKET" 2>"$tmp/ttmd.log" &
for _ in $(seq 100); do [ -S "$TTM_SOCKET" ] && break; sleep 0.05; done
printf 'app' > "$tmp/app.tar.gz"; printf 'cfg' > "$tmp/config.yaml"

# shellcheck source=bench/baseline_bash_jq.sh
source bench/baseline_bash_jq.sh
# shellcheck source=ttmctl/shell/ttm.sh
source "$shell/ttm.sh"

ctl_lifecycle() {
  local id
  id=$("$bin/ttmctl" create "Deploy API v2.1.0")
  "$bin/ttmctl" ctx add "$tmp/app.tar.gz" artifact >/dev/null
  "$bin/ttmctl" ctx add "$tmp/config.yaml" config >/dev/null
  "$bin/ttmctl" transition SELECT
  "$bin/ttmctl" transition ASSEMBLE
  "$bin/ttmctl" transition EXECUTE
  "$bin/ttmctl" transition VALIDATE
  "$bin/ttmctl" commit
}
shim_lifecycle() {
  local id
  id=$(txn_create "Deploy API v2.1.0")
  txn_add_ctx "$tmp/app.tar.gz" artifact >/dev/null
  txn_add_ctx "$tmp/config.yaml" config >/dev/null
  txn_transition SELECT >/dev/null
  txn_transition ASSEMBLE >/dev/null
  txn_transition EXECUTE >/dev/null
  txn_transition VALIDATE >/dev/null
  txn_commit >/dev/null
}

# shellcheck source=bench/median.sh
source bench/median.sh

base=$(median_ms bl_lifecycle "$tmp/baseline" "$tmp/app.tar.gz" "$tmp/config.yaml")
shim=$(median_ms shim_lifecycle)
ctl=$(median_ms ctl_lifecycle)
true_ms=$(median_ms /bin/true)
"$bin/ttmctl" create "events" >/dev/null
event_ms=$(median_ms "$bin/ttmctl" event bench)
echo "| what | median ms | vs bash+jq |"
echo "|---|---:|---:|"
echo "| lifecycle, bash+jq baseline | $base | 1.0x |"
awk -v b="$base" -v s="$shim" -v c="$ctl" 'BEGIN {
  printf "| lifecycle, shims (ttm.sh) | %s | %.1fx faster |\n", s, b / s
  printf "| lifecycle, ttmctl | %s | %.1fx faster |\n", c, b / c }'
echo "| /bin/true (spawn floor, measured like the rest) | $true_ms | |"
echo "| one ttmctl event | $event_ms | |"
