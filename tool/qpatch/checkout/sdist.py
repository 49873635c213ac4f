"""Source archives that vendor llama.cpp (llama-cpp-python's sdist): download once, unpack a subtree.

Archives are cached in `<cache>/sdist/` under PyPI's file name; pip does the download (it knows
the index, proxies and certificates configured on this machine).
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from qpatch.cache import sdist_dir
from qpatch.errors import SourceError
from qpatch.families.pins import Source
from qpatch.progress import Progress


def archive_name(src: Source) -> str:
    # PEP 625: the sdist file name uses the normalized project name with underscores.
    return f"{re.sub(r'[-_.]+', '_', src.package).lower()}-{src.version}.tar.gz"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def archive(src: Source, progress: Progress) -> Path:
    """The cached archive of `src`, downloaded with pip first when missing; its hash is checked."""
    path = sdist_dir() / archive_name(src)
    if path.is_file():
        progress.note(f"using cached {path}")
    else:
        _download(src, path, progress)
    if src.archive_sha256 and (got := sha256_file(path)) != src.archive_sha256:
        raise SourceError(f"{path}: sha256 {got} is not the pin's {src.archive_sha256}",
                          hint="the cached archive is corrupt or another file: delete it and fetch again")
    return path


def _download(src: Source, path: Path, progress: Progress) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    spec = f"{src.package}=={src.version}"
    progress.note(f"downloading {spec} (sdist) with pip")
    # Download into a private folder and rename, so an interrupted download leaves no partial file.
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".download-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", spec, "-d", tmp]
        # pip draws its own progress bar; it goes to our stderr when a reporter shows progress.
        loud = progress.show_subprocess_output
        out = 2 if loud else subprocess.PIPE
        r = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out if loud else subprocess.STDOUT,
                           text=True)
        got = Path(tmp) / path.name
        if r.returncode != 0 or not got.is_file():
            tail = "\n".join((r.stdout or "").strip().splitlines()[-5:])
            raise SourceError(f"pip could not download {spec}" + (f":\n{tail}" if tail else ""),
                              hint="check the network or the pip index; or put the archive at " + str(path))
        got.replace(path)


def unpack(archive_path: Path, subdir: str, dest: Path, progress: Progress) -> int:
    """Extract `<top>/<subdir>/` of a .tar.gz into `dest`; returns the number of files.

    The vendored tree's `.git` is a submodule pointer file, meaningless here: it is dropped.
    """
    dest.mkdir(parents=True, exist_ok=True)
    size = archive_path.stat().st_size
    n = 0
    with open(archive_path, "rb") as raw, progress.bar(f"unpacking {archive_path.name}", size) as update:
        try:
            with tarfile.open(fileobj=raw, mode="r|gz") as tf:
                prefix = None
                for m in tf:
                    update(raw.tell())
                    if prefix is None:
                        prefix = m.name.split("/", 1)[0] + "/" + (subdir.strip("/") + "/" if subdir else "")
                    if not m.name.startswith(prefix) or m.name == prefix.rstrip("/"):
                        continue
                    m.name = m.name[len(prefix):]
                    if m.name == ".git" or m.name.startswith(".git/"):
                        continue
                    if m.islnk():
                        m.linkname = m.linkname[len(prefix):] if m.linkname.startswith(prefix) else m.linkname
                    tf.extract(m, dest, filter="data")
                    n += m.isfile()
                update(size)
        except (tarfile.TarError, EOFError, OSError) as e:
            raise SourceError(f"{archive_path}: cannot unpack: {e}",
                              hint="the archive is corrupt: delete it and fetch again") from None
    if n == 0:
        raise SourceError(f"{archive_path}: holds no files under {subdir or '(top)'}")
    return n


