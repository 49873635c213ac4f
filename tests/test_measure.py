"""`qpatch measure` and `qpatch fit`.

The solver is proven optimal against brute force on small random tables (one budget, and GPU + CPU
budgets), and never worse than the greedy ΔKLD-per-byte heuristic. Measure runs for real: the default
pin's llama-perplexity on a random tiny DeepSeek with the real vocabulary, on a local Dask cluster of two
worker processes, with a worker killed mid-run (its job runs again; the table ends complete), then
resumed; the fitted policy plans to exactly the bytes the solver predicted, and assembles and verifies.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import random
import signal

import pytest
from click.testing import CliRunner
from helpers import stock_binary

from qpatch.cli import cli
from qpatch.errors import ShelfError, UsageError
from qpatch.gguf.catalogue import T
from qpatch.gguf.model_facts import read_model
from qpatch.gguf.synth import deepseek_v3, write_model
from qpatch.job import Job
from qpatch.measure import fit as solver
from qpatch.measure import jobs, policy_file
from qpatch.measure.table import FORMAT, Table
from qpatch.policy import loader
from qpatch.progress import Progress
from qpatch.quality.content import content_hash
from qpatch.quality.evaluation import Settings
from qpatch.shelves import assemble, shelf
from qpatch.shelves.groups import make_groups

# ------------------------------------------------------------------------------------------------ solver


def _random_table(rng, n_groups, n_opts, cpu_every=0) -> Table:
    groups = []
    for i in range(n_groups):
        opts = {}
        for j in range(n_opts):
            opts[f"T{j}"] = {"bytes": rng.randrange(10, 200), "dkld": rng.uniform(-0.001, 0.05), "dkld_unc": 0.0}
        kind = "ffn_up_exps" if cpu_every and i % cpu_every == 0 else "attn_q"
        groups.append({"name": f"g{i}", "tensors": [f"blk.{i}.{kind}.weight"], "options": opts})
    return Table({"format": FORMAT, "groups": groups, "baseline": "T0"})


def _brute(table: Table, size=None, gpu=None, cpu=None, offload=None):
    rows = solver.items(table, offload if gpu is not None else None)
    best = None
    for combo in itertools.product(*[o for _, o in rows]):
        g = sum(it.gpu for it in combo)
        c = sum(it.cpu for it in combo)
        if (size is not None and g > size) or (gpu is not None and (g > gpu or c > cpu)):
            continue
        cost = sum(it.cost for it in combo)
        if best is None or cost < best - 1e-12:
            best = cost
    return best


@pytest.mark.parametrize("seed", range(12))
def test_fit_is_optimal_against_brute_force(seed):
    rng = random.Random(seed)
    table = _random_table(rng, rng.randrange(3, 7), rng.randrange(2, 5))
    rows = solver.items(table)
    lo = sum(min(it.gpu for it in o) for _, o in rows)
    hi = sum(max(it.gpu for it in o) for _, o in rows)
    for size in sorted({lo, hi - 1, *(rng.randrange(lo, hi) for _ in range(6))}):
        f = solver.solve(table, size=size)
        assert f.bytes <= size and f.bytes == table.total_bytes(f.choice)
        assert f.dkld_sum == pytest.approx(_brute(table, size=size), abs=1e-12)
        assert f.dkld_sum <= solver.greedy(table, size).dkld_sum + 1e-12


@pytest.mark.parametrize("seed", range(6))
def test_split_budgets_are_optimal(seed):
    rng = random.Random(100 + seed)
    table = _random_table(rng, 6, 3, cpu_every=2)
    rows = solver.items(table, "exps")
    glo = sum(min(it.gpu for it in o) for _, o in rows)
    clo = sum(min(it.cpu for it in o) for _, o in rows)
    for _ in range(5):
        gpu, cpu = glo + rng.randrange(0, 300), clo + rng.randrange(0, 300)
        f = solver.solve(table, gpu=gpu, cpu=cpu, offload="exps")
        assert f.gpu_bytes <= gpu and f.cpu_bytes <= cpu
        assert f.dkld_sum == pytest.approx(_brute(table, gpu=gpu, cpu=cpu, offload="exps"), abs=1e-12)


def test_budgets_out_of_reach():
    table = _random_table(random.Random(7), 4, 3)
    rows = solver.items(table)
    lo = sum(min(it.gpu for it in o) for _, o in rows)
    hi = sum(max(it.gpu for it in o) for _, o in rows)
    with pytest.raises(UsageError, match=f"below the smallest mix the table allows: {lo:,} bytes"):
        solver.solve(table, size=lo - 1)
    f = solver.solve(table, size=hi + 10)
    assert f.at_max and f.bytes == hi
    assert f.choice == {g.name: max(o, key=lambda it: it.gpu).type for g, o in rows}


def test_parse_size():
    assert solver.parse_size("24GiB") == 24 * 2**30 and solver.parse_size("24G") == 24 * 2**30
    assert solver.parse_size("25GB") == 25 * 10**9 and solver.parse_size("1.5MiB") == 3 * 2**19
    assert solver.parse_size("123") == 123
    with pytest.raises(UsageError, match="expected a size"):
        solver.parse_size("lots")
    with pytest.raises(UsageError, match="not a regular expression"):
        solver.solve(_random_table(random.Random(1), 3, 2), gpu=10**6, cpu=10**6, offload="(")


def test_large_table_solves_quickly():
    """DeepSeek-V3 at 8 bands is ~200 groups; 10 types each: the exact DP is still interactive."""
    rng = random.Random(3)
    table = _random_table(rng, 200, 10)
    rows = solver.items(table)
    mid = (sum(min(it.gpu for it in o) for _, o in rows) + sum(max(it.gpu for it in o) for _, o in rows)) // 2
    f = solver.solve(table, size=mid)
    assert f.bytes <= mid and f.dkld_sum <= solver.greedy(table, mid).dkld_sum + 1e-12


# ------------------------------------------------------------------- the written policy (no binary needed)


def _table_for(model, pin, types, ties=(), spec="bands:4") -> Table:
    """A table laid out as measure lays it out, with sizes from each type's plan and made-up costs."""
    facts = read_model(model)
    rng = random.Random(1)
    groups = []
    for g in make_groups(facts, spec, ties):
        opts = {}
        for t in types:
            job = Job.create(model, "Q8_0", pin=pin)  # every quantizable tensor asked for t, as a shelf is
            job = dataclasses.replace(job, options=dataclasses.replace(job.options, overrides=((".*", t),)))
            plan = {x.name: x for x in job.plan().tensors}
            opts[t.name] = {"bytes": sum(plan[n].nbytes for n in g.tensors), "dkld_unc": 0.0,
                            "dkld": 0.0 if t == types[0] else rng.uniform(0, 0.01),
                            "types": {plan[n].type.name: 1 for n in g.tensors}}
        if len({json.dumps(o["types"]) for o in opts.values()}) == 1:
            opts = {types[0].name: opts[types[0].name]}
        groups.append({"name": g.name, "tensors": list(g.tensors), "options": opts})
    return Table({"format": FORMAT, "groups": groups, "baseline": types[0].name, "pin": pin,
                  "model": {"path": str(model), "sha256": content_hash(model)}, "text": {"path": "t", "sha256": "0"},
                  "imatrix": None, "settings": {"ctx": 128, "chunks": 4, "backend": "cpu"},
                  "grouping": {"spec": spec, "ties": [list(t) for t in ties]}, "baseline_kld": {"kld_mean": 0.001}})


