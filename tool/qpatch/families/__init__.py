"""Pin families: everything that is true of one family of llama.cpp commits and not of another.

Each subfolder holding a `catalogue.json` is one family (`names`: gguf.family_names, the one
discovery, which the catalogue loader uses too). It holds its catalogue of types and ftypes (extracted from the pin's
source), the options of its llama-quantize that change types (`options.py`), its Python model of
stock type choice and of its binary's walk over the tensors (`stock.py`, `predict.py`, which defines
`FAMILY`, a `Family` of base.py), and the template that renders a policy for its hook
(`policy.h.j2`). What mainline families share is `mainline.py`. A pin (`patches/<pin>/pin.toml`)
names its family. Nothing outside this package tests a family's name: adding a family is adding a
folder here and a pin.

A job command reads this module as it starts (the options it offers are every family's declarations):
it imports the families' predict modules only when one is asked for.
"""

from __future__ import annotations

import importlib
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from qpatch.gguf import family_names

if TYPE_CHECKING:
    from qpatch.families.base import Family
    from qpatch.predict.options import TypeOption

HERE = Path(__file__).parent


def names() -> tuple[str, ...]:
    """Every family: the folders here that hold a catalogue.json (the one discovery, gguf.family_names)."""
    return family_names()


@cache
def get(name: str) -> "Family":
    from qpatch.errors import UsageError

    if name not in names():
        raise UsageError(f"unknown pin family '{name}'", hint=f"families: {', '.join(names())}")
    try:
        module = importlib.import_module(f"{__name__}.{name}.predict")
    except ModuleNotFoundError as e:
        if e.name != f"{__name__}.{name}.predict":
            raise
        module = None
    fam = getattr(module, "FAMILY", None)
    problems = check(fam, HERE / name)
    if problems:  # a family folder that does not hold what every stage relies on: say so when it registers
        raise RuntimeError(f"pin family folder {HERE / name} is incomplete: " + "; ".join(problems))
    return fam  # type: ignore[return-value]  # check() found it a Family


@cache
def declared_options(name: str) -> tuple["TypeOption", ...]:
    """A family's option declarations (its options.py), read without its predict module."""
    return tuple(getattr(importlib.import_module(f"{__name__}.{name}.options"), "OPTIONS", ()))


def all_options() -> tuple[tuple["TypeOption", tuple[str, ...]], ...]:
    """Every family's options, once each by name (first family first), with the families that have it: what
    the command line offers; a job then refuses the ones its pin's binary lacks."""
    seen: dict[str, tuple["TypeOption", list[str]]] = {}
    for fam in names():
        for o in declared_options(fam):
            seen.setdefault(o.name, (o, []))[1].append(fam)
    return tuple((o, tuple(fams)) for o, fams in seen.values())


# What the stages read of a family, checked once when it registers rather than where a stage first trips.
EXPORT_FORMATS = ("tensor-type", "tensor-type-file", "custom-q")


def check(fam: object, folder: Path) -> list[str]:
    """What is wrong with a family folder's `FAMILY` (nothing: an empty list)."""
    from qpatch.families.base import Family
    from qpatch.gguf.imatrix import FORMATS
    from qpatch.predict.options import Overrides, OverridesFile, TypeOption

    if not isinstance(fam, Family):
        return ["its predict.py defines no FAMILY = <a Family subclass>()"]
    out = []
    if fam.name != folder.name:
        out.append(f"FAMILY.name is {fam.name!r}, not the folder's name {folder.name!r}")
    abstract = [m for m in sorted(Family.__abstractmethods__) if getattr(type(fam), m) is getattr(Family, m)]
    if abstract:  # what the predict engine and export call
        out.append(f"it does not define {', '.join(m + '()' for m in abstract)}")
    for f in ("catalogue.json", "policy.h.j2", "options.py"):
        if not (folder / f).is_file():
            out.append(f"it has no {f}")
    if (folder / "options.py").is_file() and fam.options != declared_options(folder.name):
        out.append("FAMILY.options is not its options.py's OPTIONS")
    if not all(isinstance(o, TypeOption) for o in fam.options):
        out.append("each of its options must be a TypeOption (predict/options.py)")
    else:
        names_ = [o.name for o in fam.options]
        if len(set(names_)) != len(names_):
            out.append(f"option names {names_} repeat")
        if [type(o) for o in fam.options].count(Overrides) != 1:
            out.append("exactly one option must be the Overrides its binary reads regex=type lists with")
        if any(isinstance(o, OverridesFile) for o in fam.options) and Overrides not in map(type, fam.options):
            out.append("an OverridesFile needs an Overrides to read it")
        for o in fam.options:
            if not o.flag.startswith("--"):
                out.append(f"option {o.name}: {o.flag!r} is no llama-quantize flag")
            for other_fam in names():  # the command line has one option per name: all families must agree
                other = next((x for x in declared_options(other_fam) if x.name == o.name), None)
                if other is not None and (type(other), other.option) != (type(o), o.option):
                    out.append(f"option {o.name} is {type(o).__name__} {o.option} here, "
                               f"{type(other).__name__} {other.option} in family {other_fam}")
    if not fam.imatrix_formats or set(fam.imatrix_formats) - set(FORMATS):
        out.append(f"imatrix_formats {fam.imatrix_formats!r}: each of {FORMATS}")
    if not fam.export_formats or set(fam.export_formats) - set(EXPORT_FORMATS):
        out.append(f"export_formats {fam.export_formats!r}: each of {EXPORT_FORMATS}")
    return out


__all__ = ["all_options", "check", "declared_options", "get", "names"]
