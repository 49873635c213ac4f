"""Patches of a series: their headers, and what each does to a tree (applies / conflicts / already upstream).

Everything here runs on a private index file (`TempIndex`), never on the checkout's index or
worktree, so checking a series, or building the commits `qpatch apply` makes, changes nothing a
user can see until the caller decides to move a branch. Applying is strict: `git apply` with its
full context and no fuzz; a hunk may only move to another line when its context is unchanged.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import git
from gitdb.base import IStream

APPLIES, CONFLICTS, UPSTREAM, MISSING = "applies", "conflicts", "already upstream", "file missing"


@dataclass(frozen=True)
class Hunk:
    file: str
    index: int  # 1-based, within its file
    count: int  # hunks in that file
    header: str  # the "@@ -a,b +c,d @@ context" line
    text: str  # a complete one-hunk patch (file headers + this hunk), for checking it alone


@dataclass(frozen=True)
class PatchInfo:
    path: Path
    header: str  # everything before the first diff: what, why, upstream status
    hunks: tuple[Hunk, ...]
    files: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def subject(self) -> str:
        """The `Subject:` line (less git's "[PATCH]"), else the header's first line."""
        m = re.search(r"^Subject:\s*(?:\[PATCH[^\]]*\]\s*)?(.+)$", self.header, re.M)
        if m:
            return m[1].strip()
        lines = [ln.strip() for ln in self.header.splitlines()]
        return next((ln for ln in lines if ln and not re.match(r"(From|Date)[: ]", ln)), "")

    @property
    def message(self) -> str:
        """The header as a commit message: subject, blank line, the rest (mail headers dropped)."""
        rest = [ln for ln in self.header.splitlines() if not re.match(r"(From|Date|Subject):", ln)]
        if rest and rest[0].strip() == self.subject:
            rest = rest[1:]
        body = "\n".join(rest).strip("\n")
        return f"{self.subject or self.name}\n\n{body}".rstrip() + "\n"

    @property
    def upstream_status(self) -> str:
        """The Upstream: field with its indented continuation lines, joined."""
        m = re.search(r"^\s*Upstream(?:[- ]Status)?:\s*(.+(?:\n[ \t]+\S.*)*)", self.header, re.M | re.I)
        return " ".join(m[1].split()) if m else ""


@dataclass(frozen=True)
class HunkResult:
    hunk: Hunk
    state: str  # APPLIES | CONFLICTS | UPSTREAM | MISSING


@dataclass(frozen=True)
class PatchResult:
    patch: PatchInfo
    state: str  # APPLIES | CONFLICTS | UPSTREAM
    hunks: tuple[HunkResult, ...] = ()  # per hunk, when the patch conflicts
    detail: str = ""  # git apply's own words, when it conflicts


_FILE_START = re.compile(r"^(diff --git |--- )")
_HUNK = re.compile(r"^@@ -\d+(?:,(\d+))? \+\d+(?:,(\d+))? @@")


def read_patch(path: Path) -> PatchInfo:
    lines = path.read_text(errors="surrogateescape").splitlines(keepends=True)
    i = 0
    # The header ends at the first "diff --git", or at a "---" line followed by "+++" (plain diff).
    while i < len(lines) and not (lines[i].startswith("diff --git ") or
                                  (lines[i].startswith("--- ") and i + 1 < len(lines)
                                   and lines[i + 1].startswith("+++ "))):
        i += 1
    head_lines = lines[:i]
    if "---\n" in head_lines:  # format-patch: a diffstat follows its "---" separator
        head_lines = head_lines[:head_lines.index("---\n")]
    header = "".join(head_lines).rstrip()
    hunks: list[Hunk] = []
    files: list[str] = []
    while i < len(lines):
        head, i = _file_head(lines, i)
        name = _file_name(head)
        files.append(name)
        bodies = []
        while i < len(lines) and (m := _HUNK.match(lines[i])):
            old = int(m[1]) if m[1] is not None else 1
            new = int(m[2]) if m[2] is not None else 1
            start, i = i, i + 1
            while i < len(lines) and (old > 0 or new > 0 or lines[i].startswith("\\")):
                c = lines[i][:1]
                old -= c in (" ", "-", "\n")
                new -= c in (" ", "+", "\n")
                i += 1
            bodies.append("".join(lines[start:i]))
        for k, body in enumerate(bodies, 1):
            hunks.append(Hunk(file=name, index=k, count=len(bodies), header=body.splitlines()[0],
                              text="".join(head) + body))
        while i < len(lines) and not _FILE_START.match(lines[i]):
            i += 1  # trailing text: format-patch's signature, binary data we do not split
    return PatchInfo(path=path, header=header, hunks=tuple(hunks), files=tuple(files))


def _file_head(lines: list[str], i: int) -> tuple[list[str], int]:
    start = i
    i += 1
    while i < len(lines) and not _HUNK.match(lines[i]) and not lines[i].startswith("diff --git "):
        i += 1
    return lines[start:i], i


def _file_name(head: list[str]) -> str:
    for ln in head:
        if ln.startswith("+++ ") and not ln.startswith("+++ /dev/null"):
            return ln[4:].strip().split("\t")[0].removeprefix("b/")
    for ln in head:
        if ln.startswith("--- "):
            return ln[4:].strip().split("\t")[0].removeprefix("a/")
    m = re.match(r"diff --git a/(\S+) b/(\S+)", head[0])
    return m[2] if m else head[0].strip()


class TempIndex:
    """A private index file loaded from a tree; git commands on it leave the real index alone."""

    def __init__(self, repo: git.Repo, treeish: str):
        self.repo = repo
        fd, name = tempfile.mkstemp(prefix="qpatch-index-", dir=repo.git_dir)
        os.close(fd)
        os.unlink(name)  # git wants to create it
        self.path = Path(name)
        self.env = {"GIT_INDEX_FILE": name}
        self.git("read-tree", treeish)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.path.unlink(missing_ok=True)

    def git(self, *args: str, env: dict | None = None) -> str:
        return self.repo.git.execute(["git", *args], env={**self.env, **(env or {})})

    def try_apply(self, patch: Path | str, *, check: bool, reverse: bool = False) -> tuple[bool, str]:
        """`git apply --cached` (strict), or only `--check` it; returns (worked, git's message)."""
        if isinstance(patch, str):  # a patch text: git apply reads it from a file
            with tempfile.NamedTemporaryFile("w", suffix=".patch", dir=self.repo.git_dir, delete=False) as f:
                f.write(patch)
            try:
                return self.try_apply(Path(f.name), check=check, reverse=reverse)
            finally:
                os.unlink(f.name)
        args = ["apply", "--cached", "--whitespace=nowarn"] + (["--check"] if check else []) \
            + (["--reverse"] if reverse else []) + [str(patch)]
        try:
            self.git(*args)
            return True, ""
        except git.GitCommandError as e:
            return False, (e.stderr or "").strip().removeprefix("stderr: ").strip("'").strip()

    def has(self, path: str) -> bool:
        return bool(self.git("ls-files", "--", path))

    def write_file(self, path: str, content: str, mode: str = "100644") -> None:
        data = content.encode()
        sha = self.repo.odb.store(IStream("blob", len(data), BytesIO(data))).hexsha.decode()
        self.git("update-index", "--add", "--cacheinfo", f"{mode},{sha},{path}")

    def write_tree(self) -> str:
        return self.git("write-tree")


def check_patch(idx: TempIndex, info: PatchInfo, *, apply: bool) -> PatchResult:
    """What `info` does to the index; when it applies and `apply`, it is applied there."""
    ok, detail = idx.try_apply(info.path, check=not apply)
    if ok:
        return PatchResult(info, APPLIES)
    if idx.try_apply(info.path, check=True, reverse=True)[0]:
        return PatchResult(info, UPSTREAM)
    hunks = []
    for h in info.hunks:
        if not idx.has(h.file) and "--- /dev/null" not in h.text:
            state = MISSING
        elif idx.try_apply(h.text, check=True)[0]:
            state = APPLIES
        elif idx.try_apply(h.text, check=True, reverse=True)[0]:
            state = UPSTREAM
        else:
            state = CONFLICTS
        hunks.append(HunkResult(h, state))
    return PatchResult(info, CONFLICTS, tuple(hunks), detail or "git apply refused it")


def check_series(repo: git.Repo, base: str, patches: list[Path]) -> list[PatchResult]:
    """Each patch in order on `base`, later ones on top of the earlier ones that applied."""
    with TempIndex(repo, base) as idx:
        return [check_patch(idx, read_patch(p), apply=True) for p in patches]


def format_results(results: list[PatchResult], *, indent: str = "") -> str:
    if not results:
        return f"{indent}(no patches)"
    width = max(len(r.patch.name) for r in results)
    out = []
    for r in results:
        out.append(f"{indent}{r.patch.name:<{width}}  {r.state}")
        for h in r.hunks:
            hk = h.hunk
            out.append(f"{indent}    {hk.file} hunk {hk.index}/{hk.count}: {h.state:<16}  {hk.header.strip()}")
    return "\n".join(out)