def test_fitted_policy_plans_to_the_predicted_size_and_ties_hold_on_ik(tmp_path):
    """ik_llama.cpp's fused MoE op needs up and gate of a block at one type: tied kinds are one choice."""
    model = tmp_path / "ds.gguf"
    write_model(deepseek_v3(n_layer=8, name="ds8"), model)
    pin = "ik-55d3c05b"
    table = _table_for(model, pin, [T.Q8_0, T.Q4_0, T.IQ4_NL], ties=(("ffn_gate_exps", "ffn_up_exps"),))
    table.save(tmp_path / "table.json")
    rows = solver.items(table)
    mid = (sum(min(it.gpu for it in o) for _, o in rows) + sum(max(it.gpu for it in o) for _, o in rows)) // 2
    r = policy_file.fit_policy(model, tmp_path / "table.json", name="fit-ik", size=mid,
                               out_dir=tmp_path / "pols", command="qpatch fit ...")
    assert r.plan_bytes == r.fit.bytes <= mid
    pol = loader.load("fit-ik", extra=(str(tmp_path / "pols"),))
    plan = {t.name: t.type for t in Job.create(model, r.ftype, policy=pol, pin=pin).plan().tensors}
    blocks = {int(n.split(".")[1]) for n in plan if "ffn_up_exps" in n}
    assert blocks and all(plan[f"blk.{b}.ffn_up_exps.weight"] == plan[f"blk.{b}.ffn_gate_exps.weight"] for b in blocks)
    assert len({plan[f"blk.{b}.ffn_up_exps.weight"] for b in blocks}) > 1  # the fit did choose (not all one type)
    text = r.path.read_text()
    assert "@generated by qpatch fit" in text and "datetime" not in text and f"pins=('{pin}',)" in text


