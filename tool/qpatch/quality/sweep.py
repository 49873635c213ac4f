"""`qpatch sweep`: every (policy, ftype) of one model: apply, build, quantize, verify, eval.

Results are kept in `<out>/results.json`, keyed by the content of everything that decides a
result: the model, the policy (its rendered C++ for this pin), the pin, the ftype, the imatrix,
the text, the llama-perplexity settings and version. A re-run measures only what is missing or
failed; a job that fails is reported and the others go on. Jobs run grouped by policy, so each
policy costs one `apply` and one incremental build; the policy applied before the sweep is
applied again at the end.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from qpatch.build import cmake
from qpatch.checkout import apply as apply_mod
from qpatch.checkout.repo import Checkout
from qpatch.codegen import render
from qpatch.errors import EvalError, QpatchError
from qpatch.families.pins import family_of
from qpatch.policy import loader
from qpatch.progress import SILENT, Progress
from qpatch.quality.content import content_hash, file_hash, text_hash
from qpatch.quality.evaluation import Evaluator, Settings, _check_text
from qpatch.quantize import runner

RESULTS = "results.json"


@dataclass(frozen=True)
class Cell:
    """One (policy, ftype) of a sweep's grid."""

    policy: str
    ftype: str

    @property
    def name(self) -> str:
        return f"{self.policy}-{self.ftype}"


@dataclass(frozen=True)
class SweepResult:
    base: dict
    rows: list[dict]  # one per job, in the order asked
    measured: int
    cached: int
    failed: int
    seconds: float
    results_file: Path


def _key(parts: dict) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


def _load(path: Path) -> dict:
    try:
        return json.loads(path.read_text())["results"]
    except (OSError, ValueError, KeyError):
        return {}


def _save(path: Path, results: dict):
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"results": results}, indent=1, sort_keys=True))
    os.replace(tmp, path)


def sweep(model, policies, ftypes, *, text, imatrix=None, checkout, out_dir, settings: Settings = Settings(),
          keep_quants: bool = True, progress: Progress = SILENT) -> SweepResult:
    t0 = time.perf_counter()
    model, text = Path(model), _check_text(text)
    if not model.is_file():
        raise EvalError(f"model {model} does not exist")
    if imatrix is not None and not Path(imatrix).is_file():
        raise EvalError(f"imatrix {imatrix} does not exist")
    co = Checkout(checkout)
    pin = co.pin_name
    cat = family_of(pin).catalogue
    ftypes = [cat.parse_ftype(f).name for f in ftypes]  # unknown ftypes fail here, before any work
    pols = {p: loader.load(p) for p in policies}  # so do unknown or broken policies
    if not policies or not ftypes:
        raise EvalError("a sweep needs at least one policy and one ftype")
    jobs = [Cell(p, f) for p in policies for f in ftypes]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    store_path = out_dir / RESULTS
    store = _load(store_path)

    ev = Evaluator(co.path, settings, progress=progress)
    base = ev.base(model, text)
    common = {"model": content_hash(model), "pin": pin, "imatrix": file_hash(imatrix) if imatrix else None,
              "text": text_hash(text), **settings.key(), "tool": ev.identity}
    keys = {j: _key({**common, "ftype": j.ftype, "policy": hashlib.sha256(
        render.render(pols[j.policy], pin).encode()).hexdigest()}) for j in jobs}
    todo = [j for j in jobs if store.get(keys[j], {}).get("status") != "ok"]
    progress.note(f"{len(jobs)} jobs: {len(jobs) - len(todo)} already measured, {len(todo)} to run")
    before = co.status().policy
    failed = 0
    try:
        for policy in policies:
            group = [j for j in todo if j.policy == policy]
            if not group:
                continue
            try:
                progress.note(f"apply {policy} and build llama-quantize ({settings.backend})")
                apply_mod.apply(policy, co.path)
                cmake.build(co.path, settings.backend, targets=["llama-quantize"], progress=progress)
            except QpatchError as e:
                for j in group:
                    store[keys[j]] = _failure(j, "apply/build", e)
                failed += len(group)
                _save(store_path, store)
                continue
            for j in group:
                row = _run_job(j, ev, base, co.path, model, imatrix, out_dir, settings, keep_quants, progress)
                failed += row["status"] != "ok"
                store[keys[j]] = row
                _save(store_path, store)
    finally:
        if before and before != co.status().policy:
            progress.note(f"re-applying {before}, the policy applied before the sweep (rebuild before quantizing)")
            apply_mod.apply(before, co.path)
    rows = [{**store[keys[j]], "key": keys[j]} for j in jobs]
    b = base.model
    base_row = {"name": Path(b.path).name, "path": b.path, "size_bytes": b.size_bytes, "params": b.params,
                "bpw": round(b.bpw, 4), "ftype": b.ftype, "ppl": base.ppl, "ppl_unc": base.ppl_unc}
    return SweepResult(base_row, rows, len(todo) - failed, len(jobs) - len(todo), failed,
                       time.perf_counter() - t0, store_path)


def _failure(job: Cell, step: str, e: Exception) -> dict:
    return {"name": job.name, "policy": job.policy, "ftype": job.ftype, "status": f"failed ({step})",
            "error": str(e)}


def _run_job(job: Cell, ev: Evaluator, base, checkout: Path, model: Path, imatrix, out_dir: Path,
             settings: Settings, keep: bool, progress: Progress) -> dict:
    quant = out_dir / f"{model.stem}-{job.name}.gguf"
    step = "quantize"
    try:
        progress.note(f"{job.name}: quantize + verify")
        t = time.perf_counter()
        r, _ = runner.quantize(checkout, model, quant, job.ftype, policy=job.policy, imatrix=imatrix,
                                 backend=settings.backend)
        quantize_s = time.perf_counter() - t
        if not r.ok:
            raise EvalError(f"verify: {len(r.mismatches)} tensor(s) differ from the plan "
                            f"(first: {r.mismatches[0].name if r.mismatches else r.missing or r.extra})")
        step = "eval"
        t = time.perf_counter()
        row = ev.quant(base, quant, out_dir)
        d = row.as_dict()
        d.update(name=job.name, policy=job.policy, ftype=job.ftype, status="ok",
                 quantize_s=round(quantize_s, 2), eval_s=round(time.perf_counter() - t, 2),
                 verified=len(r.plan.tensors))
        return d
    except QpatchError as e:
        progress.note(f"{job.name}: failed ({step}): {str(e).splitlines()[0]}")
        return _failure(job, step, e)
    finally:
        if not keep and quant.exists():
            quant.unlink()
