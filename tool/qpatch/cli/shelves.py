"""shelves, assemble: quantize once per type, then put any mix together from those quantizations."""

from __future__ import annotations

from pathlib import Path

import click


def _mib(n: int) -> str:
    return f"{n / 2**20:,.2f} MiB"


@click.command("shelves")
@click.argument("model", type=click.Path(dir_okay=False, exists=True))
@click.option("--types", "-t", default="", metavar="T1,T2,...", help="ggml types to shelve, e.g. q8_0,q4_k,iq2_xxs")
@click.option("--for", "mixes", multiple=True, metavar="POLICY@FTYPE",
              help="also every type this policy's plan at this ftype uses, e.g. stock@Q4_K_M (repeatable)")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="the shelf directory")
@click.option("--imatrix", type=click.Path(dir_okay=False, exists=True), help="imatrix file (GGUF or legacy)")
@click.option("--groups", default=None, metavar="SPEC", help="shard grouping: bands:N (default bands:8), kind, tensor")
@click.option("--tie", "ties", multiple=True, metavar="KIND,KIND", help="kinds that share their groups (repeatable)")
@click.option("--pin", default=None, help="refuse unless the checkout is of this pin")
@click.option("--dir", "checkout", type=click.Path(file_okay=False),
              help="checkout (default: llama.cpp/ in the project)")
@click.option("--backend", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--threads", type=int, help="llama-quantize threads (default: all cores)")
def shelves_cmd(model, types, mixes, out_dir, imatrix, groups, ties, pin, checkout, backend, threads):
    """Quantize MODEL once per type into shelves under --out (kept ones are reused)."""
    from qpatch.cli.progress import ClickProgress
    from qpatch.errors import CheckoutError
    from qpatch.shelves import shelf
    from qpatch.shipped import default_checkout

    checkout = Path(checkout) if checkout else default_checkout()
    if pin:
        from qpatch.checkout.repo import Checkout

        have = Checkout(checkout).pin_name
        if have != pin:
            raise CheckoutError(f"{checkout} is a checkout of pin {have}, not {pin}",
                                hint=f"qpatch fetch --pin {pin} --dir DIR, build it, and pass --dir DIR")
    wanted = [t for t in types.split(",") if t.strip()]
    if mixes:
        from qpatch.checkout.repo import Checkout
        from qpatch.errors import UsageError
        from qpatch.job import Job

        co_pin = Checkout(checkout).pin_name
        for m in mixes:
            pol, _, ft = m.partition("@")
            if not pol or not ft:
                raise UsageError(f"--for {m}: expected POLICY@FTYPE, e.g. deepseek-v3@IQ2_XXS")
            plan = Job.create(model, ft, policy=pol, pin=co_pin, imatrix=imatrix).plan()
            wanted += [t.name for t in shelf.types_for([plan])]
    sset = shelf.make(model, wanted, out_dir, checkout=checkout, imatrix=imatrix,
                      backend=backend, groups=groups, ties=ties, threads=threads, progress=ClickProgress())
    click.echo(format_shelves(sset))


def format_shelves(sset) -> str:
    from qpatch.shelves import shelf

    m = sset.manifest
    im = m["imatrix"]["path"] if m["imatrix"] else "none"
    lines = [f"{sset.dir}: {len(sset.shelves)} shelves of {Path(m['model']['path']).name}, pin {m['pin']}, "
             f"imatrix {im}, {len(sset.groups)} groups ({m['groups']['spec']}"
             + "".join(f", tie {'+'.join(t)}" for t in m["groups"]["ties"]) + f"), {sset.n_shards} shards each", ""]
    rows = [("type", "tensors data", "fell back", "made in")]
    for t in sorted(sset.shelves, key=lambda t: t.name):
        s = sset.shelves[t]
        size = sum(w.nbytes for w in s.tensors.values())
        idx = shelf.read_index(s.dir)
        rows.append((t.name.lower(), _mib(size), str(len(s.fell_back)), f"{idx.get('seconds', 0):.1f} s"))
    w = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        lines.append(f"{r[0]:<{w[0]}}  {r[1]:>{w[1]}}  {r[2]:>{w[2]}}  {r[3]:>{w[3]}}")
    return "\n".join(lines)


@click.command("assemble")
@click.argument("model", type=click.Path(dir_okay=False, exists=True))
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--shelves", "shelves_dir", required=True, type=click.Path(file_okay=False), help="the shelf directory")
@click.option("--policy", "-p", default="stock", show_default=True, help="policy name (see `qpatch list`)")
@click.option("--ftype", "-f", required=True, help="llama-quantize ftype, e.g. Q4_K_M")
@click.option("--imatrix", type=click.Path(dir_okay=False, exists=True), help="the imatrix the shelves were made with")
@click.option("--pin", default=None, help="default: the shelves' pin")
@click.option("--links", is_flag=True, help="write a split model whose shards link to shelf shards where whole")
@click.option("--force", is_flag=True, help="replace OUT if it exists")
def assemble_cmd(model, out, shelves_dir, policy, ftype, imatrix, pin, links, force):
    """Write the mix `qpatch quantize` would write for POLICY at FTYPE, from shelves, without quantizing."""
    import time

    from qpatch.cli.progress import ClickProgress
    from qpatch.shelves import assemble

    t0 = time.perf_counter()
    r, job = assemble.assemble(model, out, shelves_dir=shelves_dir, policy=policy, ftype=ftype, imatrix=imatrix,
                               pin=pin, links=links, force=force, progress=ClickProgress())
    p = job.plan()
    how = (f"{r.linked} shards linked, {r.written} written" if links else "one file")
    click.echo(f"assembled {r.path} in {time.perf_counter() - t0:.2f} s ({how}, {_mib(r.bytes_written)} copied): "
               f"policy={job.policy.name} ftype={job.options.ftype.name} pin={job.pin}, "
               f"{len(p.tensors)} tensors, {_mib(p.total_bytes)}, {p.bpw:.3f} bpw")
    click.echo(f"check it: qpatch verify {r.path}" + (f" --imatrix {imatrix}" if imatrix else ""))
