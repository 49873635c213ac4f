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
    return importlib.import_module(f"{__name__}.{name}").FAMILY


__all__ = ["Family", "get", "names"]
