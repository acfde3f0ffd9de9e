# shellcheck shell=bash
# median_ms COMMAND...: the median wall time in ms of $runs runs of COMMAND
# (its stdout discarded). $EPOCHREALTIME: no clock process of its own to
# measure. Sourced by bench/lifecycle.sh and bench/startup.sh.
median_ms() {
  local i t0 t1 xs=()
  # shellcheck disable=SC2154 # runs: set by the script that sources this
  for ((i = 0; i < runs; i++)); do
    t0=${EPOCHREALTIME/./}; "$@" >/dev/null; t1=${EPOCHREALTIME/./}
    xs+=($((t1 - t0)))
  done
  printf '%s\n' "${xs[@]}" | sort -n | awk '{a[NR]=$1} END {printf "%.3f", a[int((NR+1)/2)]/1000}'
}
