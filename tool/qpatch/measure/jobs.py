"""`qpatch measure`: one llama-perplexity KLD run per (group, type), as jobs on a Dask cluster.

The client computes the base model's logits once (qpatch eval's cache), lays out the table, and submits
every job not yet in it. A job links its mix from the shelves (baseline everywhere, the group at the type:
links only, unless the measurement's groups cut through a shard), runs the pin's llama-perplexity against
the base logits, removes its links and returns the statistics. Jobs are idempotent and keyed by content:
if a worker dies, Dask runs its job again elsewhere; the table is saved after every finished job, so an
interrupted measure resumes with what is missing. A shared filesystem is assumed (shelves, logits, the
binary and the work directory at the same paths on every worker).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from qpatch.errors import EvalError, JobsFailed, ShelfError, UsageError
from qpatch.gguf.catalogue import T
from qpatch.gguf.header import read_layout
from qpatch.gguf.model_facts import read_model
from qpatch.measure.table import FORMAT, Table, check_same, load
from qpatch.progress import SILENT, Progress
from qpatch.quality import perplexity
from qpatch.quality.content import content_hash, file_hash
from qpatch.quality.evaluation import Evaluator, Settings
from qpatch.shelves import assemble, shelf
from qpatch.shelves.groups import make_groups, parse_ties


@dataclass(frozen=True)
class JobSpec:
    """Everything a worker needs (plain data: it travels to the worker by pickle)."""

    key: str
    group: str  # "*": the baseline run
    tensors: tuple[str, ...]
    type: str
    baseline: str
    shelves: str
    work: str
    binary: str
    logits: str
    args: tuple[str, ...] = field(default=())


def run_job(spec: JobSpec) -> dict:
    """Link the mix, run llama-perplexity --kl-divergence, clean up; the statistics and where time went."""
    t0 = time.perf_counter()
    sset = shelf.load(spec.shelves)
    base, here = sset.shelves[T[spec.baseline]], sset.shelves[T[spec.type]]
    types = {n: base.tensors[n].type for n in sset.order}
    types.update({n: here.tensors[n].type for n in spec.tensors})
    kv = [(k, raw) for k, raw in read_layout(base.shard_path(0)).kv if not k.startswith("split.")]
    d = Path(spec.work) / spec.key
    shutil.rmtree(d, ignore_errors=True)  # a run of this job on a worker that died
    d.mkdir(parents=True)
    try:
        mix = assemble.write_mix(sset, types, d / "mix.gguf", kv=kv, source={}, links=True,
                                 prefer=(here.type, base.type))
        t1 = time.perf_counter()
        log = d / "kld.log"
        out = perplexity.run(Path(spec.binary), ["-m", str(mix.path), "--kl-divergence-base", spec.logits,
                                                 "--kl-divergence", *spec.args], log,
                             label=f"KLD {spec.group}@{spec.type}", model=mix.path)
        stats = perplexity.parse_kld(out, log).as_dict()
        t2 = time.perf_counter()
    finally:
        shutil.rmtree(d, ignore_errors=True)
    return {**stats, "seconds": round(t2 - t1, 3), "seconds_links": round(t1 - t0, 3), "linked": mix.linked,
            "written": mix.written}


# ------------------------------------------------------------------------------------------- the table


def new_table(sset, facts, *, model, text, settings: Settings, baseline: T, groups_spec, ties,
              types) -> Table:
    """Every (group, type) to measure: a type whose shelf gives the group the same tensors as the baseline,
    or as a type listed before it, is no option of its own."""
    if baseline not in sset.shelves:
        raise ShelfError(f"no {baseline.name} shelf in {sset.dir} for the baseline",
                         hint=f"shelve it: qpatch shelves MODEL --types {baseline.name.lower()} --out {sset.dir}")
    wanted = [t for t in sorted(sset.shelves, key=lambda t: t.name) if t != baseline]
    if types:
        lacking = [t for t in types if t not in sset.shelves]
        if lacking:
            raise ShelfError(f"no shelf in {sset.dir} for {', '.join(t.name for t in lacking)}",
                             hint=f"qpatch shelves MODEL --types {','.join(t.name.lower() for t in lacking)} "
                                  f"--out {sset.dir}")
        wanted = [t for t in wanted if t in types]
    spec = groups_spec or sset.manifest["groups"]["spec"]
    ties = parse_ties(ties) if ties else tuple(tuple(t) for t in sset.manifest["groups"]["ties"])
    base = sset.shelves[baseline]
    rows = []
    for g in make_groups(facts, spec, ties):
        def option(sh):
            return {"bytes": sum(sh.tensors[n].nbytes for n in g.tensors),
                    "types": dict(sorted(Counter(sh.tensors[n].type.name for n in g.tensors).items()))}
        seen = {tuple(base.tensors[n].type for n in g.tensors)}
        opts = {baseline.name: {**option(base), "dkld": 0.0, "dkld_unc": 0.0}}
        for t in wanted:
            sig = tuple(sset.shelves[t].tensors[n].type for n in g.tensors)
            if sig in seen:
                continue
            seen.add(sig)
            opts[t.name] = {**option(sset.shelves[t]), "dkld": None}
        rows.append({"name": g.name, "tensors": list(g.tensors), "options": opts})
    data = {"format": FORMAT, **identity(sset, model, text, settings, baseline, spec, ties),
            "arch": facts.arch, "shelves": str(sset.dir), "groups": rows, "baseline_kld": None}
    return Table(data)


def identity(sset, model, text, settings: Settings, baseline: T, spec, ties) -> dict:
    return {"model": {"path": str(model), "sha256": content_hash(model)},
            "text": {"path": str(text), "sha256": file_hash(text)},
            "imatrix": sset.manifest["imatrix"], "pin": sset.pin, "settings": settings.key(),
            "baseline": baseline.name, "grouping": {"spec": spec, "ties": [list(t) for t in ties]}}


# ------------------------------------------------------------------------------------------- the cluster


def client(scheduler: str | None, workers: int, backend: str):
    """A Dask client: of the cluster at `scheduler`, or of a local cluster of `workers` processes (each with
    one "GPU" resource on the cuda backend, so that a job asks its worker for the GPU)."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise UsageError("qpatch measure needs Dask: pip install 'dask[distributed]'") from None
    if scheduler:
        try:
            return Client(scheduler, timeout="20s")
        except OSError as e:
            raise UsageError(f"--scheduler {scheduler}: no Dask scheduler answers there ({e})") from None
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                           silence_logs=logging.ERROR, resources={"GPU": 1} if backend == "cuda" else None)
    return Client(cluster)


