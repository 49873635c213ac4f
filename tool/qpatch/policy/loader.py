"""Load policies by name (`deepseek-v3` -> `deepseek_v3.py`) from the policy search path.

The search path, first match wins: the directory given with `qpatch --policies DIR` (or
$QPATCH_POLICIES), then `./policies/` in the current directory, then the policies shipped with
qpatch. Every directory on it is one importable package `qpatch_policies`, so policies compose
with plain imports (`from qpatch_policies.n_expert_fix import RULES`) across them. A policy's
`source` is `<directory name>/<file>` and its hash reads only its rules: neither depends on where
the directory lives. Any error while loading becomes a `PolicyError` naming the file and line.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
import threading
import traceback
import types
from pathlib import Path

from qpatch.errors import PolicyError
from qpatch.policy.model import Policy

PACKAGE = "qpatch_policies"


_explicit: Path | None = None  # `qpatch --policies DIR`


def use_policies_dir(path: str | os.PathLike | None):
    """Put DIR first on the search path (the CLI's --policies); None takes it off."""
    global _explicit
    if path is not None and not Path(path).is_dir():
        raise PolicyError(f"--policies {path}: no such directory")
    _explicit = Path(path).resolve() if path is not None else None


def search_flag() -> str:
    """`--policies DIR ` when the CLI was given one (for hints that name a command to run next), else ''."""
    import shlex

    return f"--policies {shlex.quote(str(_explicit))} " if _explicit is not None else ""


def shipped_dir() -> Path:
    from qpatch.shipped import policies_dir

    return policies_dir()


def policies_dirs(extra: tuple = ()) -> list[Path]:
    """The search path: --policies / $QPATCH_POLICIES, ./policies, the shipped policies, then `extra`
    (the directory a checkout recorded when its policy was applied); each directory once."""
    env = os.environ.get("QPATCH_POLICIES")
    if env and not Path(env).is_dir():
        raise PolicyError(f"QPATCH_POLICIES={env}: no such directory")
    cands = [_explicit, Path(env) if env else None, Path.cwd() / "policies", shipped_dir(), *map(Path, extra)]
    out: list[Path] = []
    for c in cands:
        if c is not None and c.is_dir() and c.resolve() not in out:
            out.append(c.resolve())
    return out


def policies_dir() -> Path:
    """The first directory of the search path (where `qpatch import` writes by default)."""
    dirs = policies_dirs()
    return dirs[0] if dirs else shipped_dir()


def find(name: str, extra: tuple = ()) -> Path | None:
    modname = name.replace("-", "_")
    if modname.startswith("_"):
        return None
    for d in policies_dirs(extra):
        if (d / f"{modname}.py").is_file():
            return d / f"{modname}.py"
    return None


def _ensure_package(dirs: list[Path]):
    pkg = sys.modules.get(PACKAGE)
    want = [str(d) for d in dirs]
    if pkg is None or list(getattr(pkg, "__path__", [])) != want:
        for k in [k for k in sys.modules if k == PACKAGE or k.startswith(PACKAGE + ".")]:
            del sys.modules[k]
        pkg = types.ModuleType(PACKAGE)
        pkg.__path__ = want
        sys.modules[PACKAGE] = pkg


def available(extra: tuple = ()) -> list[str]:
    """Every policy name on the search path (a name in an earlier directory hides a later one)."""
    names = set()
    for d in policies_dirs(extra):
        names |= {p.stem.replace("_", "-") for p in d.glob("*.py") if not p.stem.startswith("_")}
    return sorted(names)


def located(name: str, extra: tuple = ()) -> str:
    """Where `name` is found, for `qpatch list`: the directory, or '' when it is the shipped one."""
    path = find(name, extra)
    return "" if path is None or path.parent == shipped_dir().resolve() else str(path.parent)


def _where(exc: BaseException, dirs: list[Path]) -> str:
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{_rel(exc.filename)}:{exc.lineno}"
    for fs in reversed(traceback.extract_tb(exc.__traceback__)):
        if fs.filename.startswith("<"):  # code made from a string (a dataclass's __init__), not a file
            continue
        if any(Path(fs.filename).resolve().is_relative_to(d) for d in dirs):
            return f"{_rel(fs.filename)}:{fs.lineno}"
    return ""


def _rel(path: str) -> str:
    """`<directory name>/<file>`: what a policy's source and messages call its file, wherever it lives."""
    p = Path(path)
    return f"{p.parent.name}/{p.name}"


# Loading re-imports the policy module through sys.modules: one thread at a time (the proofs
# run llama-quantize from a thread pool, and each case loads its policy).
_LOCK = threading.RLock()


def load(name: str, extra: tuple = ()) -> Policy:
    """The policy `name` from the search path (`extra`: directories to try last)."""
    with _LOCK:
        return _load(name, tuple(extra))


def stock() -> Policy:
    """The shipped `stock` policy (no rule): what export plans stock llama-quantize with. Taken from qpatch's own
    directory even where a directory searched first holds a stock.py of its own."""
    with _LOCK:
        return _load_file(shipped_dir() / "stock.py", "stock", ())


def _load(name: str, extra: tuple) -> Policy:
    path = find(name, extra)
    if path is None:
        for d in policies_dirs(extra):
            if "-" in name and (d / f"{name}.py").is_file():
                raise PolicyError(f"{_rel(str(d / f'{name}.py'))}: a policy's file name joins words with '_' "
                                  f"(it is imported as a Python module): rename it {name.replace('-', '_')}.py")
        names = ", ".join(available(extra)) or "(none)"
        where = ", ".join(str(d) for d in policies_dirs(extra)) or "(none)"
        raise PolicyError(f"unknown policy '{name}'", hint=f"known policies: {names} (looked in {where}; "
                                                           "qpatch --policies DIR adds a directory)")
    return _load_file(path, name, extra)


def _load_file(path: Path, name: str, extra: tuple) -> Policy:
    modname = path.stem
    # the directory holding it goes first, so that its own imports of qpatch_policies.* find its neighbours
    dirs = [path.parent] + [d for d in policies_dirs(extra) if d != path.parent]
    _ensure_package(dirs)
    full = f"{PACKAGE}.{modname}"
    sys.modules.pop(full, None)
    try:
        mod = importlib.import_module(full)
    except PolicyError as e:  # a rule or condition refused its arguments: name the line that built it
        where = _where(e, dirs) or _rel(str(path))
        msg = str(e)
        raise PolicyError(msg if msg.startswith(where.split(":")[0]) else f"{where}: {msg}") from None
    except Exception as e:  # the policy author's bug: report where
        where = _where(e, dirs) or _rel(str(path))
        msg = e.msg if isinstance(e, SyntaxError) else str(e)
        raise PolicyError(f"{where}: {type(e).__name__}: {msg}") from None
    pol = getattr(mod, "POLICY", None)
    if not isinstance(pol, Policy):
        raise PolicyError(f"{_rel(str(path))}: defines no POLICY = Policy(...)")
    if pol.name != name:
        raise PolicyError(f"{_rel(str(path))}: POLICY.name is '{pol.name}', expected '{name}'")
    from qpatch.gguf.catalogue import all_ftypes
    from qpatch.policy.model import Ftypes

    known = {f.name for f in all_ftypes()}
    for r in pol.rules:
        for c in _walk(r.when):
            if isinstance(c, Ftypes):
                bad = [f for f in c.names if f not in known]
                if bad:
                    raise PolicyError(f"{r.source}: unknown ftype {bad[0]!r} in Ftypes(...)")
    digest = hashlib.sha256(repr((pol.rules, pol.fallback, pol.missing_imatrix, pol.imatrix_mismatch,
                                  pol.archs)).encode()).hexdigest()[:16]
    return _replace(pol, source=_rel(str(path)), directory=str(path.parent), content_hash=digest,
                    description=pol.description or (mod.__doc__ or "").strip())


def _walk(conds):
    for c in conds:
        yield c
        inner = getattr(c, "conds", None) or ((c.cond,) if hasattr(c, "cond") else ())
        yield from _walk(inner)


def _replace(pol: Policy, **kw) -> Policy:
    import dataclasses

    return dataclasses.replace(pol, **kw)
