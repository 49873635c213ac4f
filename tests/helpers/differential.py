"""Run the real llama-quantize on a model and compare every tensor's type with qpatch's plan.

What the binary did (exit status, every tensor's type) is kept in a result cache keyed by the
SHA-256 of the binary, the model, the imatrix and the arguments: the binary is deterministic,
and what changes between test runs is the Python side. A new binary or a changed model misses
the cache; QPATCH_TEST_RERUN=1 ignores it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import subprocess
from pathlib import Path

from helpers import plans, stock_binary
from qpatch.gguf.header import read_header

RESULTS = stock_binary.pin_dir() / "results"  # keyed by the binary's hash, so one folder serves every pin

# Real runs of the imatrix checks a dry run skips, the same on both mainline families:
# (id, model, ftype, imatrix: "full" | "none" | ("skip"|"wrong", tensor), options, outcome meant)
IMATRIX_REAL_RUNS = [
    ("imatrix-missing-entry-harmless", "llama-moe8-gqa2-13L", "Q4_K_M", ("skip", "blk.3.ffn_down_exps.weight"), [],
     "ok"),
    ("imatrix-missing-entry-aborts", "llama-moe8-gqa2-13L", "IQ2_XXS", ("skip", "blk.3.ffn_down_exps.weight"), [],
     "fails"),
    ("imatrix-wrong-length-aborts", "llama-gqa4-16L", "Q4_K_M", ("wrong", "blk.0.attn_q.weight"), [], "fails"),
    ("imatrix-wrong-length-token_embd-ignored", "llama-gqa4-16L", "IQ2_M", ("wrong", "token_embd.weight"), [], "ok"),
]


def plan_kwargs(args: list[str]) -> dict:
    """llama-quantize's options (as passed to the binary) -> job.make_plan keyword arguments."""
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
        elif a == "--prune-layers":
            kw["prune_layers"] = next(it)
        else:
            raise ValueError(f"option {a} has no plan equivalent here")
    return kw


def check(binary: Path, model: Path, ftype: str, out_dir: Path, *, imatrix: Path | None = None,
          args: list[str] = (), label: str = "", policy="stock", pin: str = stock_binary.PIN):
    """Assert that llama-quantize and the plan agree: success vs failure, and every tensor's type.

    `policy` (a name or a Policy) is what `binary` was built with: "stock" for an unpatched one.
    Returns the plan, so callers can also check that a case means what it was written for."""
    args = list(args)
    label = label or f"{model.stem} {ftype} imatrix={imatrix.name if imatrix else 'none'}" + (
        f" {' '.join(args)}" if args else "") + (
        "" if policy == "stock" else f" policy={getattr(policy, 'name', policy)}")
    plan = plans.make_plan(model, ftype, policy=policy, imatrix=imatrix, pin=pin, **plan_kwargs(args))
    result = quantize(binary, model, ftype, out_dir, imatrix=imatrix, args=args)
    if plan.errors:
        assert result["returncode"] != 0, (f"{label}: plan predicts failure ({plan.errors[0]}), "
                                           f"but llama-quantize succeeded")
        return plan
    assert result["returncode"] == 0, (f"{label}: plan predicts success, but llama-quantize exited "
                                       f"{result['returncode']}:\n{result['log_tail']}")
    written = result["types"]
    predicted = {t.name: t for t in plan.tensors}
    assert set(written) == set(predicted), f"{label}: tensor names differ: {set(written) ^ set(predicted)}"
    bad = [f"  {n}: expected {t.type.name} (rule: {t.rule}), llama-quantize wrote {written[n]}"
           for n, t in predicted.items() if t.type.name != written[n]]
    assert not bad, f"{label}: {len(bad)} of {len(predicted)} tensors differ:\n" + "\n".join(bad)
    return plan


def quantize(binary: Path, model: Path, ftype: str, out_dir: Path, *, imatrix: Path | None, args: list[str]) -> dict:
    """{returncode, types: tensor -> type name, log_tail} of `llama-quantize [args] MODEL OUT FTYPE 1`."""
    key = hashlib.sha256(json.dumps([_sha256(binary), _sha256(model), imatrix and _sha256(imatrix), ftype,
                                     args]).encode()).hexdigest()
    cached = RESULTS / f"{key}.json"
    if cached.is_file() and not os.environ.get("QPATCH_TEST_RERUN"):
        return json.loads(cached.read_text())
    out = out_dir / "out.gguf"
    cmd = [str(binary), *args, *(["--imatrix", str(imatrix)] if imatrix else []), str(model), str(out), ftype, "1"]
    run = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=300)
    result = {"returncode": run.returncode, "types": {},
              "log_tail": "\n".join((run.stdout + run.stderr).strip().splitlines()[-6:])}
    if run.returncode == 0:
        # qpatch's own header reader: the gguf package does not know every pin's types (Q2_0)
        result["types"] = {t.name: t.type.name for t in read_header(out).tensors}
        out.unlink()
    RESULTS.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(result))
    os.replace(tmp, cached)  # atomic: xdist workers may write the same key
    return result


@functools.lru_cache(maxsize=None)
def _sha256_of(path: str, mtime_ns: int, size: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _sha256(path: Path) -> str:
    st = os.stat(path)
    return _sha256_of(str(path), st.st_mtime_ns, st.st_size)
