#!/usr/bin/env python3
"""Costs that must not grow with what is already there (issue #8), each
next to its small case measured in the same run:

- `ttmctl ctx add` on a transaction that already holds 1,000 ctx files,
  against one that holds none;
- `ttmctl events --from N` reading the last 10 lines of a 1,000,000-line log,
  against the same on a 20-line log.

The 1,000,000-line log is written directly (not through ttmd), in the
format ttmd writes. Medians of RUNS runs (default 30).

Usage: cargo build --release &&
       python3 bench/flat_costs.py target/release/ttmd target/release/ttmctl [RUNS]
"""
import json, os, statistics, subprocess, sys, tempfile, time

ttmd, ttmctl = sys.argv[1], sys.argv[2]
runs = int(sys.argv[3]) if len(sys.argv) > 3 else 30
tmp = tempfile.mkdtemp()
root, sock = os.path.join(tmp, "tree"), os.path.join(tmp, "s.sock")
env = dict(os.environ, TETRA_DIR=root, TTM_SOCKET=sock, TTM_NO_AUTOSTART="1")


def write_log(tid, lines):
    d = os.path.join(root, "ttm", "txns", tid)
    for sub in ("ctx", "build", "artifacts"):
        os.makedirs(os.path.join(d, sub))
    ts = "2026-11-26T00:00:00.000Z"
    with open(os.path.join(d, "events.ndjson"), "w") as f:
        f.write(json.dumps({"ts": ts, "event": "txn_start", "seq": 1, "txn_id": tid,
                            "description": "long log", "target": "@local", "agent": "bench",
                            "module": "ttm", "stage": "NEW"}, separators=(",", ":")) + "\n")
        chunk = []
        for seq in range(2, lines + 1):
            chunk.append('{"ts":"%s","event":"progress","seq":%d,"data":{"pct":%d}}\n' % (ts, seq, seq % 100))
            if len(chunk) == 10000:
                f.write("".join(chunk)); chunk = []
        f.write("".join(chunk))


def ctl(*args):
    return subprocess.run([ttmctl, *args], env=env, check=True, capture_output=True, text=True).stdout.strip()


def median_ms(cmd):
    xs = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
        xs.append((time.perf_counter() - t) * 1000)
    return statistics.median(xs)


long_id, short_id = "long-log-20261126T000000", "short-log-20261126T000000"
write_log(long_id, 1_000_000)
write_log(short_id, 20)
daemon = subprocess.Popen([ttmd, "--root", root, "--socket", sock], env=dict(env, TTM_LOG="warn"),
                          stderr=subprocess.DEVNULL)
try:
    for _ in range(600):
        if os.path.exists(sock):
            break
        time.sleep(0.05)
    empty = ctl("create", "no ctx yet", "--no-activate")
    full = ctl("create", "a thousand ctx files", "--no-activate")
    src = os.path.join(tmp, "evidence.txt")
    with open(src, "w") as f:
        f.write("evidence\n")
    for _ in range(1000):
        ctl("ctx", "add", src, "x", "-t", full)
    # Warm both (the first add after a load scans ctx/ once).
    for t in (empty, full):
        ctl("ctx", "add", src, "warm", "-t", t)
    add_empty = median_ms([ttmctl, "ctx", "add", src, "e", "-t", empty])
    add_full = median_ms([ttmctl, "ctx", "add", src, "f", "-t", full])
    ev_long = median_ms([ttmctl, "events", "-t", long_id, "--from", "999991"])
    ev_short = median_ms([ttmctl, "events", "-t", short_id, "--from", "11"])
    print("| figure | small case | large case | large / small |")
    print("|---|---:|---:|---:|")
    print(f"| `ctx add` (ms): 0 vs 1,000 files present | {add_empty:.2f} | {add_full:.2f} | {add_full / add_empty:.2f} |")
    print(f"| `events --from` last 10 lines (ms): 20- vs 1,000,000-line log | {ev_short:.2f} | {ev_long:.2f} | {ev_long / ev_short:.2f} |")
finally:
    daemon.terminate()
    daemon.wait()
    subprocess.run(["rm", "-rf", tmp])
