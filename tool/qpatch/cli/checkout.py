"""CLI commands for the pinned llama.cpp checkout: pins, fetch, status, reset, patches, rebase.

They parse arguments and call `qpatch.checkout` / `qpatch.pins`; progress goes to stderr, results
to stdout. `qpatch apply/diff/check` (rendering a policy) are built on the same library elsewhere.
"""

from __future__ import annotations

from pathlib import Path

import click

from qpatch.cli.progress import ClickProgress
from qpatch.errors import CheckoutError

# qpatch.checkout and qpatch.patchset import GitPython, which needs a git executable: they are
# imported inside the commands, so that commands which need no checkout work without git.


def _shown(path: Path) -> str:
    """A path as the user would type it: relative when under the working directory."""
    try:
        rel = path.resolve().relative_to(Path.cwd().resolve())
        return str(rel) if str(rel) != "." else "."
    except ValueError:
        return str(path)


def _checkout(directory: str | None):
    from qpatch.checkout.repo import Checkout

    return Checkout(directory, progress=ClickProgress())


dir_option = click.option("--dir", "directory", type=click.Path(file_okay=False),
                          help="the checkout  [default: llama.cpp/ in the project]")
source_option = click.option("--source", default="auto", show_default=True, metavar="auto|git|sdist|mirror:PATH",
                             help="where to get the pin's tree; auto tries the pin's sources in order")


@click.command("pins")
def pins_cmd():
    """List the pins: llama.cpp commits qpatch knows, and where each can come from."""
    from qpatch.families.pins import DEFAULT_PIN, available_pins, load_pin

    names = available_pins()
    width = max(len(n) for n in names)
    for name in names:
        p = load_pin(name)
        rev = " ".join(x for x in (p.tag and f"tag {p.tag}", p.commit and p.commit[:12]) if x)
        default = "  (default)" if name == DEFAULT_PIN else ""
        click.echo(f"{name:<{width}} family {p.family:<10} {rev}{default}")
        for s in p.sources:
            click.echo(f"    {s.describe()}")


@click.command("fetch")
@click.option("--pin", help="which llama.cpp pin (see `qpatch pins`)  [default: the default pin]")
@source_option
@dir_option
def fetch_cmd(pin, source, directory):
    """Make the pinned llama.cpp checkout, verified against the pin's file hashes."""
    from qpatch.families.pins import DEFAULT_PIN, load_pin

    p = load_pin(pin or DEFAULT_PIN)
    r = _checkout(directory).fetch(p, source=source)
    where = _shown(r.path)
    if not r.created:
        click.echo(f"{where} is already pin {r.pin} (pristine {r.pristine[:12]}); hashes verified")
        return
    for what, why in r.tried:
        click.echo(f"skipped {what}: {why}")
    click.echo(f"fetched pin {r.pin} into {where} from {r.source}")
    click.echo(f"pristine commit {r.pristine}")
    for path, digest in p.file_hashes:
        click.echo(f"verified {path} sha256 {digest[:16]}...")
    if not p.file_hashes:
        click.echo(f"verified commit {p.commit or p.tag} (pin {p.name} records no file hashes)")
    click.echo(f"took {r.seconds:.1f} s", err=True)


@click.command("status")
@dir_option
def status_cmd(directory):
    """Show the checkout's pin, source, pristine commit, applied policy and patches, and dirt."""
    c = _checkout(directory)
    click.echo(c.status().describe().replace(str(c.path), _shown(c.path), 1))


@click.command("reset")
@dir_option
def reset_cmd(directory):
    """Return the checkout to its pristine commit (refuses when that could lose your changes)."""
    c = _checkout(directory)
    moved = c.reset()
    state = "reset to" if moved else "already at"
    click.echo(f"{_shown(c.path)}: {state} pristine commit {c.pristine_commit[:12]} of pin {c.pin_name}")


@click.group("patches")
def patches_grp():
    """The pin's patch series (patches/<pin>/series)."""


def _pin_for(pin: str | None, directory: str | None):
    from qpatch.families.pins import DEFAULT_PIN, load_pin

    if pin:
        return load_pin(pin)
    c = _checkout(directory)
    return load_pin(c.pin_name if (c.path / ".git").exists() else DEFAULT_PIN)


@patches_grp.command("list")
@click.option("--pin", help="which pin  [default: the checkout's, else the default pin]")
@dir_option
def patches_list_cmd(pin, directory):
    """Each patch of the series with its header: what it does and its upstream status."""
    from qpatch.checkout.patchset import read_patch
    from qpatch.families.pins import patches_dir, series

    p = _pin_for(pin, directory)
    paths = series(p)
    click.echo(f"pin {p.name}: {len(paths)} patch(es) in {_shown(patches_dir(p) / 'series')}")
    for path in paths:
        info = read_patch(path)
        click.echo(f"{info.name}")
        click.echo(f"    {info.subject or '(no header: say what, why, and its upstream status)'}")
        click.echo(f"    upstream status: {info.upstream_status or '(not stated)'}")
        click.echo(f"    touches: {', '.join(info.files)} ({len(info.hunks)} hunk(s))")


@patches_grp.command("check")
@click.option("--pin", help="which pin  [default: the checkout's, else the default pin]")
@source_option
@dir_option
def patches_check_cmd(pin, source, directory):
    """Per patch: applies / conflicts (which file, which hunk) / already upstream; exit 5 unless all apply."""
    from qpatch.checkout.patchset import APPLIES, format_results

    p = _pin_for(pin, directory)
    results = _checkout(directory).check_patches(p, source=source)
    click.echo(f"pin {p.name}:")
    click.echo(format_results(results, indent="  "))
    if any(r.state != APPLIES for r in results):
        raise CheckoutError(f"the series of pin {p.name} does not apply cleanly")


@click.command("rebase")
@click.option("--to", "to", required=True, help="the pin to move to")
@click.option("--apply", "do_apply", is_flag=True, help="move the checkout (otherwise only report)")
@source_option
@dir_option
def rebase_cmd(to, do_apply, source, directory):
    """Report what each patch does on another pin; with --apply, move the checkout there."""
    from qpatch.families.pins import load_pin

    c = _checkout(directory)
    target = load_pin(to)
    if do_apply:
        report = c.rebase(target, source=source)
        click.echo(report.describe())
        click.echo(f"moved {_shown(c.path)} to pin {to} (pristine {report.target[:12]}); "
                   "run `qpatch apply POLICY` to re-apply a policy")
    else:
        click.echo(c.rebase_report(target, source=source).describe())
        click.echo("nothing changed; run again with --apply to move the checkout")

