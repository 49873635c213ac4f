"""Run a pin's real `llama-quantize --dry-run` and read back every tensor's final type.

The dry run prints one line per tensor (`[ i/ n] NAME - [ne0, ...], type = SRC, size = A -> B (TYPE)`,
or `size = A` for a tensor kept as it is) and reads no tensor data: milliseconds per case. It does
not reach the quantize loop's imatrix lookup and only warns where a real run aborts for a missing
imatrix (`dry_run_ok` says which predicted errors it skips); real runs prove those paths.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from helpers import plans

_LINE = re.compile(r"^\[\s*\d+/\s*\d+\]\s+(\S+)\s+- \[[^\]]*\], type =\s*(\w+), size = [^(\n]*(?:\((\w+)\))?\s*$",
                   re.M)


def run(binary: Path, model: Path, ftype: str, *, imatrix: Path | None = None, args=()) -> dict:
    """{returncode, types: name -> TYPE name (upper case, as qpatch's T), log_tail}."""
    cmd = [str(binary), "--dry-run", *args, *(["--imatrix", str(imatrix)] if imatrix else []), str(model), ftype, "1"]
    r = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=600)
    log = r.stdout + r.stderr
    types = {m.group(1): (m.group(3) or m.group(2)).upper() for m in _LINE.finditer(log)}
    return {"returncode": r.returncode, "types": types, "log_tail": "\n".join(log.strip().splitlines()[-6:])}


def dry_run_ok(plan) -> bool:
    """Whether `llama-quantize --dry-run` completes on this job: every error the plan predicts is one only a real
    run reaches (Plan.real_run_only), which is true of every family that has --dry-run."""
    return all(e in plan.real_run_only for e in plan.errors)


def check(binary: Path, model: Path, ftype: str, *, pin: str, imatrix: Path | None = None, args=(),
          policy="stock", plan_kwargs: dict | None = None, runner=None):
    """Assert that the dry run and the plan agree on success and on every tensor's type; returns the plan.
    `runner` reads another family's dry run (the same arguments and result as `run`)."""
    label = f"{model.stem} {ftype} imatrix={imatrix.name if imatrix else 'none'} {' '.join(args)} policy=" + (
        getattr(policy, "name", policy))
    plan = plans.make_plan(model, ftype, policy=policy, imatrix=imatrix, pin=pin, **(plan_kwargs or {}))
    result = (runner or run)(binary, model, ftype, imatrix=imatrix, args=args)
    if not dry_run_ok(plan):
        assert result["returncode"] != 0, f"{label}: plan predicts failure ({plan.errors[0]}), the dry run succeeded"
        return plan
    assert result["returncode"] == 0, (f"{label}: plan predicts a dry run succeeds, llama-quantize exited "
                                       f"{result['returncode']}:\n{result['log_tail']}")
    written, predicted = result["types"], {t.name: t.type.name for t in plan.tensors}
    assert set(written) == set(predicted), f"{label}: tensor names differ: {sorted(set(written) ^ set(predicted))[:6]}"
    bad = [f"  {t.name}: expected {t.type.name} (rule: {t.rule}), llama-quantize chose {written[t.name]}"
           for t in plan.tensors if t.type.name != written[t.name]]
    assert not bad, f"{label}: {len(bad)} of {len(predicted)} tensors differ:\n" + "\n".join(bad[:20])
    return plan
