"""Where qpatch keeps what it downloads or builds once per machine: `~/.cache/qpatch`, or `QPATCH_CACHE`."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    env = os.environ.get("QPATCH_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "qpatch"


def sdist_dir() -> Path:
    return cache_root() / "sdist"
