"""Where qpatch's own data lives: the pins' patch sets and the shipped policies.

Run from a source checkout (editable install, tests), they are the repository's `patches/` and
`policies/`, and the default llama.cpp checkout is `llama.cpp/` beside them. Installed normally (`pip
install .`), they are the data package `qpatch_data` (setup.py installs the same two folders there), and
the default checkout is `./llama.cpp` in the current directory. `QPATCH_ROOT` names a repository root
explicitly.
"""

from __future__ import annotations

import os
from pathlib import Path


def source_root() -> Path | None:
    """The repository this package runs from (tool/qpatch inside it), or None for an installed package."""
    env = os.environ.get("QPATCH_ROOT")
    if env:
        return Path(env)
    root = Path(__file__).resolve().parents[2]
    return root if (root / "tool" / "qpatch").is_dir() and (root / "patches").is_dir() else None


def project_root() -> Path:
    """Where the default checkout (llama.cpp/) and outputs live: the repository, else the current directory."""
    return source_root() or Path.cwd()


def default_checkout() -> Path:
    """The llama.cpp checkout commands act on when no --dir is given."""
    return project_root() / "llama.cpp"


def _data(name: str) -> Path:
    root = source_root()
    if root is not None:
        return root / name
    import qpatch_data

    return Path(qpatch_data.__file__).parent / name


def patches_root() -> Path:
    """Every pin's folder (pin.toml, series, patches); QPATCH_PATCHES overrides it."""
    env = os.environ.get("QPATCH_PATCHES")
    return Path(env) if env else _data("patches")


def policies_dir() -> Path:
    """The shipped policies."""
    return _data("policies")
