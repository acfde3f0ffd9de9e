#!/usr/bin/env python3
"""Lists Rust functions longer than a limit, longest first.

Usage: scripts/fn_lengths.py [--limit N] [PATH ...]   (default: ttmd/src ttmctl/src core/src, 60)

Relies on rustfmt's layout: a function's closing brace sits alone at the
indentation of its `fn` line. A function may exceed the limit when a comment
in the three lines above it says why, starting with `// Long:`; such
functions are listed with their reason and do not count as failures.
Exit status 1 when an unexplained function exceeds the limit.
"""
import os
import re
import sys

FN = re.compile(r"^(\s*)(?:pub(?:\([^)]*\))?\s+)?(?:async\s+)?(?:const\s+)?(?:unsafe\s+)?fn\s+(\w+)")


def scan(path):
    lines = open(path, encoding="utf-8").read().split("\n")
    in_test = None
    for i, line in enumerate(lines):
        if in_test is None and re.match(r"^(\s*)#\[cfg\(test\)\]", line):
            in_test = len(line) - len(line.lstrip())
            continue
        m = FN.match(line)
        if not m or line.rstrip().endswith(";"):
            continue
        indent = m.group(1)
        if in_test is not None and len(indent) > in_test:
            continue
        end = None
        for j in range(i + 1, len(lines)):
            if lines[j] == indent + "}":
                end = j
                break
        if end is None:
            continue
        reason = None
        for k in range(max(0, i - 4), i):
            if "// Long:" in lines[k]:
                reason = lines[k].split("// Long:", 1)[1].strip()
        yield end - i + 1, m.group(2), i + 1, reason


def main(argv):
    limit = 60
    if len(argv) >= 2 and argv[0] == "--limit":
        limit, argv = int(argv[1]), argv[2:]
    roots = argv or ["ttmd/src", "ttmctl/src", "core/src"]
    found = []
    for root in roots:
        for dirpath, _, names in os.walk(root):
            for name in names:
                if name.endswith(".rs") and name != "tests.rs":
                    p = os.path.join(dirpath, name)
                    for n, fn, line, reason in scan(p):
                        if n > limit:
                            found.append((n, f"{p}:{line}", fn, reason))
    bad = 0
    for n, where, fn, reason in sorted(found, reverse=True):
        print(f"{n:5} {where} {fn}" + (f"  (long: {reason})" if reason else ""))
        bad += reason is None
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
