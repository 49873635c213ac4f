#!/usr/bin/env python3
"""The measure/fit evidence on one model: shelves -> measure -> fit at stock's sizes -> assemble -> eval.

Everything through qpatch's library, as the CLI does it:
1. the plans of stock, n-expert-fix, ffn-down-bump and deepseek-v3 at IQ2_XXS, IQ2_M, Q2_K, Q3_K_M,
   Q4_K_M and Q5_K_M; shelves for every type they use and for the measured candidate types;
2. `measure` on the measurement text (a Dask local cluster; on CUDA several workers share the GPU);
3. `fit` at the exact size of each stock quant and at two sizes below stock's smallest, and the greedy
   ΔKLD-per-byte choice at the same budgets, each written as a policy;
4. every quant assembled from the shelves (byte for byte what `qpatch quantize` writes; tests prove it)
   and evaluated with `qpatch eval` on held-out text that neither training nor measuring saw.
Writes results.json (every number) and results.md (tables) into --out.

    python bench/fit_evidence.py --model M.gguf --imatrix M.imatrix.gguf --measure-text calib.txt \\
        --eval-text heldout.txt --dir llama.cpp --backend cuda --workers 4 --out results
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from qpatch.errors import QpatchError
from qpatch.gguf.catalogue import T
from qpatch.job import Job
from qpatch.measure import fit as solver
from qpatch.measure import jobs, policy_file
from qpatch.measure.table import load
from qpatch.policy import loader
from qpatch.progress import Progress
from qpatch.quality import evaluation
from qpatch.quality.evaluation import Settings
from qpatch.shelves import assemble, shelf

POLICIES = ("stock", "n-expert-fix", "ffn-down-bump", "deepseek-v3")
FTYPES = ("IQ2_XXS", "IQ2_M", "Q2_K", "Q3_K_M", "Q4_K_M", "Q5_K_M")
CANDIDATES = ("Q8_0", "Q6_K", "Q5_K", "Q4_K", "IQ4_XS", "Q3_K", "IQ3_S", "IQ3_XXS", "Q2_K", "IQ2_S", "IQ2_XS",
              "IQ2_XXS", "IQ1_M")


class Log(Progress):
    def __init__(self):
        self.t0 = time.perf_counter()

    def note(self, msg):
        if not msg.startswith("["):  # per-job lines: only every 25th
            print(f"[{time.perf_counter() - self.t0:6.1f} s] {msg}", flush=True)
        elif msg.split("/")[0].strip("[").isdigit() and int(msg.split("/")[0].strip("[")) % 25 == 0:
            print(f"[{time.perf_counter() - self.t0:6.1f} s] {msg}", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--imatrix", required=True)
    ap.add_argument("--measure-text", required=True)
    ap.add_argument("--eval-text", required=True)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--backend", default="cpu")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--measure-chunks", type=int, default=16)
    ap.add_argument("--eval-chunks", type=int, default=32)
    ap.add_argument("--groups", default="kind")
    ap.add_argument("--candidates", default=",".join(CANDIDATES), help="the types measured for every group")
    ap.add_argument("--work", default="/tmp/fit-work")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    candidates = tuple(a.candidates.split(","))
    log = Log()
    work, out = Path(a.work), Path(a.out)
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    model, im = Path(a.model), Path(a.imatrix)
    res: dict = {"model": str(model), "settings": vars(a), "timing": {}}

    plans = {}
    for pol in POLICIES:
        for ft in FTYPES:
            p = Job.create(model, ft, policy=pol, imatrix=im).plan()
            if not p.errors:
                plans[pol, ft] = p
    types = sorted(set(shelf.types_for(plans.values())) | {T[t] for t in candidates}, key=lambda t: t.name)
    t0 = time.perf_counter()
    for t in types:  # one at a time: a type that cannot be shelved is reported and left out
        try:
            shelf.make(model, [t], work / "shelves", checkout=a.dir, imatrix=im, groups=a.groups,
                       backend=a.backend, progress=log)
        except QpatchError as e:
            log.note(f"shelf {t.name}: not made: {str(e).splitlines()[0]}")
            res.setdefault("shelf_errors", {})[t.name] = str(e)[:500]
    sset = shelf.load(work / "shelves")
    res["timing"]["shelves_s"] = round(time.perf_counter() - t0, 1)
    res["shelves"] = {t.name: shelf.read_index(s.dir).get("seconds") for t, s in sset.shelves.items()}
    log.note(f"{len(sset.shelves)} shelves in {res['timing']['shelves_s']} s")

    settings = Settings(a.ctx, a.measure_chunks, a.backend, a.threads)
    table_path = work / "table.json"
    t0 = time.perf_counter()
    s = jobs.measure(model, shelves_dir=sset.dir, text=a.measure_text, out=table_path, checkout=a.dir,
                     settings=settings, types=[t for t in candidates if T[t] in sset.shelves], workers=a.workers,
                     progress=log)
    res["timing"].update(measure_wall_s=round(s.wall, 1), measure_jobs=s.jobs,
                         measure_ppl_summed_s=round(s.seconds_ppl, 1),
                         measure_links_s=round(s.seconds_links, 1), measure_slots=s.workers,
                         measure_overhead=round(s.overhead, 3),
                         jobs_per_minute=round(60 * s.jobs / s.wall, 1) if s.wall else None,
                         measure_total_s=round(time.perf_counter() - t0, 1))
    log.note(f"measure: {s.jobs} jobs in {s.wall:.1f} s, overhead {s.overhead:.2f}")
    table = load(table_path)
    (out / "table.json").write_text(table_path.read_text())

    # the quants to compare: every (policy, ftype), assembled; identical mixes evaluated once
    quants, seen = {}, {}
    for (pol, ft), p in plans.items():
        if any(t.type != t.src_type and t.type not in sset.shelves for t in p.tensors):
            log.note(f"{pol} {ft}: a type it needs has no shelf; left out")
            continue
        key = tuple(sorted(p.types().items()))
        if key in seen:
            quants[pol, ft] = {"same_as": seen[key], "bytes": p.total_bytes}
            continue
        seen[key] = f"{pol}-{ft}"
        path = work / "q" / f"{pol}-{ft}.gguf"
        path.parent.mkdir(exist_ok=True)
        assemble.assemble(model, path, shelves_dir=sset.dir, policy=pol, ftype=ft, imatrix=im, force=True)
        quants[pol, ft] = {"path": str(path), "bytes": p.total_bytes}
    stock_sizes = {ft: plans["stock", ft].total_bytes for ft in FTYPES if ("stock", ft) in plans}
    smallest = min(stock_sizes.values())
    rows = solver.items(table)
    lo = sum(min(it.gpu for it in o) for _, o in rows)
    budgets = {f"= stock {ft}": b for ft, b in stock_sizes.items()}
    for i, frac in enumerate((0.93, 0.86), 1):
        budgets[f"{frac:.2f} x stock's smallest"] = max(lo, int(smallest * frac))
    pols = work / "policies"
    pols.mkdir(exist_ok=True)
    loader.use_policies_dir(str(pols))
    fits = {}
    for i, (label, b) in enumerate(budgets.items()):
        for kind in ("fit", "greedy"):
            f = solver.solve(table, size=b) if kind == "fit" else solver.greedy(table, b)
            name = f"{kind}-{i}"
            r = policy_file.write_fit(model, table, f, name=name, budget=b, budget_text=f"{label} ({b:,} bytes)",
                                      out_dir=pols, imatrix=im, force=True, command="bench/fit_evidence.py")
            path = work / "q" / f"{name}.gguf"
            assemble.assemble(model, path, shelves_dir=sset.dir, policy=name, ftype=r.ftype, imatrix=im, force=True)
            fits[name] = {"label": label, "budget": b, "bytes": r.plan_bytes, "dkld_sum": f.dkld_sum,
                          "kld_predicted": r.kld_baseline + f.dkld_sum, "path": str(path), "ftype": r.ftype,
                          "choice": {g: t for g, t in f.choice.items()}}
    (out / "policies").mkdir(exist_ok=True)
    for p in pols.glob("*.py"):
        (out / "policies" / p.name).write_text(p.read_text())

    paths = [q["path"] for q in quants.values() if "path" in q] + [f["path"] for f in fits.values()]
    t0 = time.perf_counter()
    rep = evaluation.evaluate(model, paths, a.eval_text, checkout=a.dir,
                              settings=Settings(a.ctx, a.eval_chunks, a.backend, a.threads), progress=log)
    res["timing"]["eval_s"] = round(time.perf_counter() - t0, 1)
    by_path = {r.model.path: r for r in rep.rows}
    res["base"] = {"ppl": rep.base.ppl, "ppl_unc": rep.base.ppl_unc}

    def stats(path):
        r = by_path[path]
        return {"file_tensor_bytes": r.model.size_bytes, "kld": r.stats.kld_mean, "kld_unc": r.stats.kld_unc,
                "ppl": r.stats.ppl, "same_top": r.stats.same_top}

    res["quants"] = []
    for (pol, ft), q in quants.items():
        src = q if "path" in q else quants[tuple(q["same_as"].split("-", 1))]
        res["quants"].append({"policy": pol, "ftype": ft, "bytes": q["bytes"], "same_as": q.get("same_as"),
                              **stats(src["path"])})
    res["fits"] = []
    for name, f in fits.items():
        res["fits"].append({"name": name, **{k: v for k, v in f.items() if k != "path"}, **stats(f["path"])})
    # the claim: within its budget, each fit beats every stock/policy quant a user could have had instead
    # (every one of size <= the budget: the stock quant whose size set the budget, and all smaller ones)
    for f in res["fits"]:
        rivals = [q for q in res["quants"] if q["bytes"] <= f["budget"]]
        f["rivals"] = len(rivals)
        f["beats_all"] = all(f["kld"] < q["kld"] for q in rivals)
        f["best_rival"] = min(rivals, key=lambda q: q["kld"], default=None)
        f["size_exact"] = f["file_tensor_bytes"] == f["bytes"]
    (out / "results.json").write_text(json.dumps(res, indent=1, default=str))
    (out / "results.md").write_text(markdown(res))
    print(markdown(res))
    return 0


def markdown(res) -> str:
    lines = ["| quant | size (bytes) | mean KLD (held-out) | ± | same top % |", "|---|---|---|---|---|"]
    for q in sorted(res["quants"], key=lambda q: q["bytes"]):
        tag = f" (= {q['same_as']})" if q["same_as"] else ""
        lines.append(f"| {q['policy']} {q['ftype']}{tag} | {q['bytes']:,} | {q['kld']:.5f} | {q['kld_unc']:.5f} | "
                     f"{q['same_top']:.2f} |")
    lines += ["", "| fit | budget | size (bytes, plan = file) | predicted KLD | measured KLD | ± "
              "| best quant within budget | beats all within the budget |", "|---|---|---|---|---|---|---|---|"]
    for f in sorted(res["fits"], key=lambda f: (f["budget"], f["name"])):
        br = f["best_rival"]
        rival = f"{br['policy']} {br['ftype']}: {br['kld']:.5f}" if br else "none"
        lines.append(f"| {f['name']} | {f['label']} | {f['bytes']:,} ({'=' if f['size_exact'] else '≠'}) | "
                     f"{f['kld_predicted']:.5f} | {f['kld']:.5f} | {f['kld_unc']:.5f} | {rival} | "
                     f"{'yes' if f['beats_all'] else 'no'} ({f['rivals']}) |")
    lines += ["", "timing: " + json.dumps(res["timing"])]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
