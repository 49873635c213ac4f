"""Pins: a llama.cpp commit, where to get it, and hashes of the files its patches touch.

A pin lives in `patches/<name>/pin.toml` beside its quilt `series` file. `Pin` is a frozen
dataclass, so tests (and users) can point one at another remote with `dataclasses.replace`.
`QPATCH_PATCHES` overrides the root of `patches/` (as `QPATCH_POLICIES` does for policies).
"""

from __future__ import annotations

import functools
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from qpatch import families
from qpatch.errors import UsageError

SOURCE_KINDS = ("git", "sdist")


@dataclass(frozen=True)
class Source:
    """One place a pin's tree can come from: a git remote, or a package sdist that vendors it.

    (`qpatch fetch --source mirror:PATH` makes a third kind, "mirror", that no pin.toml names.)
    """

    kind: str  # "git" | "sdist" | "mirror"
    url: str = ""  # git
    package: str = ""  # sdist: PyPI name, e.g. llama-cpp-python
    version: str = ""  # sdist
    subdir: str = ""  # sdist: the tree inside the archive, below its top directory
    archive_sha256: str = ""  # sdist: optional hash of the archive itself
    import_commit: str = ""  # sdist: the commit an import makes (it is reproducible)

    def describe(self) -> str:
        if self.kind == "git":
            return f"git {self.url}"
        return f"sdist {self.package}=={self.version} ({self.subdir})"


@dataclass(frozen=True)
class Pin:
    name: str
    commit: str = ""  # full upstream commit id; "" when only a tag is known
    tag: str = ""
    family: str = ""
    sources: tuple[Source, ...] = ()
    # (path, sha256) of upstream files the patches touch; a tuple so the pin stays hashable
    file_hashes: tuple[tuple[str, str], ...] = ()
    description: str = ""
    patch_dir: Path | None = field(default=None, compare=False)  # None: patches_root()/name

    @property
    def rev(self) -> str:
        """What to ask a git remote for: the tag when there is one (any server serves a tag; the
        commit, when known, is then checked), else the commit id."""
        return f"refs/tags/{self.tag}" if self.tag else self.commit

    def hashes(self) -> dict[str, str]:
        return dict(self.file_hashes)


def patches_root() -> Path:
    from qpatch.shipped import patches_root as root

    return root()


def patches_dir(pin: Pin) -> Path:
    return pin.patch_dir if pin.patch_dir is not None else patches_root() / pin.name


def available_pins() -> list[str]:
    root = patches_root()
    return sorted(p.parent.name for p in root.glob("*/pin.toml")) if root.is_dir() else []


def load_pin(name: str) -> Pin:
    path = patches_root() / name / "pin.toml"
    if not re.fullmatch(r"[A-Za-z0-9._-]+", name) or not path.is_file():
        raise UsageError(f"unknown pin '{name}'", hint=f"known pins: {', '.join(available_pins()) or '(none)'}")
    return _parse_pin(str(path), path.stat().st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _parse_pin(path: str, mtime_ns: int) -> Pin:
    """One parse of a pin.toml per content (a job asks for its pin and family many times; `mtime_ns` keys
    the cache, so an edited file is read again)."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"{path}: {e}") from None
    return pin_from_dict(data, where=path)


def pin_from_dict(data: dict, *, where: str = "pin") -> Pin:
    """Build and validate a Pin from pin.toml's table (exposed so tests can write their own)."""

    def bad(msg: str):
        raise UsageError(f"{where}: {msg}")

    known = {"name", "commit", "tag", "family", "description", "default", "source", "hashes"}
    if extra := sorted(set(data) - known):
        bad(f"unknown key(s) {', '.join(extra)}")
    name = data.get("name") or bad("missing 'name'")
    commit, tag = data.get("commit", ""), data.get("tag", "")
    if not commit and not tag:
        bad("needs a 'commit' or a 'tag'")
    if commit and not re.fullmatch(r"[0-9a-f]{40}", commit):
        bad(f"commit must be a full 40-hex id, got {commit!r}")
    family = data.get("family", "")
    if family not in families.names():
        bad(f"family must be one of {', '.join(families.names())}, got {family!r}")
    sources = []
    for s in data.get("source", []):
        if s.get("kind") not in SOURCE_KINDS:
            bad(f"source kind must be one of {', '.join(SOURCE_KINDS)}, got {s.get('kind')!r}")
        try:
            sources.append(Source(**s))
        except TypeError as e:
            bad(f"source: {e}")
        if s["kind"] == "sdist" and not (s.get("package") and s.get("version")):
            bad("an sdist source needs 'package' and 'version'")
    if not sources:
        bad("needs at least one [[source]]")
    hashes = tuple(sorted(data.get("hashes", {}).items()))
    for path, digest in hashes:
        if not re.fullmatch(r"[0-9a-f]{64}", digest):
            bad(f"hashes: {path}: not a sha256 hex digest")
    if any(s.kind == "sdist" for s in sources) and not hashes:
        bad("an sdist source can only be verified by content: record [hashes]")
    return Pin(name=name, commit=commit, tag=tag, family=family, sources=tuple(sources), file_hashes=hashes,
               description=data.get("description", ""))


def series(pin: Pin) -> list[Path]:
    """The pin's patches in order, from its quilt `series` file (one name a line, `#` comments).

    Quilt's per-line options are accepted only as `-p1`, the only strip level git uses.
    """
    pdir = patches_dir(pin)
    path = pdir / "series"
    if not path.is_file():
        return []
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if words[1:] not in ([], ["-p1"]):
            raise UsageError(f"{path}:{n}: only '-p1' is supported after a patch name, got {' '.join(words[1:])!r}")
        patch = (pdir / words[0]).resolve()
        if not patch.is_file():
            raise UsageError(f"{path}:{n}: no such patch {words[0]}")
        out.append(patch)
    return out


def family_of(pin: str) -> "families.Family":
    """The family whose rules the pin's llama-quantize follows."""
    return families.get(load_pin(pin).family)


def _default_pin() -> str:
    """The pin whose pin.toml says `default = true`: what `qpatch` uses when no pin is named."""
    root = patches_root()
    marked = sorted(p.parent.name for p in root.glob("*/pin.toml")
                    if tomllib.loads(p.read_text()).get("default") is True) if root.is_dir() else []
    if len(marked) != 1:
        raise UsageError(f"{root}: exactly one pin.toml must say `default = true`, found {marked or 'none'}")
    return marked[0]


DEFAULT_PIN = _default_pin()
