"""verify: compare a quantized GGUF with the policy's prediction."""

from __future__ import annotations

import click

from qpatch.cli.job_options import JobCommand, type_options


@click.command("verify", cls=JobCommand)
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
