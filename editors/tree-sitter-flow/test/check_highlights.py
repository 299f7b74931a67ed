#!/usr/bin/env python3
"""Checks queries/highlights.scm against .flow files.

For every file given:
  * every non-blank character outside comments must be inside some capture
    (no token is left unhighlighted);
  * no two patterns may capture exactly the same node range with different
    names (besides @spell), so the result does not depend on whether an editor
    lets the first (Helix) or the last (Neovim) match win.

Usage: check_highlights.py TREE_SITTER_BIN GRAMMAR_DIR FILE...
Prints one line per file ("ok - highlights: FILE" / "FAIL - highlights: FILE")
and exits 1 on failure.
"""
import os
import re
import subprocess
import sys

CAPTURE = re.compile(r"capture: (?:\d+ - )?([\w.]+), start: \((\d+), (\d+)\), end: \((\d+), (\d+)\)")


def captures(ts, grammar, path):
    out = subprocess.run(
        [ts, "query", "-p", grammar, f"{grammar}/queries/highlights.scm", path],
        check=True, capture_output=True, text=True,
    ).stdout
    return [(m.group(1), (int(m.group(2)), int(m.group(3))), (int(m.group(4)), int(m.group(5))))
            for m in CAPTURE.finditer(out)]


def check(ts, grammar, path):
    caps = captures(ts, grammar, path)
    problems = []
    by_range = {}
    for name, start, end in caps:
        if name == "spell":
            continue
        by_range.setdefault((start, end), set()).add(name)
    for (start, end), names in sorted(by_range.items()):
        if len(names) > 1:
            problems.append(f"{start[0] + 1}:{start[1] + 1} captured as {sorted(names)}")
    # tree-sitter's columns count bytes: coverage is kept per byte.
    lines = open(path, "rb").read().split(b"\n")
    covered = [[False] * (len(line) + 1) for line in lines]
    for name, (sr, sc), (er, ec) in caps:
        for r in range(sr, er + 1):
            if r >= len(lines):
                break
            a = sc if r == sr else 0
            b = ec if r == er else len(lines[r])
            for c in range(a, min(b, len(lines[r]))):
                covered[r][c] = True
    for r, raw in enumerate(lines):
        line = raw.decode("utf-8")
        # byte offset of each character
        starts = []
        offset = 0
        for ch in line:
            starts.append(offset)
            offset += len(ch.encode("utf-8"))
        for c, ch in enumerate(line):
            if not ch.isspace() and not covered[r][starts[c]]:
                j = c
                while j < len(line) and not line[j].isspace() and not covered[r][starts[j]]:
                    j += 1
                problems.append(f"{r + 1}:{c + 1} not highlighted: {line[c:j]!r}")
                break
    return problems


def main():
    ts, grammar, files = sys.argv[1], sys.argv[2], sys.argv[3:]
    failed = 0
    for path in files:
        problems = check(ts, grammar, path)
        if problems:
            failed += 1
            print(f"FAIL - highlights: {os.path.relpath(path)}")
            for p in problems[:20]:
                print(f"    {p}")
        else:
            print(f"ok - highlights: {os.path.relpath(path)}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
