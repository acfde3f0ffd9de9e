#!/usr/bin/env python3
"""Writes a tree of N finished transactions directly (not through ttmd), in
the layout ttmd writes, for scale measurements: each with its two ctx files,
a three-line log (txn_start, a transition, txn_commit) and no state.json,
which ttmd rebuilds at its first start (run it twice to time a warm start).

Usage: python3 bench/gen_tree.py ROOT N
"""
import hashlib, json, os, sys

def main():
    root, n = sys.argv[1], int(sys.argv[2])
    txns = os.path.join(root, "ttm", "txns")
    os.makedirs(txns, exist_ok=True)
    policy = b"# Policy\n\nmodule: ttm\n"
    for i in range(n):
        tid = f"gen-{i:06d}-20261126T000000"
        d = os.path.join(txns, tid)
        os.makedirs(os.path.join(d, "ctx"))
        os.mkdir(os.path.join(d, "build"))
        os.mkdir(os.path.join(d, "artifacts"))
        request = f"# Request\n\ndescription: generated {i}\ntarget: @local\nagent: bench\n".encode()
        for name, body in (("000_policy.md", policy), ("010_request.md", request)):
            with open(os.path.join(d, "ctx", name), "wb") as f:
                f.write(body)
        entries = sorted((name, len(body), hashlib.sha256(body).hexdigest())
                         for name, body in (("000_policy.md", policy), ("010_request.md", request)))
        h = hashlib.sha256()
        for name, size, sha in entries:
            h.update(f"{name}\0{size}\0{sha}\n".encode())
        ts = "2026-11-26T00:00:00.000Z"
        lines = [
            {"ts": ts, "event": "txn_start", "seq": 1, "txn_id": tid, "description": f"generated {i}",
             "target": "@local", "agent": "bench", "module": "ttm", "stage": "NEW", "ctx_digest": h.hexdigest()},
            {"ts": ts, "event": "stage_transition", "seq": 2, "from": "NEW", "to": "EXECUTE"},
            {"ts": ts, "event": "txn_commit", "seq": 3, "from": "EXECUTE", "duration_ms": 1000},
        ]
        with open(os.path.join(d, "events.ndjson"), "w") as f:
            for l in lines:
                f.write(json.dumps(l, separators=(",", ":"), ensure_ascii=False) + "\n")

if __name__ == "__main__":
    main()
