"""Policy commands: list, show, render."""

from __future__ import annotations

import click

from qpatch.errors import PolicyError


@click.command("list")
def list_cmd():
    """List the policies on the search path: name, target architectures, rule count, summary.

    The search path: `qpatch --policies DIR`, ./policies, then qpatch's own; a policy found outside
    qpatch's own directory shows that directory after its summary."""
    from qpatch.policy import listing as policies_view

    table, broken = policies_view.list_table()
    click.echo(table)
    if broken:  # every good policy is listed; the exit status says some did not load
        raise PolicyError(f"{len(broken)} policy file(s) do not load (listed above)")


@click.command("show")
@click.argument("policy")
def show_cmd(policy):
    """Show POLICY's rules as a table, each with its file:line."""
    from qpatch.policy import listing as policies_view

    click.echo(policies_view.show(policy))


@click.command("render")
@click.argument("policy")
@click.option("--pin", help="pin whose hook the header is rendered for  [default: the default pin]")
@click.option("--output", "-o", type=click.Path(dir_okay=False),
              help="write here (only if changed) instead of stdout; a file that exists is replaced only if qpatch "
                   "generated it")
@click.option("--force", is_flag=True, help="replace OUTPUT even if it is not a header qpatch generated")
def render_cmd(policy, pin, output, force):
    """Print the C++ header generated from POLICY (what `qpatch apply` writes into the checkout)."""
    from pathlib import Path

    from qpatch.codegen import render
    from qpatch.errors import UsageError
    from qpatch.families.pins import DEFAULT_PIN
    from qpatch.policy import loader

    text = render.render(loader.load(policy), pin or DEFAULT_PIN)
    if output:
        if Path(output).exists() and not force and not render.is_generated(Path(output)):
            raise UsageError(f"{output} exists and is not a header qpatch generated",
                             hint="pass --force to overwrite it, or -o another file")
        changed = render.write_if_changed(Path(output), text)
        click.echo(f"{output}: {'written' if changed else 'unchanged'}", err=True)
    else:
        click.echo(text, nl=False)


_dir = click.option("--dir", "directory", type=click.Path(file_okay=False),
                    help="the checkout  [default: llama.cpp/ in the project]")


@click.command("apply")
@click.argument("policy")
@_dir
@click.option("--pin", help="refuse unless the checkout is of this pin (the checkout's own pin applies either way)")
def apply_cmd(policy, directory, pin):
    """Apply POLICY to the checkout: the pin's hook patches + the generated header, on branch qpatch/POLICY."""
    import time

    from qpatch.checkout import apply

    t0 = time.perf_counter()
    a = apply.apply(policy, directory, pin=pin)
    verb = "applied" if a.changed else "already applied"
    click.echo(f"{verb}: policy {a.policy} on pin {a.pin}, branch {a.branch} ({time.perf_counter() - t0:.2f} s)")
    if a.changed:
        import shlex

        d = "" if directory is None else shlex.quote(directory)
        hint = "make build-cpu (or qpatch build --cpu)" if directory is None else \
            f"make build-cpu DIR={d} (or qpatch build --cpu --dir {d})"
        click.echo(f"next: {hint}; only the quantize source recompiles")


@click.command("diff")
@click.option("--stat", is_flag=True, help="a diffstat instead of the full diff")
@_dir
def diff_cmd(stat, directory):
    """The checkout against its pristine upstream commit: the whole review."""
    from qpatch.checkout import apply

    click.echo(apply.diff(directory, stat=stat))


@click.command("check")
@click.argument("policy", required=False)
@_dir
def check_cmd(policy, directory):
    """Exit 1 and print the diff when the checkout's generated code is stale against POLICY."""
    from qpatch.checkout import apply

    click.echo(apply.check(policy, directory))