def test_fit_refuses_another_models_table(tmp_path):
    a, b = tmp_path / "a.gguf", tmp_path / "b.gguf"
    write_model(deepseek_v3(n_layer=8, name="a"), a)
    write_model(deepseek_v3(n_layer=9, name="b"), b)
    _table_for(a, "0c1e57098", [T.Q8_0, T.Q4_0]).save(tmp_path / "t.json")
    r = CliRunner().invoke(cli, ["fit", str(b), "--table", str(tmp_path / "t.json"), "--size", "1MiB"])
    assert r.exit_code == 11 and "was measured on" in r.stderr
    r = CliRunner().invoke(cli, ["fit", str(a), "--table", str(tmp_path / "t.json"), "--size", "1"])
    assert r.exit_code == 2 and "below the smallest mix the table allows" in r.stderr


# ----------------------------------------------------------------------------------- measure, for real


@pytest.fixture(scope="module")
def tiny_shelves(tmp_path_factory):
    from qpatch.gguf import tiny_model

    stock_binary.stock_tools(stock_binary.CURRENT_PIN, ("llama-quantize", "llama-perplexity"))
    tree = stock_binary.pin_dir(stock_binary.CURRENT_PIN) / "llama.cpp"
    d = tmp_path_factory.mktemp("measure")
    base = tiny_model.write(d / "base.gguf", tree / tiny_model.VOCAB, **tiny_model.tiny())
    sset = shelf.make(base, ["q8_0", "q4_0"], d / "sh", checkout=tree, groups="kind", threads=2)
    text = d / "text.txt"
    text.write_text((tree / "docs" / "build.md").read_text())
    return tree, d, base, sset, text


