"""The stock llama-quantize the differential tests run: built once from the pinned source, cached.

Made the way a user makes one: `Checkout.fetch` of the pin (from the llama-cpp-python sdist,
downloaded with pip when not cached) and `qpatch.build`, under ~/.cache/qpatch/test/stock-<pin>/
(QPATCH_CACHE moves it). A fresh machine fetches and builds it (about 2 minutes on 2 cores);
later runs find it built. pytest-xdist workers share it through a file lock.
"""

from __future__ import annotations

import fcntl
from contextlib import contextmanager
from pathlib import Path

from qpatch import build
from qpatch.cache import cache_root
from qpatch.checkout import Checkout
from qpatch.pins import load_pin

PIN = "4227c9be"


def pin_dir() -> Path:
    return cache_root() / "test" / f"stock-{PIN}"


@contextmanager
def locked():
    """Hold the pin's cache lock (xdist workers fetch and build one at a time)."""
    path = pin_dir() / "lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def stock_quantize() -> Path:
    """Path of the stock llama-quantize, fetching the pristine tree and building when needed (incremental)."""
    tree = pin_dir() / "llama.cpp"
    with locked():
        if not (tree / ".git").exists():
            co = Checkout(tree)
            co.fetch(load_pin(PIN), source="sdist")
            co.close()
        bindir = build.build(tree, "cpu", ["llama-quantize"], progress=None)
    return bindir / "llama-quantize"
