"""quantize: run the checkout's llama-quantize on a model, then verify every tensor against the plan."""

from __future__ import annotations

import click

from qpatch.cli.job_options import JobCommand, type_options


@click.command("quantize", cls=JobCommand, context_settings={"ignore_unknown_options": False})
@click.argument("model", type=click.Path(dir_okay=False, exists=True))
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--ftype", "-f", required=True)
@click.option("--policy", "-p", help="refuse unless the checkout has this policy applied (default: what is applied)")
@click.option("--imatrix", type=click.Path(dir_okay=False, exists=True))
@type_options
@click.option("--threads", type=int, help="llama-quantize threads (default: all cores)")
@click.option("--backend", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
              help="which build's llama-quantize (build-cpu/ or build-cuda/)")
@click.option("--dir", "checkout", type=click.Path(file_okay=False),
              help="checkout (default: llama.cpp/ in the project)")
def quantize_cmd(model, out, ftype, policy, imatrix, threads, backend, checkout, **options):
    """Quantize MODEL to OUT with the checkout's llama-quantize, then verify every tensor."""
    from qpatch.cli.progress import ClickProgress
    from qpatch.quantize import runner, verify
    from qpatch.shipped import default_checkout

    r, seconds = runner.quantize(
        checkout or default_checkout(), model, out, ftype, policy=policy, imatrix=imatrix, threads=threads,
        backend=backend, progress=ClickProgress(), **options)
    click.echo(f"quantized {model} -> {out} in {seconds:.1f} s")
    click.echo(verify.report(r))
    verify.check(r)
