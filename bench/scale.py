#!/usr/bin/env python3
"""Scale figures on a tree written by bench/gen_tree.py: time from spawning
ttmd to READY=1 (first start, which rebuilds every state.json, then a warm
start), `ttmctl list` (median of 5) and the daemon's idle RSS.

Usage: python3 bench/gen_tree.py /tmp/t/tree 100000 &&
       python3 bench/scale.py /tmp/t/tree target/release/ttmd target/release/ttmctl
"""
import os, socket, subprocess, sys, time
root, ttmd, ttmctl = sys.argv[1], sys.argv[2], sys.argv[3]
sock = os.path.join(os.path.dirname(root), "n.sock")
def start():
    path = os.path.join(os.path.dirname(root), "notify.sock")
    if os.path.exists(path): os.remove(path)
    n = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); n.bind(path); n.settimeout(300)
    env = dict(os.environ, NOTIFY_SOCKET=path, TTM_LOG="warn")
    t0 = time.perf_counter()
    p = subprocess.Popen([ttmd, "--root", root, "--socket", os.path.join(os.path.dirname(root), "s.sock")], env=env, stderr=subprocess.DEVNULL)
    while True:
        msg = n.recv(4096).decode()
        if "READY=1" in msg.split("\n"):
            return p, time.perf_counter() - t0
def rss(pid):
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmRSS"): return l.split()[1]
env = dict(os.environ, TETRA_DIR=root, TTM_SOCKET=os.path.join(os.path.dirname(root), "s.sock"), TTM_NO_AUTOSTART="1")
for label in ("first start (rebuilds every state.json)", "warm start"):
    p, t = start()
    time.sleep(1.5)
    lt = []
    for _ in range(5):
        t0 = time.perf_counter(); subprocess.run([ttmctl, "list"], env=env, stdout=subprocess.DEVNULL, check=True); lt.append(time.perf_counter() - t0)
    lt.sort()
    print(f"{label}: READY after {t:.2f} s; ttmctl list median {lt[2]*1000:.0f} ms; idle RSS {int(rss(p.pid))/1024:.0f} MiB")
    p.terminate(); p.wait()
