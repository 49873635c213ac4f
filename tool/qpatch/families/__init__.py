"""Pin families: everything that is true of one family of llama.cpp commits and not of another.

Each subfolder is one family and exposes `FAMILY`, a `Family` (base.py): its catalogue of types
and ftypes (`catalogue.json`, extracted from the pin's source), its Python model of stock type
choice and of llama-quantize's options (`predict.py`), the template that renders a policy for
its hook (`policy.h.j2`, extending the shared one), and what `export` may promise for it.
A pin (`patches/<pin>/pin.toml`) names its family. Nothing outside this package tests a
family's name: adding a family is adding a folder here and a pin.
"""

from __future__ import annotations

import importlib
from functools import cache
from pathlib import Path

from qpatch.errors import UsageError
from qpatch.families.base import Family

HERE = Path(__file__).parent


def names() -> tuple[str, ...]:
    return tuple(sorted(p.parent.name for p in HERE.glob("*/predict.py")))


@cache
def get(name: str) -> Family:
    if name not in names():
        raise UsageError(f"unknown pin family '{name}'", hint=f"families: {', '.join(names())}")
    fam = getattr(importlib.import_module(f"{__name__}.{name}"), "FAMILY", None)
    problems = check(fam, HERE / name)
    if problems:  # a family folder that does not hold what every stage relies on: say so when it registers
        raise RuntimeError(f"pin family folder {HERE / name} is incomplete: " + "; ".join(problems))
    return fam


# What the stages read of a family, checked once when it registers rather than where a stage first trips.
EXPORT_FORMATS = ("tensor-type", "tensor-type-file", "custom-q")


def check(fam: object, folder: Path) -> list[str]:
    """What is wrong with a family folder's `FAMILY` (nothing: an empty list)."""
    from qpatch.gguf.imatrix import FORMATS

    if not isinstance(fam, Family):
        return ["its __init__.py exposes no FAMILY = <a Family subclass>()"]
    out = []
    if fam.name != folder.name:
        out.append(f"FAMILY.name is {fam.name!r}, not the folder's name {folder.name!r}")
    for method in ("plan", "override_result"):  # what the predict engine and export call
        if getattr(type(fam), method) is getattr(Family, method):
            out.append(f"it does not define {method}()")
    for f in ("catalogue.json", "policy.h.j2"):
        if not (folder / f).is_file():
            out.append(f"it has no {f}")
    if not fam.tensor_type_flag.startswith("--"):
        out.append(f"tensor_type_flag {fam.tensor_type_flag!r} is no llama-quantize option")
    if not fam.imatrix_formats or set(fam.imatrix_formats) - set(FORMATS):
        out.append(f"imatrix_formats {fam.imatrix_formats!r}: each of {FORMATS}")
    if not fam.export_formats or set(fam.export_formats) - set(EXPORT_FORMATS):
        out.append(f"export_formats {fam.export_formats!r}: each of {EXPORT_FORMATS}")
    if set(fam.options) - _KNOWN_OPTIONS:
        out.append(f"options {sorted(set(fam.options) - _KNOWN_OPTIONS)} are not Options fields")
    return out


_KNOWN_OPTIONS = frozenset({"tensor_type", "output_tensor_type", "token_embedding_type", "pure", "leave_output_tensor",
                            "prune_layers", "kind_types", "ignore_imatrix_rules", "custom_q"})


__all__ = ["Family", "check", "get", "names"]
