#!/usr/bin/env python3
"""Run the docs' `console` examples and check or rewrite their output, so that the docs cannot go stale.

A block is an example when the line before its ```console fence is `<!-- example: FIXTURE -->`. It runs
in a fresh directory that FIXTURE (below) prepares, one `$ ` command after another (a trailing `\\`
continues a command), in bash, with this checkout's `qpatch` first on PATH and stderr merged into stdout
as a terminal shows them. A command's expected output is the text up to the next `$ ` line:
- a line `...` stands for any number of lines;
- timings (`0.12 s`, `3 ms`) match any number.

    python scripts/doc_examples.py --check     # exit 1 and print a diff for every example that differs (CI)
    python scripts/doc_examples.py             # rewrite the examples' output in place (`make docs`)
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MARK = re.compile(r"^<!-- example: ([a-z0-9-]+) -->\n(`{3,})console\n(.*?)^\2\n", re.M | re.S)
TIMING = re.compile(r"\b\d+(?:\.\d+)? ?(?:s|ms)\b")


def _synth(preset: str, name: str, imatrix: str | None = None) -> list[str]:
    return ["qpatch", "synth", preset, name] + (["--imatrix", imatrix] if imatrix else [])


def _shaped(d: Path) -> None:
    """DeepSeek-V3's real layout at one row per tensor: scripts/policy_docs.py's DSV3."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from policy_docs import DSV3  # noqa: E402

    from qpatch.gguf.synth import write_imatrix, write_model

    write_model(DSV3, d / "DeepSeek-V3-shaped.gguf")
    write_imatrix(DSV3, d / "DeepSeek-V3-shaped.imatrix.gguf")


# What each fixture puts into the example's directory before its first command.
FIXTURES = {
    "empty": [],
    "thin": [_synth("deepseek-v3", "deepseek-v3-thin.gguf", "deepseek-v3-thin.imatrix.gguf")],
    "ds": [_synth("deepseek-v3", "ds.gguf", "ds.imatrix.gguf")],
    "ds-mini": [_synth("deepseek-v3-mini", "ds.gguf", "ds.imatrix.gguf")],
    "ds-dat": [_synth("deepseek-v3", "ds.gguf", "ds.imatrix.dat")],  # the legacy imatrix, which ik reads
    "shaped": [_shaped],
}


def commands(block: str) -> list[tuple[str, list[str]]]:
    """(command, expected output lines) for each `$ ` line of a block."""
    out: list[tuple[str, list[str]]] = []
    lines = block.splitlines()
    i = 0
    while i < len(lines):
        if not lines[i].startswith("$ "):
            raise SystemExit(f"an example's output before its first command: {lines[i]!r}")
        cmd = lines[i][2:]
        while cmd.endswith("\\") and i + 1 < len(lines):
            i += 1
            cmd = cmd + "\n" + lines[i]
        i += 1
        expected = []
        while i < len(lines) and not lines[i].startswith("$ "):
            expected.append(lines[i])
            i += 1
        out.append((cmd, expected))
    return out


def run_block(fixture: str, block: str) -> list[tuple[str, list[str], list[str]]]:
    """(command, expected, actual) for each command of the block, run in a fresh directory."""
    if fixture not in FIXTURES:
        raise SystemExit(f"unknown example fixture {fixture!r} (scripts/doc_examples.py FIXTURES)")
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               PYTHONUNBUFFERED="1", COLUMNS="200", NO_COLOR="1")
    env.pop("QPATCH_POLICIES", None)
    with tempfile.TemporaryDirectory(prefix="qpatch-example-") as tmp:
        d = Path(tmp)
        for step in FIXTURES[fixture]:
            if callable(step):
                step(d)
            else:
                subprocess.run(step, cwd=d, env=env, check=True, capture_output=True)
        results, rc = [], 0
        for cmd, expected in commands(block):  # `$?` is the previous command's status, as in a shell
            r = subprocess.run(["bash", "-c", f"(exit {rc}); {cmd}"], cwd=d, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
            rc = r.returncode
            actual = r.stdout.replace(str(d.resolve()) + "/", "").replace(str(d) + "/", "").splitlines()
            results.append((cmd, expected, actual))
        return results


def _norm(lines: list[str]) -> list[str]:
    return [TIMING.sub("N s", ln).rstrip() for ln in lines]


def matches(expected: list[str], actual: list[str]) -> bool:
    """Expected lines against actual ones, `...` lines standing for any number of lines."""
    parts = [list(g) for g in _split(_norm(expected))]
    act = _norm(actual)
    if len(parts) == 1:
        return parts[0] == act
    head, *middle, tail = parts
    if act[:len(head)] != head or (tail and act[len(act) - len(tail):] != tail) or len(act) < len(head) + len(tail):
        return False
    pos, end = len(head), len(act) - len(tail)
    for seg in middle:  # each in order, somewhere between head and tail
        while pos + len(seg) <= end and act[pos:pos + len(seg)] != seg:
            pos += 1
        if pos + len(seg) > end:
            return False
        pos += len(seg)
    return True


def _split(lines: list[str]):
    cur: list[str] = []
    for ln in lines:
        if ln.strip() == "...":
            yield cur
            cur = []
        else:
            cur.append(ln)
    yield cur


def rewrite(expected: list[str], actual: list[str]) -> list[str]:
    """The actual output, keeping the example's elision: as many lines before and after `...` as it showed."""
    if not any(ln.strip() == "..." for ln in expected):
        return actual
    i = next(k for k, ln in enumerate(expected) if ln.strip() == "...")
    j = max(k for k, ln in enumerate(expected) if ln.strip() == "...")
    n_tail = len(expected) - j - 1
    if i + n_tail >= len(actual):
        return actual
    return actual[:i] + ["..."] + (actual[len(actual) - n_tail:] if n_tail else [])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="print a diff for each example that differs; exit 1 if any")
    ap.add_argument("files", nargs="*", type=Path, help="markdown files (default: README.md and docs/*.md)")
    a = ap.parse_args(argv)
    stale = n = 0
    for doc in [f.resolve() for f in a.files] or DOCS:
        text = doc.read_text()
        pieces, last = [], 0
        for m in MARK.finditer(text):
            n += 1
            fixture, block = m[1], m[3]
            new_lines = []
            for cmd, expected, actual in run_block(fixture, block):
                new_lines += [f"$ {cmd}"] + (expected if matches(expected, actual) else rewrite(expected, actual))
                if not matches(expected, actual):
                    stale += 1
                    line = text.count("\n", 0, m.start()) + 3
                    print(f"{doc.relative_to(ROOT)}:{line}: $ {cmd.splitlines()[0]}")
                    sys.stdout.writelines(difflib.unified_diff([x + "\n" for x in expected], [x + "\n" for x in actual],
                                                               "docs", "actual", n=1))
            pieces.append(text[last:m.start(3)] + "\n".join(new_lines) + "\n")
            last = m.end(3)
        pieces.append(text[last:])
        if not a.check and "".join(pieces) != text:
            doc.write_text("".join(pieces))
    print(f"{n} example(s), {stale} command(s) whose output differs"
          + ("" if a.check or not stale else ": rewritten"), file=sys.stderr)
    return 1 if (stale and a.check) else 0


if __name__ == "__main__":
    sys.exit(main())
