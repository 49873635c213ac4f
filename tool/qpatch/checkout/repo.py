"""The pinned llama.cpp checkout: fetch it, apply a pin's patches plus generated files, move pins.

A checkout is a git repository whose pristine commit is the pin's upstream tree. Everything
qpatch does to it is an ordinary commit on a branch (`qpatch/<policy>`), so `git diff` against
the pristine commit is the whole review. Its state (pin, source, pristine commit) lives in the
repository's own config (`[qpatch]` in `.git/config`) and in the ref `refs/qpatch/pristine`.

Safety: every method that changes the checkout first refuses when it holds uncommitted changes,
untracked files, or commits no branch keeps; build directories (`build-cpu/`, `build-cuda/`)
are ignored through `.git/info/exclude`. Changes are made all or nothing: commits are built on a
private index, and the branch and worktree only move once everything is ready.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import git

from qpatch.checkout import sources
from qpatch.checkout.patchset import (
    APPLIES,
    PatchResult,
    TempIndex,
    check_patch,
    check_series,
    format_results,
    read_patch,
)
from qpatch.errors import CheckoutError, UsageError
from qpatch.families.pins import Pin, load_pin, series
from qpatch.progress import SILENT, Progress

PRISTINE_REF = "refs/qpatch/pristine"
PIN_REFS = "refs/qpatch/pins/"
EXCLUDES = ("/build-cpu/", "/build-cuda/")
PATCH_TRAILER = "Qpatch-Patch"
GENERATED_TRAILER = "Qpatch-Generated"
# What `qpatch apply` put into the checkout, recorded once as trailers of its generated commit (so the record
# moves with HEAD): the policy, its content hash, and the sha256 of each generated file's content.
POLICY_TRAILER = "Qpatch-Policy"
POLICY_HASH_TRAILER = "Qpatch-Policy-Hash"
HEADER_HASH_TRAILER = "Qpatch-Header-Sha256"


def default_dir() -> Path:
    from qpatch.shipped import default_checkout

    return default_checkout()


@dataclass(frozen=True)
class FetchResult:
    path: Path
    pin: str
    source: str  # the source used, in words ("already fetched" when nothing was done)
    pristine: str
    tried: tuple[tuple[str, str], ...]  # sources tried first, and why they were not used
    created: bool
    seconds: float


@dataclass(frozen=True)
class Status:
    path: Path
    pin: str
    family: str
    upstream: str  # upstream commit (or tag) the pin names
    source: str
    pristine: str
    head: str
    branch: str | None  # None: detached
    based_on_pristine: bool
    patches: tuple[str, ...]  # applied by qpatch, in order
    generated: tuple[str, ...]  # files written by qpatch apply
    record: tuple[tuple[str, str], ...]  # the trailers of apply's generated commit (policy, hashes)
    other_commits: tuple[str, ...]  # "sha subject" of commits above pristine not made by qpatch
    changes: tuple[str, ...]  # "state path" of uncommitted changes and untracked files

    @property
    def dirty(self) -> bool:
        return bool(self.changes)

    @property
    def policy(self) -> str | None:
        """The applied policy, as apply recorded it (a checkout applied before the record: its branch name)."""
        rec = dict(self.record)
        if POLICY_TRAILER in rec:
            return rec[POLICY_TRAILER]
        if self.branch and self.branch.startswith("qpatch/") and self.generated:
            return self.branch.removeprefix("qpatch/")
        return None

    def describe(self) -> str:
        at = "pristine commit" if self.head == self.pristine else (
            f"branch {self.branch}" if self.branch else f"detached HEAD {self.head[:12]}")
        lines = [
            f"checkout:  {self.path}",
            f"pin:       {self.pin} (family {self.family}, upstream {self.upstream})",
            f"source:    {self.source}",
            f"pristine:  {self.pristine}",
            f"HEAD:      {self.head[:12]} ({at})",
            f"policy:    {self.policy or '(none)'}",
            "patches:   " + (", ".join(self.patches) or "(none)"),
        ]
        rec = dict(self.record)
        if POLICY_HASH_TRAILER in rec:
            lines.insert(-1, f"recorded:  policy hash {rec[POLICY_HASH_TRAILER]}, header sha256 "
                             f"{rec.get(HEADER_HASH_TRAILER, '?')[:16]}...")
        if self.generated:
            lines.append("generated: " + ", ".join(self.generated))
        if not self.based_on_pristine:
            lines.append("warning:   HEAD is not based on the pristine commit")
        for c in self.other_commits:
            lines.append(f"commit:    {c} (not made by qpatch)")
        lines.append("tree:      " + ("dirty" if self.dirty else "clean"))
        lines += [f"  {c}" for c in self.changes]
        return "\n".join(lines)


@dataclass(frozen=True)
class RebaseReport:
    from_pin: str
    to_pin: str
    target: str  # the new pin's pristine commit
    source: str
    current: tuple[PatchResult, ...]  # the current pin's series on the new pin
    own: tuple[PatchResult, ...]  # the new pin's own series on the new pin

    @property
    def ok(self) -> bool:
        return all(r.state == APPLIES for r in self.own)

    def describe(self) -> str:
        return "\n".join([
            f"rebase {self.from_pin} -> {self.to_pin} (pristine {self.target[:12]}, from {self.source})",
            f"series of {self.from_pin} on {self.to_pin}:",
            format_results(list(self.current), indent="  "),
            f"series of {self.to_pin} on {self.to_pin}:",
            format_results(list(self.own), indent="  "),
            (f"verdict: {self.to_pin} is usable: its own series applies" if self.ok else
             f"verdict: {self.to_pin}'s own series does not apply: fix patches/{self.to_pin} first"),
        ])


_STATE_WORDS = {"?": "untracked", "M": "modified", "A": "added", "D": "deleted", "R": "renamed",
                "C": "copied", "U": "unmerged", "T": "type changed"}


class Checkout:
    """A llama.cpp checkout at `path` (default: `llama.cpp/` in the project root)."""

    def __init__(self, path: Path | str | None = None, progress: Progress = SILENT):
        self.path = Path(path) if path is not None else default_dir()
        self.progress = progress
        self._repo: git.Repo | None = None

    # --- state ------------------------------------------------------------------------------------

    @property
    def repo(self) -> git.Repo:
        if self._repo is None:
            if not (self.path / ".git").exists():
                raise CheckoutError(f"no checkout at {self.path}", hint="make one with `qpatch fetch`")
            repo = git.Repo(self.path)
            if not _config(repo, "pin"):
                raise CheckoutError(f"{self.path} is a git repository, but not a qpatch checkout",
                                    hint="make one with `qpatch fetch --dir` another directory")
            self._repo = repo
        return self._repo

    @property
    def pristine_commit(self) -> str:
        return _config(self.repo, "pristine")

    @property
    def pin_name(self) -> str:
        return _config(self.repo, "pin")

    def close(self) -> None:
        if self._repo is not None:
            self._repo.close()
            self._repo = None

    def __enter__(self) -> "Checkout":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- fetch ------------------------------------------------------------------------------------

    def fetch(self, pin: Pin, source: str = "auto") -> FetchResult:
        """Make the checkout of `pin` (a no-op when it is already there). Never touches other content."""
        t0 = time.monotonic()
        if (self.path / ".git").exists():
            if self.pin_name != pin.name or _config(self.repo, "upstream") != (pin.commit or pin.tag):
                raise CheckoutError(f"{self.path} is already a checkout of pin {self.pin_name}",
                                    hint=f"move it with `qpatch rebase --to {pin.name}`, or use another --dir")
            sources.verify(self.repo, pin, self.pristine_commit, f"checkout {self.path}")
            # the commit is right; the files on disk must be what HEAD says too
            changed = sorted({d.a_path or "" for d in self.repo.index.diff(None)}
                             | {d.a_path or "" for d in self.repo.index.diff("HEAD")})
            touched = [p for p in changed if p in pin.hashes()]
            if touched:
                raise CheckoutError(f"{self.path} is pin {pin.name}, but its working tree has uncommitted changes to "
                                    f"{', '.join(touched)}, which the pin's patches touch",
                                    hint="see them with `git -C DIR diff`; keep them with `git stash`, or drop them "
                                         "with `qpatch reset`")
            return FetchResult(self.path, pin.name, "already fetched", self.pristine_commit, (), False,
                               time.monotonic() - t0)
        if self.path.exists() and (not self.path.is_dir() or any(self.path.iterdir())):
            raise CheckoutError(f"{self.path} exists and is not a qpatch checkout",
                                hint="move it away, or use another --dir")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Built beside the target and renamed into place: an interrupted fetch leaves no half checkout.
        tmp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.fetch-", dir=self.path.parent))
        try:
            repo = git.Repo.init(tmp, initial_branch="qpatch-unborn")
            got = sources.obtain(repo, pin, source, self.progress, fill_worktree=True)
            _record(repo, pin, got.source, got.commit)
            with open(Path(repo.git_dir) / "info" / "exclude", "a") as f:
                f.write("# qpatch: build directories live inside the checkout\n" + "\n".join(EXCLUDES) + "\n")
            self.progress.note("checking out the pristine tree")
            repo.git.checkout("--quiet", "--detach", got.commit)
            repo.close()
            if self.path.exists():
                self.path.rmdir()
            tmp.rename(self.path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self.close()
        return FetchResult(self.path, pin.name, got.source, got.commit, got.tried, True, time.monotonic() - t0)

    # --- status and safety ------------------------------------------------------------------------

    def record_policy_dir(self, directory: str) -> None:
        """Where the applied policy was found: quantize and check find it there again without --policies."""
        self.repo.git.config("qpatch.policydir", directory)

    @property
    def policy_dir(self) -> str:
        return _config(self.repo, "policydir")

    def status(self) -> Status:
        repo, pristine = self.repo, self.pristine_commit
        head = repo.head.commit.hexsha
        based = _is_ancestor(repo, pristine, head)
        patches, generated, others, record = [], [], [], {}
        if based:
            for c in reversed(list(repo.iter_commits(f"{pristine}..{head}"))):
                tr = _trailers(_text(c.message))
                if c.author.email == sources.IDENTITY["GIT_AUTHOR_EMAIL"] and PATCH_TRAILER in tr:
                    patches.append(tr[PATCH_TRAILER])
                elif c.author.email == sources.IDENTITY["GIT_AUTHOR_EMAIL"] and GENERATED_TRAILER in tr:
                    generated = tr[GENERATED_TRAILER].split(", ")
                    record = {k: v for k, v in tr.items() if k != GENERATED_TRAILER}
                else:
                    others.append(f"{c.hexsha[:12]} {_text(c.summary)}")
        return Status(
            path=self.path, pin=self.pin_name, family=_config(repo, "family"), upstream=_config(repo, "upstream"),
            source=_config(repo, "source"), pristine=pristine, head=head,
            branch=None if repo.head.is_detached else repo.active_branch.name, based_on_pristine=based,
            patches=tuple(patches), generated=tuple(generated), record=tuple(sorted(record.items())),
            other_commits=tuple(others),
            changes=tuple(f"{w:<10} {p}" for w, p in self._changes()),
        )

    def _changes(self) -> list[tuple[str, str]]:
        out = self.repo.git.status("--porcelain=v1", "-z", "--untracked-files=all", "--ignore-submodules=none")
        items, fields = [], out.split("\0")
        i = 0
        while i < len(fields):
            f = fields[i]
            i += 1
            if not f:
                continue
            xy, path = f[:2], f[3:]
            if "R" in xy or "C" in xy:
                i += 1  # the rename's source path follows
            code = next((c for c in xy if c not in " "), "?")
            items.append((_STATE_WORDS.get(code, code), path))
        return items

    def ensure_clean(self) -> None:
        """Refuse (CheckoutError) when changing the checkout could lose anything of the user's."""
        repo = self.repo
        gd = Path(repo.git_dir)
        busy = [n for n in ("MERGE_HEAD", "CHERRY_PICK_HEAD", "REVERT_HEAD", "rebase-merge", "rebase-apply")
                if (gd / n).exists()]
        if busy:
            raise CheckoutError(f"{self.path}: a git operation is in progress ({busy[0]})",
                                hint=f"finish or abort it first (git -C {self.path} status says how)")
        changes = self._changes()
        if changes:
            shown = "\n".join(f"  {w:<10} {p}" for w, p in changes[:20])
            more = f"\n  ... and {len(changes) - 20} more" if len(changes) > 20 else ""
            d = self.path
            raise CheckoutError(
                f"{d} has uncommitted changes or untracked files; nothing was changed:\n{shown}{more}",
                hint=f"keep them with `git -C {d} stash push --include-untracked` (back with `git stash pop`), "
                     f"or commit them on a branch of your own (`git -C {d} switch -c my-work`, then add and "
                     f"commit); then run the command again")
        lost = repo.git.rev_list("HEAD", "--not", "--branches", "--tags", "--glob=refs/qpatch/*")
        if lost:
            shas = lost.split()
            raise CheckoutError(
                f"{self.path}: HEAD has {len(shas)} commit(s) that no branch keeps ({shas[0][:12]} ...); "
                "moving HEAD would lose them", hint=f"keep them on a branch: `git -C {self.path} branch my-work`")

    # --- changing the checkout -------------------------------------------------------------------

    def reset(self) -> bool:
        """Back to the pristine commit (detached). Returns False when already there."""
        self.ensure_clean()
        repo = self.repo
        if repo.head.is_detached and repo.head.commit.hexsha == self.pristine_commit:
            return False
        repo.git.checkout("--quiet", "--detach", self.pristine_commit)
        return True

    def apply(self, pin: Pin, generated: dict[str, str], branch: str, message: str,
              record: dict[str, str] | None = None) -> bool:
        """From the pristine commit, on `branch`: the pin's series (one commit per patch, strict),
        then the `generated` files (relative path -> content) in one commit with `message` and the
        `record` (trailer -> value) among its trailers.

        All or nothing: on any failure HEAD, branches, index and worktree are as before. Returns
        False when the checkout is already on `branch` with exactly this content (nothing to rebuild).
        """
        repo = self.repo
        if pin.name != self.pin_name:
            raise CheckoutError(f"{self.path} is a checkout of pin {self.pin_name}, not {pin.name}",
                                hint=f"move it with `qpatch rebase --to {pin.name} --apply`")
        try:
            repo.git.check_ref_format("--branch", branch)
        except git.GitCommandError:
            raise UsageError(f"'{branch}' is not a valid branch name") from None
        for p in generated:
            _check_generated_path(p)
        self.ensure_clean()
        ref = f"refs/heads/{branch}"
        old_tip = _rev(repo, ref)
        if old_tip:
            self._ensure_only_qpatch_commits(branch)
        target = self._build(pin, generated, message, record or {})

        def same(tip: str | None) -> bool:  # the same tree and the same record (commit message)
            return bool(tip) and (repo.commit(tip).tree.hexsha, repo.commit(tip).message) == (
                repo.commit(target).tree.hexsha, repo.commit(target).message)

        on_branch = not repo.head.is_detached and repo.head.ref.path == ref
        if on_branch and same(old_tip):
            return False
        if old_tip and same(old_tip):
            target = old_tip  # same content: keep the branch as it is, only switch to it
        self._switch(ref, target, old_tip)
        return True

    def _build(self, pin: Pin, generated: dict[str, str], message: str, record: dict[str, str]) -> str:
        """The commits of an apply, made on a private index: nothing visible changes here."""
        repo = self.repo
        parent = self.pristine_commit
        with TempIndex(repo, parent) as idx:
            for path in series(pin):
                info = read_patch(path)
                res = check_patch(idx, info, apply=True)
                if res.state != APPLIES:
                    raise CheckoutError(
                        f"patch {info.name} of pin {pin.name}: {res.state}; nothing was changed\n"
                        + format_results([res], indent="  ") + (f"\n  git: {res.detail}" if res.detail else ""),
                        hint=f"`qpatch patches check --pin {pin.name}` reports the whole series")
                parent = _commit(repo, idx.write_tree(), parent, f"{info.message}\n{PATCH_TRAILER}: {info.name}\n")
            if generated:
                for rel, content in sorted(generated.items()):
                    idx.write_file(rel, content)
                files = ", ".join(sorted(generated))
                trailers = "".join(f"{k}: {v}\n" for k, v in sorted(record.items()))
                parent = _commit(repo, idx.write_tree(), parent,
                                 f"{message.rstrip()}\n\n{GENERATED_TRAILER}: {files}\n{trailers}")
        return parent

    def _switch(self, ref: str, target: str, old_tip: str | None) -> None:
        """Point `ref` at `target` and check it out; on failure put HEAD, ref and worktree back."""
        repo = self.repo
        head_sha = repo.head.commit.hexsha
        head_ref = None if repo.head.is_detached else repo.head.ref.path
        try:
            repo.git.checkout("--quiet", "--detach")  # off the branch first: its ref may move under it
            repo.git.update_ref(ref, target, old_tip or "0" * 40)
            self._checkout_branch(ref.removeprefix("refs/heads/"))
        except (git.GitCommandError, OSError) as e:
            # The tree was clean, so forcing it back to the old commit loses nothing.
            repo.git.checkout("--quiet", "--force", "--detach", head_sha)
            if old_tip:
                repo.git.update_ref(ref, old_tip)
            else:
                repo.git.update_ref("-d", ref)
            if head_ref:
                repo.git.symbolic_ref("HEAD", head_ref)
            raise CheckoutError(f"could not check out {ref}; the checkout is as it was: {e}") from None

    def _checkout_branch(self, branch: str) -> None:
        self.repo.git.checkout("--quiet", branch)

    def _ensure_only_qpatch_commits(self, branch: str) -> None:
        """Moving a qpatch branch is safe only when every commit on it is qpatch's (regenerable)."""
        mine = sources.IDENTITY["GIT_AUTHOR_EMAIL"]
        shas = self.repo.git.rev_list(branch, "--not", "--glob=refs/qpatch/*").split()
        foreign = [c for c in map(self.repo.commit, shas) if c.author.email != mine]
        if foreign:
            c = foreign[0]
            raise CheckoutError(
                f"branch {branch} has {len(foreign)} commit(s) not made by qpatch ({c.hexsha[:12]} {_text(c.summary)})",
                hint=f"keep them under another name: "
                     f"`git -C {self.path} branch -m {branch} my-{branch.replace('/', '-')}`")

    def diff(self, stat: bool = False) -> str:
        """Unified diff (or diffstat) of HEAD against the pristine commit: the whole review."""
        args = ["--no-color", "--no-ext-diff", "--src-prefix=a/", "--dst-prefix=b/"]
        return self.repo.git.diff(*args, *(["--stat"] if stat else []), self.pristine_commit, "HEAD")

    # --- patches and pins -------------------------------------------------------------------------

    def check_patches(self, pin: Pin, source: str = "auto") -> list[PatchResult]:
        """Per patch of `pin`'s series, on that pin's pristine tree (fetched into this repository when
        it is another pin: objects only, the checkout itself does not change)."""
        base, _ = self._pristine_of(pin, source)
        return check_series(self.repo, base, series(pin))

    def _pristine_of(self, pin: Pin, source: str) -> tuple[str, str]:
        repo = self.repo
        if pin.name == self.pin_name:
            return self.pristine_commit, _config(repo, "source")
        ref = PIN_REFS + pin.name
        key = f"qpatch-pin.{pin.name}"
        have = _rev(repo, ref)
        if have and _config(repo, "upstream", key) == (pin.commit or pin.tag):
            return have, _config(repo, "source", key)
        got = sources.obtain(repo, pin, source, self.progress)
        repo.git.update_ref(ref, got.commit)
        repo.git.config(f"{key}.upstream", pin.commit or pin.tag)
        repo.git.config(f"{key}.source", got.source)
        return got.commit, got.source

    def rebase_report(self, to: Pin, source: str = "auto", current: Pin | None = None) -> RebaseReport:
        """What each patch does on pin `to`: the current pin's series and `to`'s own. Changes nothing
        a user sees (the new tree is fetched into the repository's objects only)."""
        current = current or load_pin(self.pin_name)
        target, used = self._pristine_of(to, source)
        return RebaseReport(
            from_pin=current.name, to_pin=to.name, target=target, source=used,
            current=tuple(check_series(self.repo, target, series(current))),
            own=tuple(check_series(self.repo, target, series(to))))

    def rebase(self, to: Pin, source: str = "auto", current: Pin | None = None) -> RebaseReport:
        """Move the checkout to pin `to` (pristine tree, detached); refuses unless its series applies.
        Branches of the old pin stay as they are; `qpatch apply` rebuilds them on the new pin."""
        self.ensure_clean()
        report = self.rebase_report(to, source, current)
        if not report.ok:
            raise CheckoutError("not moved: " + report.describe().splitlines()[-1].removeprefix("verdict: "),
                                hint=f"see `qpatch rebase --to {to.name}`")
        repo, old = self.repo, self.pristine_commit
        repo.git.update_ref(PIN_REFS + self.pin_name, old)  # the old pin stays at hand
        repo.git.config(f"qpatch-pin.{self.pin_name}.upstream", _config(repo, "upstream"))
        repo.git.config(f"qpatch-pin.{self.pin_name}.source", _config(repo, "source"))
        repo.git.checkout("--quiet", "--detach", report.target)
        _record(repo, to, report.source, report.target)
        return report