@pytest.mark.binary
def test_measure_on_dask_survives_a_killed_worker_then_resumes(tiny_shelves):
    from distributed import Client, LocalCluster

    tree, d, base, sset, text = tiny_shelves
    out = d / "table.json"
    settings = Settings(128, 3, "cpu", 1)
    killed = []

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as c:
        pids = list(c.run(os.getpid).values())

        class KillOne(Progress):
            def note(self, msg):
                if msg.startswith("[2/") and not killed:  # jobs are still queued and running: kill a worker
                    os.kill(pids[0], signal.SIGKILL)
                    killed.append(pids[0])

        s = jobs.measure(base, shelves_dir=sset.dir, text=text, out=out, checkout=tree, settings=settings,
                         ties=("ffn_gate_exps,ffn_up_exps",), progress=KillOne(), client_obj=c)
    assert killed
    table = s.table
    assert not table.missing() and s.jobs == 1 + sum(len(g.options) - 1 for g in table.groups())
    names = {g.name.split("@")[0] for g in table.groups()}
    assert "ffn_gate_exps+ffn_up_exps" in names and "ffn_up_exps" not in names  # tied: one choice
    for g in table.groups():
        for t, o in g.options.items():
            assert o.bytes == sum(sset.shelves[T[t]].tensors[n].nbytes for n in g.tensors)
            assert o.dkld == 0.0 if t == "Q8_0" else o.dkld_unc > 0
    assert sum(o.dkld for g in table.groups() for o in g.options.values()) > 0
    assert out.with_suffix(".csv").read_text().startswith("group,type,bytes,dkld")
    # resume: forget three results; a re-run measures only those, with the local cluster of its own
    data = json.loads(out.read_text())
    forgot = 0
    for g in data["groups"]:
        for t, e in g["options"].items():
            if t != "Q8_0" and forgot < 3:
                e.update(dkld=None, kld=None)
                forgot += 1
    out.write_text(json.dumps(data))
    again = jobs.measure(base, shelves_dir=sset.dir, text=text, out=out, checkout=tree, settings=settings,
                         ties=("ffn_gate_exps,ffn_up_exps",), workers=2)
    assert again.jobs == 3 and not again.table.missing()
    # another setting is another table: refused, naming what differs
    with pytest.raises(ShelfError, match="settings"):
        jobs.measure(base, shelves_dir=sset.dir, text=text, out=out, checkout=tree, settings=Settings(256, 3, "cpu", 1),
                     ties=("ffn_gate_exps,ffn_up_exps",), workers=1)
    # fit it: the policy plans to the predicted bytes, assembles from the shelves, verifies
    rows = solver.items(again.table)
    lo = sum(min(it.gpu for it in o) for _, o in rows)
    hi = sum(max(it.gpu for it in o) for _, o in rows)
    pols = d / "pols"
    pols.mkdir(exist_ok=True)
    r = CliRunner().invoke(cli, ["--policies", str(pols), "fit", str(base), "--table", str(out), "--size",
                                 str((lo + hi) // 2), "--name", "fit-mid", "--format", "json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert res["bytes"] <= (lo + hi) // 2
    assert set(res["choice"]) == {g.name for g in again.table.groups() if len(g.options) > 1}
    loader.use_policies_dir(str(pols))
    try:
        mix, job = assemble.assemble(base, d / "fit.gguf", shelves_dir=sset.dir, policy="fit-mid", ftype=res["ftype"])
        assert job.plan().total_bytes == res["bytes"]
        v = CliRunner().invoke(cli, ["--policies", str(pols), "verify", str(mix.path)])
        assert v.exit_code == 0, v.output
    finally:
        loader.use_policies_dir(None)
    # a budget beyond the largest mix says so
    r = CliRunner().invoke(cli, ["--policies", str(pols), "fit", str(base), "--table", str(out), "--size", "1GiB",
                                 "--name", "fit-big"])
    assert r.exit_code == 0 and "holds the largest mix" in r.stdout


@pytest.mark.binary
def test_no_traceback_on_bad_inputs(tiny_shelves, tmp_path):
    """Every new command with the common bad inputs: an error with its exit code, never a traceback."""
    tree, d, base, sset, text = tiny_shelves
    bad = tmp_path / "bad.gguf"
    bad.write_text("not a model")
    (tmp_path / "t.json").write_text("{}")
    cases = [
        (["measure", base, "--shelves", sset.dir, "--text", tmp_path / "nope.txt", "--out", tmp_path / "m.json",
          "--dir", tree], 10),
        (["measure", base, "--shelves", sset.dir, "--text", text, "--out", "/proc/qpatch/m.json", "--dir", tree], 2),
        (["measure", bad, "--shelves", sset.dir, "--text", text, "--out", tmp_path / "m.json"], 3),
        (["measure", base, "--shelves", tmp_path, "--text", text, "--out", tmp_path / "m.json"], 11),
        (["measure", base, "--shelves", sset.dir, "--text", text, "--out", tmp_path / "m.json",
          "--baseline", "q3_x"], 11),
        (["shelves", bad, "--types", "q8_0", "--out", tmp_path / "s", "--dir", tree], 3),
        (["shelves", base, "--types", "q8_0", "--out", "/proc/qpatch/s", "--dir", tree], 2),
        (["shelves", base, "--types", "q9_9", "--out", tmp_path / "s", "--dir", tree], 2),
        (["shelves", base, "--out", tmp_path / "s", "--dir", tree], 2),
        (["shelves", base, "--for", "stock", "--out", tmp_path / "s", "--dir", tree], 2),
        (["shelves", base, "--types", "q8_0", "--out", tmp_path / "s", "--dir", tmp_path], 7),
        (["fit", base, "--table", bad, "--size", "1G"], 2),
        (["fit", base, "--table", tmp_path / "t.json", "--size", "1G"], 2),
        (["assemble", base, tmp_path / "x.gguf", "--shelves", sset.dir, "-f", "Q9"], 2),
        (["assemble", bad, tmp_path / "x.gguf", "--shelves", sset.dir, "-f", "Q8_0"], 3),
    ]
    for args, code in cases:
        r = CliRunner().invoke(cli, [str(a) for a in args])
        assert isinstance(r.exception, SystemExit) and "Traceback" not in r.output, (args, r.output)
        assert r.exit_code == code and r.stderr.startswith("error: "), (args, r.exit_code, r.output)
