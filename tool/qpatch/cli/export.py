"""`qpatch export`: a policy's types for one model as --tensor-type overrides for a stock llama-quantize."""

from __future__ import annotations

from pathlib import Path

import click

from qpatch.errors import NotExpressible


@click.command("export")
@click.argument("policy")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--ftype", "-f", required=True, help="llama-quantize ftype, e.g. Q4_K_M, IQ1_M")
@click.option("--imatrix", type=click.Path(dir_okay=False), help="the imatrix file the run will use (GGUF or legacy)")
@click.option("--format", "fmt", type=click.Choice(["tensor-type", "tensor-type-file", "custom-q", "model-card"]),
              default=None,
              help="default: the pin family's own (tensor-type on llama.cpp, custom-q on ik_llama.cpp). "
                   "tensor-type: `--tensor-type 'PAT=type' \\` lines to paste; tensor-type-file: PAT=type lines; "
                   "custom-q: one PAT=type,PAT=type string; model-card: a markdown recipe block (command, what each "
                   "override sets, size per group, total)")
@click.option("--pin", default=None,
              help="the pin whose stock llama-quantize reads the list (default: the default pin)")
@click.option("--allow-partial", is_flag=True,
              help="print the list even where some tensors cannot be expressed (they are named in its header)")
def export_cmd(policy, model, ftype, imatrix, fmt, pin, allow_partial):
    """Print the fewest --tensor-type overrides that make a stock llama-quantize write POLICY's types for MODEL.

    Tensors the overrides cannot reach (stock's choice needed a shape fallback, or stock aborts
    where the policy does not) are named on stderr; then the exit status is 9 unless
    --allow-partial. `#` lines on stderr say what the list is for and count its overrides; stdout holds
    exactly what llama-quantize (or the shell, for tensor-type) reads.
    """
    from qpatch.errors import UsageError
    from qpatch.job import Job
    from qpatch.recipes import export

    job = Job.create(model, ftype, policy=policy, imatrix=imatrix, pin=pin)
    fmt = fmt or job.family.export_formats[0]
    if fmt != "model-card" and fmt not in job.family.export_formats:
        raise UsageError(f"pin {job.pin}'s llama-quantize (family {job.family.name}) does not read --format {fmt}",
                         hint=f"formats for it: {', '.join(job.family.export_formats + ('model-card',))}")
    ex = export.export(job.plan())
    if ex.inexpressible:
        for line in export.describe_lost(ex.inexpressible):
            click.echo(f"inexpressible: {line}", err=True)
        if not allow_partial:
            raise NotExpressible(
                f"{len(ex.inexpressible)} tensor(s) cannot get the policy's type from a stock llama-quantize "
                f"with --tensor-type", hint="--allow-partial prints the overrides for the other tensors")
    im = Path(imatrix).name if imatrix else None
    if fmt != "model-card":  # stdout is exactly what llama-quantize (or the shell) reads; what it is for: stderr
        for line in export.header(ex, imatrix=im):
            click.echo(line, err=True)
    click.echo(export.format_recipe(ex, fmt, imatrix=im), nl=False)


