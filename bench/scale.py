#!/usr/bin/env python3
"""Scale figures on a tree written by bench/gen_tree.py, each next to its
floor measured in the same run: time from spawning ttmd to READY=1 (first
start, which rebuilds every state.json, then a warm start; floor: ttmd on
an empty tree), `ttmctl list` (median of 5; floor: `ttmctl list` of an
empty module, one connect and one RPC) and `ttmctl --json list`, and the
daemon's RSS right after READY and after those lists.

Usage: python3 bench/gen_tree.py /tmp/t/tree 100000 &&
       python3 bench/scale.py /tmp/t/tree target/release/ttmd target/release/ttmctl
"""
import os, shutil, socket, subprocess, sys, tempfile, time
root, ttmd, ttmctl = sys.argv[1], sys.argv[2], sys.argv[3]
base = os.path.dirname(os.path.abspath(root))
sock = os.path.join(base, "s.sock")

def start(tree):
    path = os.path.join(base, "notify.sock")
    if os.path.exists(path): os.remove(path)
    n = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); n.bind(path); n.settimeout(300)
    env = dict(os.environ, NOTIFY_SOCKET=path, TTM_LOG="warn")
    t0 = time.perf_counter()
    p = subprocess.Popen([ttmd, "--root", tree, "--socket", sock], env=env, stderr=subprocess.DEVNULL)
    while True:
        msg = n.recv(4096).decode()
        if "READY=1" in msg.split("\n"):
            return p, time.perf_counter() - t0

def rss(pid):
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmRSS"): return int(l.split()[1]) / 1024

def cpu_ms(pid):
    # utime + stime, in clock ticks
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) * 1000 / os.sysconf("SC_CLK_TCK")

def median_ms(args, env, n=5, daemon=None):
    """Median wall ms of n runs; with daemon, also the median CPU ms the
    daemon and ttmctl spent per run (less sensitive to a loaded machine)."""
    times, dcpu, ccpu = [], [], []
    for _ in range(n):
        d0, c0 = daemon and cpu_ms(daemon), os.times()
        t0 = time.perf_counter()
        subprocess.run([ttmctl] + args, env=env, stdout=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - t0)
        c1 = os.times()
        ccpu.append((c1.children_user + c1.children_system - c0.children_user - c0.children_system) * 1000)
        if daemon: dcpu.append(cpu_ms(daemon) - d0)
    med = lambda v: sorted(v)[n // 2]
    return (med(times) * 1000, med(dcpu), med(ccpu)) if daemon else med(times) * 1000

env = dict(os.environ, TETRA_DIR=root, TTM_SOCKET=sock, TTM_NO_AUTOSTART="1")
empty = tempfile.mkdtemp(dir=base)
p, floor_start = start(empty)
p.terminate(); p.wait(); shutil.rmtree(empty)
for label in ("first start (rebuilds every state.json)", "warm start"):
    p, t = start(root)
    time.sleep(1.5)
    ready_rss = rss(p.pid)
    floor = median_ms(["-m", "nothing-here", "list"], env)
    table, dcpu, ccpu = median_ms(["list"], env, daemon=p.pid)
    after_rss = rss(p.pid)
    js = median_ms(["--json", "list"], env)
    print(f"{label}: READY after {t:.2f} s (empty tree {floor_start:.3f} s, "
          f"{t / floor_start:.0f}x); ttmctl list median {table:.0f} ms, --json {js:.0f} ms "
          f"(empty module {floor:.0f} ms: {table / floor:.1f}x, {js / floor:.1f}x; CPU per list: "
          f"ttmd {dcpu:.0f} ms, ttmctl {ccpu:.0f} ms); "
          f"RSS after READY {ready_rss:.0f} MiB, after 5 lists {after_rss:.0f} MiB "
          f"({after_rss / ready_rss:.2f}x), after 5 more --json {rss(p.pid):.0f} MiB")
    p.terminate(); p.wait()
