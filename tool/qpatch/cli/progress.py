"""How long steps show their progress on the command line (every command that fetches, builds, quantizes or
measures passes one to the library)."""

from __future__ import annotations

import sys
from contextlib import contextmanager

import click

from qpatch.progress import Progress


class ClickProgress(Progress):
    """Steps and bars on stderr: click's bar on a terminal; in a log, a line per tenth of the way."""

    show_subprocess_output = True  # pip's own download bar

    def note(self, msg: str) -> None:
        click.echo(msg, err=True)

    @contextmanager
    def bar(self, label: str, total: int):
        if not sys.stderr.isatty():
            shown = [-1]

            def tenth(done: int):
                if 10 * done // max(total, 1) > shown[0]:
                    shown[0] = 10 * done // max(total, 1)
                    click.echo(f"{label}: {done}/{total}", err=True)

            yield tenth
            return
        with click.progressbar(length=total, label=label, file=sys.stderr) as b:
            last = [0]

            def update(done: int):
                b.update(max(done - last[0], 0))
                last[0] = max(done, last[0])

            yield update
