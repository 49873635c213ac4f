"""Load policies by name from `policies/` (name `deepseek-v3` -> `policies/deepseek_v3.py`).

`policies/` is importable as the package `qpatch_policies`, so policies compose with plain
imports (`from qpatch_policies.n_expert_fix import RULES`). Any error while loading becomes a
`PolicyError` naming the policy file and line.
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

from ..errors import PolicyError
from .model import Policy

PACKAGE = "qpatch_policies"


def repo_root() -> Path:
    env = os.environ.get("QPATCH_ROOT")
    return Path(env) if env else Path(__file__).resolve().parents[3]


def policies_dir() -> Path:
    env = os.environ.get("QPATCH_POLICIES")
    return Path(env) if env else repo_root() / "policies"


def _ensure_package(pdir: Path):
    pkg = sys.modules.get(PACKAGE)
    if pkg is None or list(getattr(pkg, "__path__", [])) != [str(pdir)]:
        for k in [k for k in sys.modules if k == PACKAGE or k.startswith(PACKAGE + ".")]:
            del sys.modules[k]
        pkg = types.ModuleType(PACKAGE)
        pkg.__path__ = [str(pdir)]
        sys.modules[PACKAGE] = pkg


def available() -> list[str]:
    pdir = policies_dir()
    if not pdir.is_dir():
        return []
    return sorted(p.stem.replace("_", "-") for p in pdir.glob("*.py") if not p.stem.startswith("_"))


def _where(exc: BaseException, pdir: Path) -> str:
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{_rel(exc.filename)}:{exc.lineno}"
    for fs in reversed(traceback.extract_tb(exc.__traceback__)):
        if Path(fs.filename).resolve().is_relative_to(pdir.resolve()):
            return f"{_rel(fs.filename)}:{fs.lineno}"
    return ""


def _rel(path: str) -> str:
    try:
        return os.path.relpath(path, repo_root())
    except ValueError:
        return path


# Loading re-imports the policy module through sys.modules: one thread at a time (the proofs
# run llama-quantize from a thread pool, and each case loads its policy).
_LOCK = threading.RLock()


def load(name: str) -> Policy:
    with _LOCK:
        return _load(name)


def _load(name: str) -> Policy:
    pdir = policies_dir()
    modname = name.replace("-", "_")
    path = pdir / f"{modname}.py"
    if not path.exists() or modname.startswith("_"):
        known = ", ".join(available()) or "(none)"
        raise PolicyError(f"unknown policy '{name}'", hint=f"known policies: {known}")
    _ensure_package(pdir)
    full = f"{PACKAGE}.{modname}"
    sys.modules.pop(full, None)
    try:
        mod = importlib.import_module(full)
    except PolicyError as e:  # a rule or condition refused its arguments: name the line that built it
        where = _where(e, pdir) or _rel(str(path))
        msg = str(e)
        raise PolicyError(msg if msg.startswith(where.split(":")[0]) else f"{where}: {msg}") from None
    except Exception as e:  # the policy author's bug: report where
        where = _where(e, pdir) or _rel(str(path))
        msg = e.msg if isinstance(e, SyntaxError) else str(e)
        raise PolicyError(f"{where}: {type(e).__name__}: {msg}") from None
    pol = getattr(mod, "POLICY", None)
    if not isinstance(pol, Policy):
        raise PolicyError(f"{_rel(str(path))}: defines no POLICY = Policy(...)")
    if pol.name != name:
        raise PolicyError(f"{_rel(str(path))}: POLICY.name is '{pol.name}', expected '{name}'")
    from ..catalogue import all_ftypes
    from .model import Ftypes

    known = {f.name for f in all_ftypes()}
    for r in pol.rules:
        for c in _walk(r.when):
            if isinstance(c, Ftypes):
                bad = [f for f in c.names if f not in known]
                if bad:
                    raise PolicyError(f"{r.source}: unknown ftype {bad[0]!r} in Ftypes(...)")
    digest = hashlib.sha256(repr((pol.rules, pol.fallback, pol.missing_imatrix, pol.imatrix_mismatch,
                                  pol.archs)).encode()).hexdigest()[:16]
    return _replace(pol, source=_rel(str(path)), content_hash=digest,
                    description=pol.description or (mod.__doc__ or "").strip())


def _walk(conds):
    for c in conds:
        yield c
        inner = getattr(c, "conds", None) or ((c.cond,) if hasattr(c, "cond") else ())
        yield from _walk(inner)


def _replace(pol: Policy, **kw) -> Policy:
    import dataclasses

    return dataclasses.replace(pol, **kw)
