#!/usr/bin/env bash
# Issue 20 item 3 (a writer per transaction): ttm-bench's appends/s next to
# the Hello floor, old and new binaries interleaved on the same machine.
#
#   bench/writer_ab.sh [ROUNDS] [BEFORE_DIR] [AFTER_DIR]
#
# BEFORE_DIR holds the ttm-bench (and ttmd) of the commit before the writer
# (default /tmp/writer-before); AFTER_DIR the new ones (default
# target/release). To make BEFORE_DIR, build the old commit in its own
# checkout AND its own target directory (sharing target/ with another
# checkout of the same workspace makes cargo reuse the other's artifacts):
#   git worktree add /tmp/wb 28cd0bd && (cd /tmp/wb && CARGO_TARGET_DIR=/tmp/wb/target \
#     cargo build --release -p ttmd -p ttm-bench) && mkdir -p /tmp/writer-before && \
#     cp /tmp/wb/target/release/{ttmd,ttm-bench} /tmp/writer-before/
# Each ttm-bench run prints its own fdatasync p50 and Hello/s (the floors);
# compare within a run, never across runs (see BENCHMARKS.md).
set -euo pipefail
rounds=${1:-2}
before=${2:-/tmp/writer-before}
after=${3:-target/release}
out=$(mktemp -d)
for r in $(seq 1 "$rounds"); do
    for which in before after; do
        dir=$before
        [ "$which" = after ] && dir=$after
        echo "== round $r: $which ($dir/ttm-bench), load $(cut -d' ' -f1-3 /proc/loadavg)"
        TTM_LOG=warn "$dir/ttm-bench" --runs 3 | tee "$out/$which-$r.md"
    done
done
echo "outputs in $out"
