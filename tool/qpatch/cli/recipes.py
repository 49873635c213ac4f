"""`qpatch import`: a recipe (overrides, an ik --custom-q string, a quantized GGUF) as a policy file."""

from __future__ import annotations

import click


@click.command("import")
@click.argument("name")
@click.option("--tensor-type", "tensor_types", multiple=True, metavar="PAT=TYPE",
              help="a stock --tensor-type override (repeatable)")
@click.option("--tensor-type-file", type=click.Path(dir_okay=False, exists=True), help="a --tensor-type-file")
@click.option("--custom-q", metavar="REGEX=TYPE,...", help="an ik_llama.cpp --custom-q string")
@click.option("--gguf", type=click.Path(dir_okay=False, exists=True), help="a quantized GGUF whose types to import")
@click.option("--model", type=click.Path(dir_okay=False, exists=True),
              help="the model the round trip is planned on (required for overrides; for --gguf: its source)")
@click.option("--ftype", "-f", help="the ftype the recipe is used with [--gguf: the file's]")
@click.option("--imatrix", type=click.Path(dir_okay=False, exists=True), help="the imatrix the recipe is used with")
@click.option("--pin", default=None, help="whose llama-quantize the recipe is for [default: the default pin]")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="policies", show_default=True,
              help="directory to write NAME.py into (./policies is on the policy search path)")
@click.option("--force", is_flag=True, help="overwrite an existing policy file")
def import_cmd(name, tensor_types, tensor_type_file, custom_q, gguf, model, ftype, imatrix, pin, out_dir, force):
    """Write policy NAME from a recipe, and prove it: planned on the model, the policy gives every tensor the
    type the recipe does (stock + overrides, or the GGUF's types)."""
    import shlex
    import sys
    from pathlib import Path

    from qpatch.errors import UsageError
    from qpatch.families.pins import DEFAULT_PIN
    from qpatch.predict.options import TENSOR_TYPE_FILE
    from qpatch.recipes import importer as recipe_import

    given = [x for x in (tensor_types, tensor_type_file, custom_q, gguf) if x]
    if len(given) != 1:
        raise UsageError("give one recipe: --tensor-type (repeatable), --tensor-type-file, --custom-q or --gguf")
    overrides = None
    if tensor_types:
        overrides = list(tensor_types)
    elif tensor_type_file:
        overrides = TENSOR_TYPE_FILE.specs(tensor_type_file)
    elif custom_q:
        overrides = recipe_import.parse_custom_q(custom_q)
    if overrides is not None and not model:
        raise UsageError("importing overrides needs --model: the model the round trip is planned on")
    flag = "--custom-q" if custom_q else "--tensor-type-file" if tensor_type_file else "--tensor-type"
    r = recipe_import.import_policy(name, model=model, ftype=ftype, overrides=overrides, gguf=gguf, recipe_flag=flag,
                                    pin=pin or DEFAULT_PIN, out_dir=Path(out_dir), force=force, imatrix=imatrix,
                                    command=shlex.join(["qpatch", *sys.argv[1:]])
                                    if sys.argv[1:2] == ["import"] else "")
    click.echo(f"wrote {r.path}: {r.rules} rule(s), {r.fixups} of them fix-ups")
    click.echo(f"round trip: the policy gives all {r.checked} tensors {r.what}")
    in_cwd = Path(out_dir).resolve() == (Path.cwd() / "policies").resolve()  # ./policies is searched anyway
    flag = "" if in_cwd else f"--policies {shlex.quote(out_dir)} "
    click.echo(f"use it: qpatch {flag}plan MODEL --ftype F --policy {name}")
