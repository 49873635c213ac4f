"""Fixtures for the checkout tests: a file:// llama.cpp remote built from the real sdists.

The remote has the layout of ggml-org/llama.cpp that the pins rely on: a commit whose tree is
the 0.3.16 vendored tree (4227c9be), tagged b6700, and a child commit with the 0.3.36 tree
(0c1e57098) on master. It is built once per machine under the cache, through the real sdist
import (so the recorded import commits and file hashes are proven on every fresh machine), and
packed, so that a shallow fetch from it takes about a second.
"""

from __future__ import annotations

import dataclasses
import difflib
import fcntl
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import git
import pytest

from qpatch.cache import cache_root
from qpatch.checkout import sources
from qpatch.checkout.repo import Checkout
from qpatch.families.pins import Pin, Source, load_pin
from qpatch.progress import SILENT

QUANT = "src/llama-quant.cpp"


@dataclass(frozen=True)
class Upstream:
    path: Path
    c4227: str  # the 0.3.16 tree (4227c9be), tagged b6700
    c49bf: str  # the 0.3.36 tree (0c1e57098), its child, on master

    @property
    def url(self) -> str:
        return self.path.as_uri()

    def pin(self, name: str, patch_dir: Path | None = None, **changes) -> Pin:
        """The real pin `name`, pointed at this remote (its file hashes unchanged, so they still verify)."""
        real = load_pin(name)
        commit = {"4227c9be": self.c4227, "0c1e57098": self.c49bf, "b6700": self.c4227}[name]
        srcs = (Source(kind="git", url=self.url),) + tuple(s for s in real.sources if s.kind == "sdist")
        return dataclasses.replace(real, commit=commit, sources=srcs,
                                   patch_dir=patch_dir if patch_dir is not None else real.patch_dir, **changes)

    def show(self, commit: str, path: str) -> str:
        return git.Repo(self.path).git.show(f"{commit}:{path}", strip_newline_in_stdout=False)


def _build_upstream(path: Path) -> Upstream:
    tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=path.parent))
    try:
        repo = git.Repo.init(tmp, bare=True)
        a = sources.obtain(repo, load_pin("4227c9be"), "sdist", SILENT).commit
        b = sources.obtain(repo, load_pin("0c1e57098"), "sdist", SILENT).commit
        child = repo.git.execute(["git", "commit-tree", f"{b}^{{tree}}", "-p", a, "-m", "llama.cpp 0c1e57098 (test)"],
                                 env=sources.IDENTITY)
        repo.git.update_ref("refs/heads/master", child)
        repo.git.update_ref("refs/tags/b6700", a)
        repo.git.update_ref("refs/imports/0c1e57098", b)  # the sdist import itself, parentless
        repo.git.execute(["git", "-c", "pack.threads=2", "repack", "-a", "-d", "-q"])
        repo.git.prune()
        repo.close()
        tmp.rename(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return _open(path)


def _open(path: Path) -> Upstream:
    r = git.Repo(path)
    up = Upstream(path, r.git.rev_parse("b6700^{commit}"), r.git.rev_parse("master"))
    r.close()
    return up


@pytest.fixture(scope="session")
def upstream() -> Upstream:
    a, b = (next(s.import_commit for s in load_pin(n).sources if s.kind == "sdist") for n in ("4227c9be", "0c1e57098"))
    root = cache_root() / "test"
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"upstream-{a[:10]}-{b[:10]}-v2.git"
    with open(root / "upstream.lock", "w") as lock:  # pytest-xdist workers build it once between them
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _open(path) if path.exists() else _build_upstream(path)


@pytest.fixture(scope="module")
def base_checkout(upstream, tmp_path_factory) -> Path:
    """One checkout of (the test remote's) pin 4227c9be per test module, made from the remote as a mirror."""
    path = tmp_path_factory.mktemp("base") / "llama.cpp"
    Checkout(path).fetch(upstream.pin("4227c9be"), source=f"mirror:{upstream.path}")
    (path.parent / "config.orig").write_bytes((path / ".git" / "config").read_bytes())
    return path


@pytest.fixture
def checkout(base_checkout) -> Checkout:
    """The module's checkout put back to just after its fetch: pristine, no branches, clean.

    Restoring with git (only what a test changed is rewritten) is much cheaper than a fresh
    fetch, which writes 94 MB; the fetch itself is tested on fresh directories.
    """
    path = base_checkout
    (path / ".git" / "config").write_bytes((path.parent / "config.orig").read_bytes())
    g = git.Git(path)
    pristine = g.config("--get", "qpatch.pristine")
    g.update_ref("refs/qpatch/pristine", pristine)
    g.checkout("--quiet", "--force", "--detach", pristine)
    g.clean("-ffdxq")
    for ref in g.for_each_ref("--format=%(refname)", "refs/heads", "refs/tags", "refs/qpatch/pins",
                              "refs/stash").split():
        g.update_ref("-d", ref)
    c = Checkout(path)
    yield c
    c.close()


def make_patch(old: str, edits: list[tuple[str, str]], path: str = QUANT, *, subject: str = "A test patch",
               upstream_status: str = "Inappropriate [test only]") -> str:
    """A patch with a header, from `old` and (before, after) text replacements (each must match once)."""
    new = old
    for before, after in edits:
        assert new.count(before) == 1, f"edit anchor not unique in {path}: {before!r}"
        new = new.replace(before, after)
    diff = "".join(difflib.unified_diff(old.splitlines(True), new.splitlines(True), f"a/{path}", f"b/{path}"))
    return f"{subject}\n\nWhy: exercise the series mechanics.\nUpstream-Status: {upstream_status}\n\n{diff}"


def write_series(patch_dir: Path, patches: dict[str, str]) -> Path:
    """patches/<pin>/ with these patches (name -> text) in order, and their series file."""
    patch_dir.mkdir(parents=True, exist_ok=True)
    for name, text in patches.items():
        (patch_dir / name).write_text(text)
    (patch_dir / "series").write_text("# test series\n" + "".join(f"{n}\n" for n in patches))
    return patch_dir


# A test-only hook written against 4227c9be: an include near the top, a call before the shape fallback.
HOOK_4227 = [
    ("#include <unordered_map>\n\n// Quantization types.",
     '#include <unordered_map>\n\n#include "llama-quant-qpatch.h"  // qpatch: generated policy\n\n'
     "// Quantization types."),
    ("    bool convert_incompatible_tensor = false;\n",
     "    new_type = qpatch_tensor_type(qs, new_type, tensor, ftype);  // qpatch\n\n"
     "    bool convert_incompatible_tensor = false;\n"),
]
def snapshot(c: Checkout) -> dict:
    """Everything an all-or-nothing operation must leave as it was."""
    import hashlib

    repo = c.repo
    files = {p: hashlib.sha256((c.path / p).read_bytes()).hexdigest() if (c.path / p).exists() else None
             for p in (QUANT, "README.md", "CMakeLists.txt", "src/CMakeLists.txt", "src/llama-quant-qpatch.h")}
    return {
        "HEAD": (Path(repo.git_dir) / "HEAD").read_text(),
        "head_commit": repo.head.commit.hexsha,
        "refs": repo.git.for_each_ref(),
        "status": repo.git.status("--porcelain", "--untracked-files=all", "--ignored"),
        "index": hashlib.sha256(repo.git.ls_files("--stage").encode()).hexdigest(),
        "files": files,
    }
