"""verify: compare a quantized GGUF with the policy's prediction."""

from __future__ import annotations

import click

from qpatch.cli.job_options import type_options


@click.command("verify")
@click.argument("quant", type=click.Path(dir_okay=False))
@click.option("--policy", "-p",
              help="the policy the file should follow [default: the one qpatch quantize recorded in it]")
@click.option("--pin", help="the pin whose rules apply [default: the one recorded in the file, else the default pin]")
@click.option("--source", type=click.Path(dir_okay=False), help="the unquantized model (shapes and kinds)")
@click.option("--ftype", "-f", help="default: the file's general.file_type")
@click.option("--imatrix", type=click.Path(dir_okay=False), help="the imatrix used (default: read from the file)")
@type_options
def verify_cmd(quant, policy, pin, source, ftype, imatrix, **options):
    """Check every tensor of QUANT against the prediction; exit 1 and list the differences if any.
    The type options are those the file was quantized with."""
    from qpatch.quantize import verify

    r = verify.verify(quant, policy=policy, source=source, ftype=ftype, imatrix=imatrix, pin=pin, **options)
    click.echo(verify.report(r))
    verify.check(r)


@click.command("quantize", context_settings={"ignore_unknown_options": False})
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
    from qpatch.cli.checkout import ClickProgress
    from qpatch.quantize import runner, verify
    from qpatch.shipped import default_checkout

    r, seconds = runner.quantize(
        checkout or default_checkout(), model, out, ftype, policy=policy, imatrix=imatrix, threads=threads,
        backend=backend, progress=ClickProgress(), **options)
    click.echo(f"quantized {model} -> {out} in {seconds:.1f} s")
    click.echo(verify.report(r))
    verify.check(r)
