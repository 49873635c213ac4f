"""Run the real llama-quantize on a model and compare every tensor's type with qpatch's plan."""

from __future__ import annotations

import subprocess
from pathlib import Path

from gguf import GGMLQuantizationType, GGUFReader

from qpatch import api


def plan_kwargs(args: list[str]) -> dict:
    """llama-quantize's options (as passed to the binary) -> api.make_plan keyword arguments."""
    kw: dict = {"tensor_types": []}
    it = iter(args)
    for a in it:
        if a == "--pure":
            kw["pure"] = True
        elif a == "--leave-output-tensor":
            kw["leave_output_tensor"] = True
        elif a == "--output-tensor-type":
            kw["output_tensor_type"] = next(it)
        elif a == "--token-embedding-type":
            kw["token_embedding_type"] = next(it)
        elif a == "--tensor-type":
            kw["tensor_types"].append(next(it))
        else:
            raise ValueError(f"option {a} has no plan equivalent here")
    return kw


def check(binary: Path, model: Path, ftype: str, out_dir: Path, *, imatrix: Path | None = None,
          args: list[str] = (), label: str = ""):
    """Assert that llama-quantize and the plan agree: success vs failure, and every tensor's type.

    Returns the plan, so callers can also check that a case means what it was written for."""
    args = list(args)
    label = label or f"{model.stem} {ftype} imatrix={imatrix.name if imatrix else 'none'}" + (
        f" {' '.join(args)}" if args else "")
    plan = api.make_plan(model, ftype, policy="stock", imatrix=imatrix, **plan_kwargs(args))
    out = out_dir / "out.gguf"
    cmd = [str(binary), *args, *(["--imatrix", str(imatrix)] if imatrix else []), str(model), str(out), ftype, "1"]
    run = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=300)
    log_tail = "\n".join((run.stdout + run.stderr).strip().splitlines()[-6:])
    if plan.errors:
        assert run.returncode != 0, (f"{label}: plan predicts failure ({plan.errors[0]}), "
                                     f"but llama-quantize succeeded")
        return plan
    assert run.returncode == 0, (f"{label}: plan predicts success, but llama-quantize exited {run.returncode}:\n"
                                 f"{log_tail}")
    written = {t.name: GGMLQuantizationType(int(t.tensor_type)).name for t in GGUFReader(out).tensors}
    out.unlink()
    predicted = {t.name: t for t in plan.tensors}
    assert set(written) == set(predicted), f"{label}: tensor names differ: {set(written) ^ set(predicted)}"
    bad = [f"  {n}: expected {t.type.name} (rule: {t.rule}), llama-quantize wrote {written[n]}"
           for n, t in predicted.items() if t.type.name != written[n]]
    assert not bad, f"{label}: {len(bad)} of {len(predicted)} tensors differ:\n" + "\n".join(bad)
    return plan
