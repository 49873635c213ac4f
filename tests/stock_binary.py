"""The stock llama-quantize the differential tests run: built once from the pinned source, cached.

Cache layout (keyed by pin): ~/.cache/qpatch/test/stock-<pin>/src-tree (the llama.cpp tree) and
its build-cpu/bin/llama-quantize, built with `qpatch.build` like any checkout. A fresh machine
extracts and builds it (about 2 minutes on 2 cores); later runs find it built.
Several pytest-xdist workers share it through a file lock.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tarfile
from contextlib import contextmanager
from pathlib import Path

from qpatch import build

PIN = "4227c9be"
SDIST_VERSION = "0.3.16"  # llama-cpp-python 0.3.16 vendors llama.cpp 4227c9be
SDIST_NAME = f"llama_cpp_python-{SDIST_VERSION}.tar.gz"
CACHE = Path(os.environ.get("QPATCH_CACHE", Path.home() / ".cache" / "qpatch"))


def pin_dir() -> Path:
    return CACHE / "test" / f"stock-{PIN}"


@contextmanager
def locked():
    """Hold the pin's cache lock (xdist workers extract and build one at a time)."""
    path = pin_dir() / "lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# ---------------------------------------------------------------------------------------------
# TEMPORARY, to be replaced by the checkout manager (`qpatch.checkout`) once it is on main:
# the pristine source tree of the pin, extracted from the llama-cpp-python sdist.
def stock_source_tree() -> Path:
    """vendor/llama.cpp of the 0.3.16 sdist, extracted once into the cache (call under the lock)."""
    tree = pin_dir() / "src-tree"
    if (tree / "src" / "llama-quant.cpp").is_file():
        return tree
    sdist = CACHE / "sdist" / SDIST_NAME
    if not sdist.is_file():
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                        f"llama-cpp-python=={SDIST_VERSION}", "-d", str(sdist.parent)], check=True)
    prefix = f"llama_cpp_python-{SDIST_VERSION}/vendor/llama.cpp/"
    tmp = tree.with_name(f"src-tree.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    with tarfile.open(sdist) as tf:
        members = []
        for m in tf.getmembers():
            if m.name.startswith(prefix) and len(m.name) > len(prefix):
                m.name = m.name[len(prefix):]
                members.append(m)
        kw = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tf.extractall(tmp, members=members, **kw)
    tmp.rename(tree)
    return tree
# ---------------------------------------------------------------------------------------------


def stock_quantize() -> Path:
    """Path of the stock llama-quantize, building it when missing or out of date (incremental)."""
    with locked():
        tree = stock_source_tree()
        bindir = build.build(tree, "cpu", ["llama-quantize"], progress=None)
    return bindir / "llama-quantize"
