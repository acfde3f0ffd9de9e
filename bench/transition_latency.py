#!/usr/bin/env python3
"""Wall time of one `ttmctl transition` process, median of 20 runs, next to
`/bin/true` (the process-spawn floor) measured in the same run.

Usage: TETRA_DIR=$(mktemp -d) python3 bench/transition_latency.py target/release/ttmctl
(ttmctl autostarts ttmd on first use; stop it afterwards.)
"""
import subprocess, time, statistics, os, sys
C = sys.argv[1]
ids = [subprocess.run([C, "create", f"bench {i}", "--no-activate"], capture_output=True, text=True, check=True).stdout.strip() for i in range(20)]
def t(cmd):
    s = time.perf_counter(); subprocess.run(cmd, check=True); return (time.perf_counter() - s) * 1000
tr = [t([C, "transition", "SELECT", "-t", i]) for i in ids]
tru = [t(["/bin/true"]) for _ in range(20)]
print(f"ttmctl transition: median {statistics.median(tr):.2f} ms (min {min(tr):.2f}, max {max(tr):.2f}); /bin/true median {statistics.median(tru):.2f} ms")
