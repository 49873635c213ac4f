"""Writing a user's output files: all or nothing, and an OSError becomes an error that names the path."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from qpatch.errors import UsageError


def cannot_write(path: str | os.PathLike, e: OSError) -> UsageError:
    return UsageError(f"cannot write {path}: {e.strerror or e}")


@contextlib.contextmanager
def replacing(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path beside PATH to write; when the block ends without an error it becomes PATH,
    otherwise it is removed and PATH is left as it was."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as e:
        raise cannot_write(path, e) from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def write_text(path: str | os.PathLike, text: str) -> None:
    with replacing(path) as tmp:
        tmp.write_text(text)
