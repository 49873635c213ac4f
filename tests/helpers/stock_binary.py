"""The stock llama-quantize the differential tests run: built once from the pinned source, cached.

Made the way a user makes one: `Checkout.fetch` of the pin (from the llama-cpp-python sdist,
downloaded with pip when not cached) and `qpatch.build`, under ~/.cache/qpatch/test/stock-<pin>/
(QPATCH_CACHE moves it). A fresh machine fetches and builds it (about 2 minutes on 2 cores);
later runs find it built. pytest-xdist workers share it through a file lock.
"""

from __future__ import annotations

from pathlib import Path

from helpers.cachelock import file_lock
from qpatch.build import cmake
from qpatch.cache import cache_root
from qpatch.checkout.repo import Checkout
from qpatch.families.pins import load_pin

PIN = "4227c9be"  # the b6700 family's real-run proofs; the current family's use CURRENT_PIN
CURRENT_PIN = "0c1e57098"


def pin_dir(pin: str = PIN) -> Path:
    return cache_root() / "test" / f"stock-{pin}"


def locked(pin: str = PIN):
    """Hold the pin's cache lock (xdist workers fetch and build one at a time)."""
    return file_lock(pin_dir(pin) / "lock")


def _fetch(pin: str, tree: Path):
    if not (tree / ".git").exists():
        co = Checkout(tree)
        co.fetch(load_pin(pin), source="sdist")
        co.close()


def stock_quantize(pin: str = PIN) -> Path:
    """Path of the pin's stock llama-quantize, fetching the pristine tree and building when needed (incremental)."""
    tree = pin_dir(pin) / "llama.cpp"
    with locked(pin):
        _fetch(pin, tree)
        bindir = cmake.build(tree, "cpu", ["llama-quantize"], progress=None)
    return bindir / "llama-quantize"


def fetched_tree(pin: str) -> Path:
    """The pin's pristine source tree (from its sdist, downloaded with pip once), without building."""
    tree = pin_dir(pin) / "llama.cpp"
    with locked(pin):
        _fetch(pin, tree)
    return tree


def stock_tools(pin: str, targets: tuple[str, ...]) -> Path:
    """The bin directory of the pin's stock build with `targets` built too (incremental)."""
    tree = pin_dir(pin) / "llama.cpp"
    with locked(pin):
        _fetch(pin, tree)
        return cmake.build(tree, "cpu", list(targets), progress=None)
