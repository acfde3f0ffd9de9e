#!/usr/bin/env python3
"""Idle cost of the time rules' timer (SPEC §14) at scale: writes two trees
of N *live* transactions (txn_start, a transition to EXECUTE, no commit) —
one plain, one where each has a --heartbeat (1 day) and a --deadline (30
days ahead), so every one of them is armed in the timer — starts a release
ttmd on each (a first start to rebuild the views, then the measured warm
start), waits for READY=1 and the start-up settling, then samples
/proc/PID/stat utime+stime over an idle window and prints the CPU time and
share of one core, with the time to READY.

Usage: python3 bench/time_idle.py DIR N SECONDS TTMD
  e.g. python3 bench/time_idle.py /tmp/tt 100000 60 target/release/ttmd
"""
import datetime, json, os, shutil, socket, subprocess, sys, time

def write_tree(root, n, timed):
    txns = os.path.join(root, "ttm", "txns")
    os.makedirs(txns, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    ts = now.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    deadline = (now + datetime.timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    for i in range(n):
        tid = f"live-{i:06d}-20261201T000000"
        d = os.path.join(txns, tid)
        os.makedirs(os.path.join(d, "ctx"))
        start = {"ts": ts, "event": "txn_start", "seq": 1, "txn_id": tid,
                 "description": f"live {i}", "target": "@local", "agent": "bench",
                 "module": "ttm", "stage": "NEW", "ctx_digest": ""}
        if timed:
            start["deadline"] = deadline
            start["heartbeat_ms"] = 86_400_000
        lines = [start, {"ts": ts, "event": "stage_transition", "seq": 2,
                         "from": "NEW", "to": "EXECUTE"}]
        with open(os.path.join(d, "events.ndjson"), "w") as f:
            for l in lines:
                f.write(json.dumps(l, separators=(",", ":")) + "\n")

def start(ttmd, root):
    base = os.path.dirname(root)
    path = os.path.join(base, "notify.sock")
    if os.path.exists(path):
        os.remove(path)
    n = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    n.bind(path)
    n.settimeout(600)
    env = dict(os.environ, NOTIFY_SOCKET=path, TTM_LOG="warn")
    t0 = time.perf_counter()
    p = subprocess.Popen([ttmd, "--root", root, "--socket", os.path.join(base, "s.sock")],
                         env=env, stderr=subprocess.DEVNULL)
    while "READY=1" not in n.recv(4096).decode().split("\n"):
        pass
    return p, time.perf_counter() - t0

def cpu(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

def measure(ttmd, root, seconds):
    p, _ = start(ttmd, root)          # first start: rebuilds every state.json
    time.sleep(5)
    p.terminate(); p.wait()
    p, ready = start(ttmd, root)
    time.sleep(10)                    # let start-up work (checkpoint, trim) settle
    c0, t0 = cpu(p.pid), time.perf_counter()
    time.sleep(seconds)
    used, wall = cpu(p.pid) - c0, time.perf_counter() - t0
    p.terminate(); p.wait()
    return ready, used, wall

def main():
    base, n, seconds, ttmd = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    for label, timed in (("no time settings", False), ("heartbeat + deadline each", True)):
        d = os.path.join(base, "timed" if timed else "plain")
        shutil.rmtree(d, ignore_errors=True)
        root = os.path.join(d, "tree")
        write_tree(root, n, timed)
        ready, used, wall = measure(ttmd, root, seconds)
        print(f"{n} live transactions, {label}: READY after {ready:.2f} s; "
              f"idle CPU {used:.2f} s over {wall:.0f} s ({100 * used / wall:.2f}% of a core)")
        shutil.rmtree(d, ignore_errors=True)

if __name__ == "__main__":
    main()
