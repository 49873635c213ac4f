"""verify: compare a quantized GGUF with the policy's prediction."""

from __future__ import annotations

import sys

import click

from .cli import cli


@cli.command("verify")
@click.argument("quant", type=click.Path(dir_okay=False))
@click.option("--policy", "-p", required=True, help="the policy the file should follow")
@click.option("--source", type=click.Path(dir_okay=False), help="the unquantized model (shapes and kinds)")
@click.option("--ftype", "-f", help="default: the file's general.file_type")
@click.option("--imatrix", type=click.Path(dir_okay=False), help="the imatrix used (default: read from the file)")
@click.option("--tensor-type", "tensor_types", multiple=True, metavar="PAT=TYPE", help="overrides used (repeatable)")
@click.option("--output-tensor-type")
@click.option("--token-embedding-type")
@click.option("--pure", is_flag=True)
def verify_cmd(quant, policy, source, ftype, imatrix, tensor_types, output_tensor_type, token_embedding_type, pure):
    """Check every tensor of QUANT against the prediction; exit 1 and list the differences if any."""
    from . import verify

    r = verify.verify(quant, policy=policy, source=source, ftype=ftype, imatrix=imatrix, tensor_types=tensor_types,
                      output_tensor_type=output_tensor_type, token_embedding_type=token_embedding_type, pure=pure)
    click.echo(verify.report(r))
    verify.check(r)
    sys.exit(0)
