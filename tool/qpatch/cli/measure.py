"""measure, fit: the cost of each tensor group at each type, then the best mix for a size budget."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import click


@click.command("measure")
@click.argument("model", type=click.Path(dir_okay=False, exists=True))
@click.option("--shelves", "shelves_dir", required=True, type=click.Path(file_okay=False), help="the shelf directory")
@click.option("--text", required=True, type=click.Path(dir_okay=False), help="text to measure KL divergence on")
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="the table (JSON; a .csv is written beside it)")
@click.option("--baseline", default="Q8_0", show_default=True, help="the type every other group sits at")
@click.option("--types", default="", metavar="T1,T2,...", help="only these shelved types (default: every shelf)")
@click.option("--groups", default=None, metavar="SPEC", help="bands:N, kind or tensor (default: the shelves' own)")
@click.option("--tie", "ties", multiple=True, metavar="KIND,KIND", help="kinds chosen together (repeatable)")
@click.option("--ctx", type=int, default=512, show_default=True, help="llama-perplexity context")
@click.option("--chunks", type=int, default=None, help="llama-perplexity chunks (default: all the text holds)")
@click.option("--backend", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--threads", type=int, help="threads per llama-perplexity run (default: cores / workers)")
@click.option("--workers", type=int, help="local Dask workers (default: 1 per GPU on cuda, cores/2 on cpu)")
@click.option("--scheduler", metavar="ADDRESS", help="an existing Dask scheduler, e.g. tcp://head:8786")
@click.option("--dir", "checkout", type=click.Path(file_okay=False),
              help="checkout (default: llama.cpp/ in the project)")
def measure_cmd(model, shelves_dir, text, out, baseline, types, groups, ties, ctx, chunks, backend, threads, workers,
                scheduler, checkout):
    """Measure ΔKLD of every tensor group at every shelved type (baseline elsewhere), on Dask."""
    from qpatch.cli.progress import ClickProgress
    from qpatch.measure import jobs
    from qpatch.quality.evaluation import Settings
    from qpatch.shipped import default_checkout

    s = jobs.measure(model, shelves_dir=shelves_dir, text=text, out=out, checkout=checkout or default_checkout(),
                     settings=Settings(ctx, chunks, backend, threads), baseline=baseline, groups=groups, ties=ties,
                     types=[t for t in types.split(",") if t], scheduler=scheduler, workers=workers,
                     progress=ClickProgress())
    click.echo(format_table(s.table))
    if s.jobs:
        click.echo(f"\n{s.jobs} jobs on {s.workers} worker slot(s) in {s.wall:.1f} s: llama-perplexity "
                   f"{s.seconds_ppl:.1f} s summed, linking mixes {s.seconds_links:.1f} s; wall x slots / summed runs = "
                   f"{s.overhead:.2f}; {s.kept} job(s) kept from an earlier run")
    click.echo(f"wrote {out} and {Path(out).with_suffix('.csv')}")


def format_table(table) -> str:
    """Groups as rows, types as columns: ΔKLD (bytes in the CSV)."""
    rows = [g for g in table.groups() if len(g.options) > 1]
    types = sorted({t for g in rows for t in g.options if t != table.baseline})
    b = table.data.get("baseline_kld") or {}
    head = (f"baseline {table.baseline} everywhere: KLD {b.get('kld_mean', float('nan')):.6f} ± "
            f"{b.get('kld_unc', float('nan')):.6f}; ΔKLD of each group at each type ({len(rows)} groups with a choice)")
    w = max([len("group")] + [len(g.name) for g in rows])
    lines = [head, "", f"{'group':<{w}}  " + "  ".join(f"{t.lower():>10}" for t in types)]
    for g in rows:
        cells = [f"{g.options[t].dkld:>+10.5f}" if t in g.options else f"{'':>10}" for t in types]
        lines.append(f"{g.name:<{w}}  " + "  ".join(cells))
    return "\n".join(lines)


@click.command("fit")
@click.argument("model", type=click.Path(dir_okay=False, exists=True))
@click.option("--table", "table_path", required=True, type=click.Path(dir_okay=False, exists=True))
@click.option("--size", help="total budget, e.g. 24GiB, 900MiB, 25GB, or bytes")
@click.option("--bpw", type=float, help="budget in bits per weight")
@click.option("--gpu", help="GPU budget (with --cpu and --offload)")
@click.option("--cpu", help="CPU budget for the offloaded tensors")
@click.option("--offload", metavar="REGEX", help="tensors kept on the CPU, as llama-server's -ot REGEX=CPU, e.g. exps")
@click.option("--name", help="policy name [default: fit-<budget>]")
@click.option("--imatrix", type=click.Path(dir_okay=False, exists=True), help="default: the table's, if still there")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("--force", is_flag=True, help="overwrite an existing policy file")
@click.pass_context
def fit_cmd(ctx, model, table_path, size, bpw, gpu, cpu, offload, name, imatrix, fmt, force):
    """The mix with the least summed ΔKLD within the budget, exactly; written as a policy file."""
    import re

    from qpatch.measure import policy_file

    pdir = Path(ctx.parent.params.get("policies_dir") or "policies") if ctx.parent else Path("policies")
    label = size or (f"{bpw}bpw" if bpw is not None else f"gpu{gpu}-cpu{cpu}")
    name = name or "fit-" + re.sub(r"[^a-z0-9]+", "-", str(label).lower()).strip("-")
    budget_args = (f"--size {size}" if size else f"--bpw {bpw}" if bpw else
                   f"--gpu {gpu} --cpu {cpu} --offload {offload}")
    command = (shlex.join(["qpatch", *sys.argv[1:]]) if sys.argv[1:2] == ["fit"]
               else f"qpatch fit {model} --table {table_path} {budget_args} --name {name}")
    r = policy_file.fit_policy(model, table_path, name=name, size=size, bpw=bpw, gpu=gpu, cpu=cpu, offload=offload,
                               out_dir=pdir, imatrix=imatrix, force=force, command=command)
    from qpatch.measure.table import load

    table = load(table_path)
    groups = {g.name: g for g in table.groups()}
    chosen = {n: t for n, t in r.fit.choice.items() if len(groups[n].options) > 1}  # groups with a choice
    if fmt == "json":
        click.echo(json.dumps({"choice": chosen, "bytes": r.plan_bytes, "dkld_sum": r.fit.dkld_sum,
                               "budget": r.budget, "policy": str(r.path), "ftype": r.ftype,
                               "kld_predicted": r.kld_baseline + r.fit.dkld_sum, "at_max": r.fit.at_max},
                              indent=1, sort_keys=True))
        return
    rows = [(n, t, groups[n].options[t]) for n, t in chosen.items()]
    w = max([5] + [len(n) for n, _, _ in rows])
    click.echo(f"{'group':<{w}}  {'type':<8}  {'bytes':>14}  {'ΔKLD':>10}")
    for n, t, o in rows:
        click.echo(f"{n:<{w}}  {t.lower():<8}  {o.bytes:>14,}  {o.dkld:>+10.6f}")
    click.echo("")
    if r.fit.at_max:
        click.echo(f"the budget ({r.budget:,} bytes) holds the largest mix the table allows: that is the fit")
    click.echo(f"fit: {r.plan_bytes:,} bytes ({r.plan_bytes / 2**30:.3f} GiB, {r.bpw:.4f} bpw) of a {r.budget:,}-byte "
               f"budget; summed ΔKLD {r.fit.dkld_sum:.6f}, predicted KLD {r.kld_baseline + r.fit.dkld_sum:.6f}")
    if r.greedy is not None:
        click.echo(f"greedy ΔKLD/byte at the same budget: {r.greedy.bytes:,} bytes, "
                   f"summed ΔKLD {r.greedy.dkld_sum:.6f}")
    flag = "" if r.path.parent.resolve() == (Path.cwd() / "policies").resolve() else f"--policies {r.path.parent} "
    click.echo(f"wrote {r.path} ({r.rules} rules); use it: qpatch {flag}plan {model} -f {r.ftype} --policy {name}")
