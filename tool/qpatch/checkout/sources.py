"""Bring a pin's pristine upstream commit into a git repository, from the first source that works.

Sources: the git remote (probed first, so being offline fails in seconds rather than hanging),
a local mirror (`mirror:PATH`, any git repository holding the commit), or an sdist that vendors
llama.cpp, imported as one commit with a fixed identity and date so its id is reproducible.
Whatever the source, the pin's content hashes are checked before the commit is used.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import ssl
import tempfile
import threading
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import git

from qpatch.checkout import sdist
from qpatch.errors import SourceError, UsageError
from qpatch.families.pins import Pin, Source
from qpatch.progress import Progress

IDENTITY = {
    "GIT_AUTHOR_NAME": "qpatch", "GIT_AUTHOR_EMAIL": "qpatch@localhost",
    "GIT_COMMITTER_NAME": "qpatch", "GIT_COMMITTER_EMAIL": "qpatch@localhost",
    # Fixed date: the same tree and message always make the same commit id.
    "GIT_AUTHOR_DATE": "946684800 +0000", "GIT_COMMITTER_DATE": "946684800 +0000",
}
# Settings that would make an import depend on the user's git configuration.
NEUTRAL = ("-c", "core.autocrlf=false", "-c", "core.fileMode=true", "-c", "core.symlinks=true",
           "-c", "core.safecrlf=false")


@dataclass(frozen=True)
class Obtained:
    commit: str  # the pristine commit, now in the repository
    source: str  # which source gave it, in words
    tried: tuple[tuple[str, str], ...] = ()  # (source, why it was not used), in order


def probe_timeout() -> float:
    return float(os.environ.get("QPATCH_PROBE_TIMEOUT", "5"))


def candidates(pin: Pin, source: str) -> list[Source]:
    """The sources `source` ("auto", "git", "sdist" or "mirror:PATH") stands for, in order."""
    if source.startswith("mirror:"):
        path = Path(source[len("mirror:"):]).expanduser()
        if not path.exists():
            raise SourceError(f"mirror {path} does not exist")
        return [Source(kind="mirror", url=path.resolve().as_uri())]
    if source == "auto":
        return list(pin.sources)
    if source in ("git", "sdist"):
        found = [s for s in pin.sources if s.kind == source]
        if not found:
            raise UsageError(f"pin {pin.name} has no {source} source",
                             hint="its sources: " + ", ".join(s.kind for s in pin.sources))
        return found
    raise UsageError(f"unknown source '{source}'", hint="use auto, git, sdist or mirror:PATH")


def obtain(repo: git.Repo, pin: Pin, source: str, progress: Progress, *, fill_worktree: bool = False) -> Obtained:
    """Put the pin's pristine commit into `repo` (objects only: HEAD, index and worktree untouched).

    `fill_worktree` (a new, empty repository only): an archive is unpacked straight into the
    worktree and staged in the real index, which spares writing the whole tree out a second time.
    """
    tried: list[tuple[str, str]] = []
    cands = candidates(pin, source)
    for src in cands:
        desc = "mirror " + urllib.parse.unquote(src.url[len("file://"):]) if src.kind == "mirror" else src.describe()
        try:
            if src.kind == "sdist":
                commit = _from_sdist(repo, pin, src, progress, in_worktree=fill_worktree)
            else:
                commit = _from_git(repo, pin, src.url, progress, check_network=src.kind == "git")
            verify(repo, pin, commit, desc)
            return Obtained(commit=commit, source=desc, tried=tuple(tried))
        except SourceError as e:
            if len(cands) == 1:
                raise
            tried.append((desc, str(e)))
            progress.note(f"{desc}: {e}")
    raise SourceError(f"no source of pin {pin.name} worked:\n" + "\n".join(f"  {d}: {w}" for d, w in tried))


# --- git -----------------------------------------------------------------------------------------

def probe(url: str, timeout: float | None = None) -> None:
    """Fail fast when an http(s) remote (or the proxy in front of it) cannot be reached."""
    u = urllib.parse.urlsplit(url)
    if u.scheme not in ("http", "https"):
        return
    proxy = next((os.environ[k] for k in (f"{u.scheme}_proxy", f"{u.scheme.upper()}_PROXY", "all_proxy",
                                          "ALL_PROXY") if os.environ.get(k)), "")
    target = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}") if proxy else u
    host, port = target.hostname, target.port or (443 if target.scheme == "https" else 80)
    timeout = probe_timeout() if timeout is None else timeout
    result: list[BaseException | None] = []

    def connect():  # in a thread: name resolution has no timeout of its own
        try:
            with socket.create_connection((host, port), timeout=timeout) as sock:
                if target.scheme == "https" and not proxy:
                    # A TLS handshake too: some networks accept any TCP connection and then stall.
                    ssl.create_default_context().wrap_socket(sock, server_hostname=host).close()
            result.append(None)
        except OSError as e:
            result.append(e)

    t = threading.Thread(target=connect, daemon=True)
    t.start()
    t.join(timeout)
    via = f" (via proxy {host}:{port})" if proxy else ""
    if not result:
        raise SourceError(f"{url} unreachable{via}: no answer in {timeout:g} s (offline?)")
    if result[0] is not None:
        raise SourceError(f"{url} unreachable{via}: {result[0]} (offline?)")


_PROGRESS = re.compile(r"Receiving objects:\s+\d+% \((\d+)/(\d+)\)")


def _from_git(repo: git.Repo, pin: Pin, url: str, progress: Progress, *, check_network: bool) -> str:
    if check_network:
        probe(url)
    progress.note(f"fetching {pin.rev} from {url}")
    # Shallow: one commit's tree is all a checkout needs. Low-speed limits stop a stalled transfer.
    cmd = ["git", "-c", "http.lowSpeedLimit=1000", "-c", "http.lowSpeedTime=20", "fetch", "--progress",
           "--depth=1", "--no-tags", url, pin.rev]
    env = {"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "true"}
    proc = repo.git.execute(cmd, as_process=True, env=env, with_stdout=False)
    err = _stream_progress(proc, progress)
    assert proc.proc is not None  # as_process: GitPython's handle on the running git
    if proc.proc.wait() != 0:
        last = [ln for ln in err.splitlines() if ln.strip()][-3:]
        raise SourceError(f"git fetch {pin.rev} from {url} failed: " + " / ".join(last))
    commit = repo.git.rev_parse("FETCH_HEAD^{commit}")
    if pin.commit and commit != pin.commit:
        raise SourceError(f"{url}: {pin.rev} is commit {commit}, the pin says {pin.commit}")
    return commit


def _stream_progress(proc, progress: Progress) -> str:
    """Read git's stderr, drive a progress bar from its 'Receiving objects' lines, return the text."""
    text, buf = [], b""
    with progress.bar("receiving objects (%)", 100) as update:
        while chunk := proc.proc.stderr.read1(4096):
            buf += chunk
            *lines, buf = re.split(rb"[\r\n]", buf)
            for ln in lines:
                s = ln.decode(errors="replace")
                text.append(s)
                if m := _PROGRESS.search(s):
                    update(int(m[1]) * 100 // max(int(m[2]), 1))
    text.append(buf.decode(errors="replace"))
    return "\n".join(text)


# --- sdist ---------------------------------------------------------------------------------------

def _from_sdist(repo: git.Repo, pin: Pin, src: Source, progress: Progress, *, in_worktree: bool) -> str:
    path = sdist.archive(src, progress)
    message = (f"llama.cpp {pin.commit or pin.tag}, pristine, from {src.package} {src.version} sdist\n\n"
               f"Imported by qpatch from {path.name}:{src.subdir}. Same tree, same commit id,\n"
               f"on every machine (fixed identity and date).\n")
    with tempfile.TemporaryDirectory(dir=repo.git_dir, prefix="qpatch-unpack-") as tmp:
        tree = Path(repo.working_tree_dir or "") if in_worktree else Path(tmp) / "tree"
        index = Path(repo.git_dir) / "index" if in_worktree else Path(tmp) / "index"
        try:
            n = sdist.unpack(path, src.subdir, tree, progress)
            progress.note(f"importing {n} files into git")
            commit = import_tree(repo, tree, message, index_file=index)
            if src.import_commit and commit != src.import_commit:
                verify(repo, pin, commit, src.describe())  # a content mismatch is the likelier story
                raise SourceError(f"the import made commit {commit}, the pin records {src.import_commit}",
                                  hint="the archive or the importer changed, though the pin's file hashes match")
        except BaseException:
            if in_worktree:  # leave the new repository empty for the next source
                for p in tree.iterdir():
                    if p.name != ".git":
                        shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
                index.unlink(missing_ok=True)
            raise
    return commit


def import_tree(repo: git.Repo, tree_dir: Path, message: str, *, index_file: Path,
                parents: tuple[str, ...] = ()) -> str:
    """Commit every file under `tree_dir` (ignore rules too: the upstream tree is what it is)."""
    env = {"GIT_DIR": repo.git_dir, "GIT_WORK_TREE": str(tree_dir), "GIT_INDEX_FILE": str(index_file), **IDENTITY}
    g = git.Git(str(tree_dir))
    g.execute(["git", *NEUTRAL, "add", "--all", "--force", "."], env=env)
    tree = g.execute(["git", "write-tree"], env=env)
    args = ["git", "commit-tree", "--no-gpg-sign", tree, "-m", message]
    for p in parents:
        args += ["-p", p]
    return g.execute(args, env=env)


# --- verification --------------------------------------------------------------------------------

def file_sha256(repo: git.Repo, commit: str, path: str) -> str | None:
    try:
        blob = repo.commit(commit).tree / path
    except KeyError:
        return None
    return hashlib.sha256(blob.data_stream.read()).hexdigest()


def verify(repo: git.Repo, pin: Pin, commit: str, where: str) -> None:
    """The pin's content hashes on `commit`, whatever source (`where`, in words) gave it."""
    for path, want in pin.file_hashes:
        got = file_sha256(repo, commit, path)
        if got != want:
            raise SourceError(f"{where}: {path} "
                              + ("is missing" if got is None else f"has sha256 {got}, the pin records {want}")
                              + f": this is not pin {pin.name}")
