"""The `qpatch` command line: parse arguments, call the library, map errors to exit codes here only.

This module defines the group and `plan`, and registers every command explicitly; the command
modules beside it (policy, build, verify, export, synth, checkout) import nothing from here.
"""

from __future__ import annotations

import click

from qpatch import __version__
from qpatch.cli import build, checkout, export, measure, policy, quality, quantize, recipes, shelves, synth, verify
from qpatch.cli.job_options import JobCommand, type_options
from qpatch.errors import QpatchError, QuantizeError, UsageError


class QpatchGroup(click.Group):
    """Turns QpatchError into `error: ...` on stderr and its exit code; no traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except QpatchError as e:
            click.echo(f"error: {e}", err=True)
            if e.hint:
                click.echo(f"hint: {e.hint}", err=True)
            ctx.exit(e.exit_code)
        except OSError as e:  # the last net: a path the library did not name in an error of its own
            where = f"{e.filename}: " if e.filename else ""
            click.echo(f"error: {where}{e.strerror or e}", err=True)
            ctx.exit(UsageError.exit_code)


@click.group(cls=QpatchGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="qpatch")
@click.option("--policies", "policies_dir", type=click.Path(file_okay=False), metavar="DIR",
              help="a directory of your policies, searched first (then ./policies, then qpatch's own)")
def cli(policies_dir):
    """Control the ggml type of every tensor llama-quantize writes, with Python policies."""
    from qpatch.policy import loader

    loader.use_policies_dir(policies_dir)  # also None: each invocation starts from the default search path


@click.command("plan", cls=JobCommand)
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--ftype", "-f", required=True, help="llama-quantize ftype, e.g. Q4_K_M, IQ1_M")
@click.option("--policy", "-p", default="stock", show_default=True, help="policy name (see `qpatch list`)")
@click.option("--imatrix", type=click.Path(dir_okay=False), help="imatrix file (GGUF or legacy)")
@type_options
@click.option("--pin", default=None,
              help="llama.cpp pin whose rules apply (default: the default pin, see `qpatch pins`)")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "markdown"]), default="table", show_default=True)
@click.option("--all", "show_all", is_flag=True, help="table: also list tensors kept as they are")
@click.option("--compare", metavar="POLICY", help="show only what differs from POLICY's plan (e.g. stock)")
def plan_cmd(model, ftype, policy, imatrix, pin, fmt, show_all, compare, **options):
    """Predict the type of every tensor of MODEL for FTYPE under a policy."""
    from qpatch.job import Job
    from qpatch.predict import report

    job = Job.create(model, ftype, policy=policy, pin=pin, imatrix=imatrix, **options)
    p = job.plan()
    if compare:
        base = job.with_policy(compare).plan()
        if fmt == "json":
            click.echo(report.compare_json(base, p))
        else:
            click.echo(report.format_compare(base, p, markdown=fmt == "markdown"))
    elif fmt == "json":
        click.echo(report.format_json(p))
    elif fmt == "markdown":
        click.echo(report.format_markdown(p))
    else:
        click.echo(report.format_table(p, show_unquantized=show_all))
    errors = list(p.errors) + (list(base.errors) if compare else [])
    if errors:
        if fmt == "json":  # the JSON on stdout holds them all ("errors"); stderr names the first few
            for e in errors[:5]:
                click.echo(f"problem: {e}", err=True)
            more = f", {len(errors) - 5} more in the JSON's \"errors\"" if len(errors) > 5 else ""
            raise QuantizeError(f"llama-quantize would fail on this job ({len(errors)} problem(s): listed above{more})")
        raise QuantizeError(f"llama-quantize would fail on this job ({len(errors)} problem(s) listed above)")


# Every command, registered here explicitly (the command modules import nothing from this one).
COMMANDS = (
    plan_cmd, policy.list_cmd, policy.show_cmd, policy.render_cmd, policy.apply_cmd, policy.diff_cmd, policy.check_cmd,
    build.build_cmd, quantize.quantize_cmd, verify.verify_cmd, export.export_cmd, synth.synth_cmd,
    checkout.pins_cmd, checkout.fetch_cmd, checkout.status_cmd, checkout.reset_cmd, checkout.patches_grp,
    checkout.rebase_cmd, quality.eval_cmd, quality.sweep_cmd, recipes.import_cmd, shelves.shelves_cmd,
    shelves.assemble_cmd, measure.measure_cmd, measure.fit_cmd,
)
for _cmd in COMMANDS:
    cli.add_command(_cmd)


def main():
    cli(prog_name="qpatch")
