"""Run ik_llama.cpp's real `llama-quantize --dry-run` and read back every tensor's final type.

ik's dry run loads (and checks) every tensor's data and runs type choice, the imatrix lookup and the
very-low-bit check like a real run, then only sizes the result instead of quantizing and writing it: on
the zoo's thin models (real row lengths, two rows, two stored experts) a case takes a fraction of a
second. It prints one line per tensor, `[ i/ n] NAME - [ne0, ...], type = SRC, converting to TYPE ..
size = A MiB -> B MiB` (or `size = A MB` for a tensor it keeps), with warnings in between.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from helpers import dry_run
from qpatch.gguf.catalogue import load_catalogue

_HEAD = re.compile(r"^\[\s*\d+/\s*\d+\]\s+(\S+) - \[[^\]]*\], type =\s*(\w+),", re.M)
_TO = re.compile(r"converting to (\w+) \.\.")


def written_types(log: str) -> dict[str, str]:
    """name -> qpatch type name, from the per-tensor lines (a chunk runs to the next tensor's line)."""
    names = {load_catalogue("ik_llama").ggml_name(t): t.name for t in load_catalogue("ik_llama").types}
    heads = list(_HEAD.finditer(log))
    out = {}
    for m, nxt in zip(heads, [*heads[1:], None][:len(heads)], strict=True):
        chunk = log[m.end(): nxt.start() if nxt else len(log)]
        to = _TO.search(chunk)
        out[m.group(1)] = names[to.group(1) if to else m.group(2)]
    return out


def run(binary: Path, model: Path, ftype: str, *, imatrix: Path | None = None, args=()) -> dict:
    cmd = [str(binary), "--dry-run", *args, *(["--imatrix", str(imatrix)] if imatrix else []), str(model), ftype, "2"]
    r = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=600)
    log = r.stdout + r.stderr
    return {"returncode": r.returncode, "types": written_types(log),
            "log_tail": "\n".join(log.strip().splitlines()[-6:])}


def check(binary: Path, model: Path, ftype: str, *, pin: str, imatrix: Path | None = None, args=(),
          policy="stock", plan_kwargs: dict | None = None):
    """dry_run.check with this family's dry run: the plan and the binary agree; returns the plan."""
    return dry_run.check(binary, model, ftype, pin=pin, imatrix=imatrix, args=args, policy=policy,
                         plan_kwargs=plan_kwargs, runner=run)
