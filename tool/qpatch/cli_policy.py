"""Policy commands: list, show, render."""

from __future__ import annotations

import click

from .cli import cli


@cli.command("list")
def list_cmd():
    """List the policies in policies/: name, summary, target architectures."""
    from . import policies_view

    click.echo(policies_view.list_table())


@cli.command("show")
@click.argument("policy")
def show_cmd(policy):
    """Show POLICY's rules as a table, each with its file:line."""
    from . import policies_view

    click.echo(policies_view.show(policy))


@cli.command("render")
@click.argument("policy")
@click.option("--pin", default="4227c9be", show_default=True, help="pin whose hook the header is rendered for")
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="write here (only if changed) instead of stdout")
def render_cmd(policy, pin, output):
    """Print the C++ header generated from POLICY (what `qpatch apply` writes into the checkout)."""
    from pathlib import Path

    from . import render
    from .policy import loader

    text = render.render(loader.load(policy), pin)
    if output:
        changed = render.write_if_changed(Path(output), text)
        click.echo(f"{output}: {'written' if changed else 'unchanged'}", err=True)
    else:
        click.echo(text, nl=False)