# --- helpers ---------------------------------------------------------------------------------------

def _config(repo: git.Repo, key: str, section: str = "qpatch") -> str:
    try:
        return repo.git.config("--get", f"{section}.{key}")
    except git.GitCommandError:
        return ""


def _record(repo: git.Repo, pin: Pin, source: str, pristine: str) -> None:
    for key, value in (("pin", pin.name), ("family", pin.family), ("upstream", pin.commit or pin.tag),
                       ("source", source), ("pristine", pristine)):
        repo.git.config(f"qpatch.{key}", value)
    repo.git.update_ref(PRISTINE_REF, pristine)


def _text(message: str | bytes) -> str:
    """A commit's message or summary as text (GitPython gives bytes for an undecodable encoding)."""
    return message.decode("utf-8", "replace") if isinstance(message, bytes) else message


def _rev(repo: git.Repo, ref: str) -> str | None:
    try:
        return repo.git.rev_parse("--verify", "--quiet", ref + "^{commit}")
    except git.GitCommandError:
        return None


def _is_ancestor(repo: git.Repo, a: str, b: str) -> bool:
    try:
        repo.git.merge_base("--is-ancestor", a, b)
        return True
    except git.GitCommandError:
        return False


def _commit(repo: git.Repo, tree: str, parent: str, message: str) -> str:
    return repo.git.execute(["git", "commit-tree", "--no-gpg-sign", tree, "-p", parent, "-m", message],
                            env=sources.IDENTITY)


def _trailers(message: str) -> dict[str, str]:
    return dict(re.findall(r"^([A-Za-z0-9-]+): (.+)$", message.rstrip().rsplit("\n\n", 1)[-1], re.M))


def _check_generated_path(path: str) -> None:
    p = PurePosixPath(path)
    if p.is_absolute() or not p.parts or ".." in p.parts or p.parts[0] == ".git":
        raise UsageError(f"generated file path must be relative inside the checkout, got {path!r}")
