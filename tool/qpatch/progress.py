"""How long-running library calls report progress without printing: the CLI passes a reporter.

The library calls `note(msg)` for a step and `bar(label, total)` for a measured one; the default
reporter is silent, so library use and tests stay quiet and deterministic.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator


class Progress:
    """Silent reporter; subclass (or pass one like `qpatch.cli.checkout`'s) to show progress."""

    show_subprocess_output = False  # True: tools with their own progress (pip) print to stderr

    def note(self, msg: str) -> None:
        pass

    @contextmanager
    def bar(self, label: str, total: int) -> Iterator[Callable[[int], None]]:
        """Yield `update(done)`: `done` is the absolute amount reached so far, out of `total`."""
        yield lambda done: None


SILENT = Progress()