@dataclass(frozen=True)
class Summary:
    table: Table
    jobs: int  # run now
    kept: int  # already in the table
    wall: float
    seconds_ppl: float  # llama-perplexity's own time, summed over the jobs run now
    seconds_links: float
    failed: tuple[str, ...]
    workers: int = 1  # job slots of the cluster (workers x threads)

    @property
    def overhead(self) -> float:
        """Wall time x job slots / summed llama-perplexity time: 1.0 is a cluster never idle or in the way."""
        return self.wall * self.workers / self.seconds_ppl if self.seconds_ppl else 0.0


def measure(model, *, shelves_dir, text, out, checkout, settings: Settings = Settings(), baseline: str = "Q8_0",
            groups: str | None = None, ties=(), types=(), scheduler: str | None = None, workers: int | None = None,
            progress: Progress = SILENT, client_obj=None) -> Summary:
    evaluation_check_text(text)
    sset = shelf.load(shelves_dir)
    shelf.check_same(sset.manifest, {"model": {"path": str(model), "sha256": content_hash(model)}}, sset.dir)
    facts = read_model(model)
    cat_types = {t.name for t in sset.shelves}
    base_t = T[baseline.upper()] if baseline.upper() in T.__members__ else None
    if base_t is None or base_t.name not in cat_types:
        raise ShelfError(f"--baseline {baseline}: no such shelf in {sset.dir} (it has {', '.join(sorted(cat_types))})")
    type_list = [T[t.strip().upper()] for t in types if t.strip()] if types else []
    fresh = new_table(sset, facts, model=model, text=text, settings=settings, baseline=base_t,
                      groups_spec=groups, ties=ties, types=type_list)
    out = Path(out)
    if out.exists():
        table = load(out)
        check_same(table, fresh.identity, out)
        _merge_options(table, fresh)
    else:
        table = fresh
        table.path = out
    table.save(out)
    todo = table.missing()
    kept = 1 + sum(len(g["options"]) - 1 for g in table.data["groups"]) - len(todo)
    if not todo:
        progress.note(f"{out}: every job is measured already")
        _write_csv(table)
        return Summary(table, 0, kept, 0.0, 0.0, 0.0, ())
    ev = Evaluator(checkout, settings, progress=progress)
    base = ev.base(model, text)
    work = out.parent / f".{out.stem}.work"
    work.mkdir(parents=True, exist_ok=True)
    n_workers = workers or (1 if settings.backend == "cuda" else max(1, (os.cpu_count() or 1) // 2))
    threads = settings.threads or max(1, (os.cpu_count() or 1) // n_workers)
    args = tuple(Settings(settings.ctx, settings.chunks, settings.backend, threads).args())
    groups_by_name = {g["name"]: g for g in table.data["groups"]}
    specs = []
    for g, t in todo:
        tensors = () if g == "*" else tuple(groups_by_name[g]["tensors"])
        key = hashlib.sha256(json.dumps([table.identity, g, t], sort_keys=True).encode()).hexdigest()[:16]
        specs.append(JobSpec(key, g, tensors, t, table.baseline, str(sset.dir.resolve()), str(work.resolve()),
                             str(ev.binary.resolve()), str(base.logits.resolve()), args))
    progress.note(f"measuring {len(specs)} jobs ({kept} in the table already) on "
                  f"{scheduler or f'{n_workers} local worker(s)'}")
    t0 = time.perf_counter()
    ppl = links = 0.0
    failed = []
    own = client_obj is None
    c = client_obj or client(scheduler, n_workers, settings.backend)
    slots = sum(w.get("nthreads", 1) for w in c.scheduler_info().get("workers", {}).values()) or n_workers
    try:
        from distributed import as_completed

        res = {"GPU": 1} if settings.backend == "cuda" else None
        futures = {c.submit(run_job, s, key=f"qpatch-measure-{s.key}", pure=False, resources=res): s for s in specs}
        done = 0
        with progress.bar("measure jobs", len(specs)) as update:
            for fut in as_completed(futures):
                s = futures[fut]
                done += 1
                try:
                    r = fut.result()
                except (EvalError, ShelfError) as e:
                    failed.append(f"{s.group}@{s.type}: {e}")
                    progress.note(f"[{done}/{len(specs)}] {s.group} @ {s.type}: FAILED {e}")
                    update(done)
                    continue
                ppl += r["seconds"]
                links += r["seconds_links"]
                if s.group == "*":
                    table.record_baseline(r)
                else:
                    table.record(s.group, s.type, r)
                table.save(out)
                el = time.perf_counter() - t0
                eta = el / done * (len(specs) - done)
                progress.note(f"[{done}/{len(specs)}] {s.group} @ {s.type}: KLD {r['kld_mean']:.5f} "
                              f"({r['seconds']:.1f} s), ETA {eta:.0f} s")
                update(done)
    finally:
        if own:
            cluster = getattr(c, "cluster", None)
            c.close()
            if cluster is not None:
                cluster.close()
    shutil.rmtree(work, ignore_errors=True)
    _write_csv(table)
    summary = Summary(table, len(specs) - len(failed), kept, time.perf_counter() - t0, ppl, links,
                      tuple(failed), slots)
    if failed:
        raise JobsFailed(f"{len(failed)} of {len(specs)} measure jobs failed (the table keeps the others; run "
                         f"measure again to retry): {failed[0]}")
    return summary


def evaluation_check_text(text):
    p = Path(text)
    if not p.is_file() or p.stat().st_size == 0:
        raise EvalError(f"text file {text} {'is empty' if p.is_file() else 'does not exist'}",
                        hint="pass --text FILE: the text to measure KL divergence on")


def _merge_options(table: Table, fresh: Table):
    """Options a fresh layout has that the saved table lacks (more shelves since): added, to be measured."""
    old = {g["name"]: g for g in table.data["groups"]}
    for g in fresh.data["groups"]:
        for t, e in g["options"].items():
            old[g["name"]]["options"].setdefault(t, e)


def _write_csv(table: Table):
    if table.path is None:
        return
    p = table.path.with_suffix(".csv")
    try:
        p.write_text(table.to_csv())
    except OSError as e:
        raise UsageError(f"cannot write {p}: {e.strerror}") from None
